// The backward target sweep, fused over time (twin of src/cpu/target_sweep.rs).
//
//     v_T = h_T - γ_h g_T, then for t = T, ..., 2:
//     linearized:  v_{t-1} = h_{t-1} + P [(v_t - h_t) ⊘ (1 - clamp(h_t)²)]
//     difference:  v_{t-1} = h_{t-1} + P [atanh(clamp v_t) - atanh(clamp h_t)]
//     plain:       v_{t-1} = P [atanh(clamp v_t) - U x_t - b]
// (difference mode is f⁻¹(clamp v_t) - f⁻¹(clamp h_t) with the U x_t + b terms cancelled.)
// v_0 is never used; like the reference, it is set to h_0 = 0.
//
// One workgroup per sequence walks t downwards; the bracketed vector s sits in workgroup
// memory since every unit of v_{t-1} reads all of it. Invocation `lid` owns units lid,
// lid + WG, ... in both loops, so it reads back only the v_t values it wrote itself.
// Layout: P [d, d], U [d, p], x [T, B, p], h and v [T+1, B, d], g_T [B, d].

const WG: u32 = 256u;
const MAX_HIDDEN: u32 = 2048u;
const LINEARIZED: u32 = 0u;
const DIFFERENCE: u32 = 1u;
// Clamp margin ε (config::CLAMP_EPS).
const CLAMP_EPS: f32 = 1e-3;

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> p_inv: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> h: array<f32>;
@group(0) @binding(6) var<storage, read> g_top: array<f32>;
@group(0) @binding(7) var<storage, read_write> v: array<f32>;

var<workgroup> s_vec: array<f32, MAX_HIDDEN>;

fn clamp_eps(a: f32) -> f32 {
    return clamp(a, -1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let p = dims.input;
    let top = (dims.steps * dims.batch + s) * d;
    for (var i = lid; i < d; i += WG) {
        v[s * d + i] = h[s * d + i];
        v[top + i] = h[top + i] - dims.lr_target * g_top[s * d + i];
    }
    for (var t = dims.steps; t >= 2u; t--) {
        let row = (t * dims.batch + s) * d;
        let prev = ((t - 1u) * dims.batch + s) * d;
        let x_row = ((t - 1u) * dims.batch + s) * p;
        for (var j = lid; j < d; j += WG) {
            let ht = h[row + j];
            let vt = v[row + j];
            var sj: f32;
            if dims.mode == LINEARIZED {
                let c = clamp_eps(ht);
                sj = (vt - ht) / (1.0 - c * c);
            } else if dims.mode == DIFFERENCE {
                sj = atanh(clamp_eps(vt)) - atanh(clamp_eps(ht));
            } else {
                var pre = atanh(clamp_eps(vt)) - bias[j];
                for (var k = 0u; k < p; k++) {
                    pre -= u[j * p + k] * x[x_row + k];
                }
                sj = pre;
            }
            s_vec[j] = sj;
        }
        workgroupBarrier();
        for (var i = lid; i < d; i += WG) {
            var acc = 0.0;
            for (var j = 0u; j < d; j++) {
                acc += p_inv[i * d + j] * s_vec[j];
            }
            if dims.mode == LINEARIZED || dims.mode == DIFFERENCE {
                acc += h[prev + i];
            }
            v[prev + i] = acc;
        }
        // s_vec is rewritten by the next step only after everyone has used it.
        workgroupBarrier();
    }
}
