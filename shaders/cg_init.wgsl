// Start of the batched CG solve (WᵀW + rI) X = Wᵀ (twin of the set-up in
// src/cpu/inverse.rs::inverse_cg). One workgroup per column j of X, i.e. per system.
//
//     R = Wᵀ - A X,   P = R,   rs_j = ‖R_{:,j}‖²,   wn_j = ‖(Wᵀ)_{:,j}‖²
//
// Warm start: X holds the previous solution and `awx` = Wᵀ(W X) from two matmuls; cold
// start: X is set to 0 here and `awx` is not read. Layout: all [n, n] row-major, W as
// stored (so (Wᵀ)[i][j] = W[j][i]); col = rs [n] | wn [n].

const WG: u32 = 64u;

struct Dims {
    n: u32,
    warm: u32,
    reg: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> awx: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> r: array<f32>;
@group(0) @binding(5) var<storage, read_write> p: array<f32>;
@group(0) @binding(6) var<storage, read_write> col: array<f32>;

var<workgroup> sum_rs: array<f32, WG>;
var<workgroup> sum_wn: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = wg.x;
    let n = dims.n;
    var rs = 0.0;
    var wn = 0.0;
    for (var i = lid; i < n; i += WG) {
        let idx = i * n + j;
        let rhs = w[j * n + i];
        var res = rhs;
        if dims.warm == 1u {
            res = rhs - (awx[idx] + dims.reg * x[idx]);
        } else {
            x[idx] = 0.0;
        }
        r[idx] = res;
        p[idx] = res;
        rs += res * res;
        wn += rhs * rhs;
    }
    sum_rs[lid] = rs;
    sum_wn[lid] = wn;
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if lid < stride {
            sum_rs[lid] += sum_rs[lid + stride];
            sum_wn[lid] += sum_wn[lid + stride];
        }
    }
    if lid == 0u {
        col[j] = sum_rs[0];
        col[n + j] = sum_wn[0];
    }
}
