// One batched CG iteration after the products AP' = Wᵀ(W P) (twin of the loop body of
// src/cpu/inverse.rs::inverse_cg). One workgroup per column j, each with its own step sizes:
//
//     q = AP' + r P,   α = rs_j / (pᵀq)  (0 if pᵀq ≤ 0),   X += α P,   R -= α q,
//     rs'_j = ‖R_{:,j}‖²,   β = rs'_j / rs_j  (0 if rs_j = 0),   P = R + β P
//
// It is launched indirectly: cg_check zeroes its grid once the solve has converged.
// Layout as in cg_init.wgsl; col = rs [n] | wn [n].

const WG: u32 = 64u;

struct Dims {
    n: u32,
    reg: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> awp: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> r: array<f32>;
@group(0) @binding(4) var<storage, read_write> p: array<f32>;
@group(0) @binding(5) var<storage, read_write> col: array<f32>;

var<workgroup> partial: array<f32, WG>;

// Sum of `value` over the workgroup, returned to every invocation.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    // Nobody may still be reading the previous sum.
    workgroupBarrier();
    partial[lid] = value;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            partial[lid] += partial[lid + stride];
        }
    }
    workgroupBarrier();
    return partial[0];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wg.x;
    let n = dims.n;
    let rs = col[j];
    var curv = 0.0;
    for (var i = lid; i < n; i += WG) {
        let idx = i * n + j;
        curv += p[idx] * (awp[idx] + dims.reg * p[idx]);
    }
    curv = workgroup_sum(lid, curv);
    // A column whose residual is exactly zero has p = 0: leave it where it is.
    let alpha = select(0.0, rs / curv, curv > 0.0);
    var rs_new = 0.0;
    for (var i = lid; i < n; i += WG) {
        let idx = i * n + j;
        x[idx] += alpha * p[idx];
        r[idx] -= alpha * (awp[idx] + dims.reg * p[idx]);
        rs_new += r[idx] * r[idx];
    }
    rs_new = workgroup_sum(lid, rs_new);
    let beta = select(0.0, rs_new / rs, rs > 0.0);
    for (var i = lid; i < n; i += WG) {
        let idx = i * n + j;
        p[idx] = r[idx] + beta * p[idx];
    }
    if lid == 0u {
        col[j] = rs_new;
    }
}
