// Backpropagation through time, fused over time, for BP and for the TP surrogate
// (twin of src/cpu/bptt.rs). For t = T, ..., 1:
//
//     e_t = inject_t + [through time, t < T] Wᵀ δ_{t+1},   δ_t = (1 - h_t²) ⊙ e_t
//     inject_t = g_T at t = T and 0 elsewhere (BP), or h_t - v_t = -dv_t (TP surrogate;
//     the target sweep stores the offsets dv_t = v_t - h_t)
//
// and writes the history δ [T, B, d] (step t at row (t-1)*B + s); the matmul kernel then
// reduces it over all T·B rows into ∇W = Δᵀ H_{0..T-1}, ∇U = Δᵀ X, ∇b = Δᵀ 1.
// One workgroup per sequence; δ_{t+1} sits in workgroup memory. In the local mode there
// is no recursion, but the same loop serves (it is as cheap as the injection itself).
// With `norms` set it also writes ‖e_t‖² of each sequence into err_sq [T, B] (what
// `tpri trace` reports as error_norms); one invocation adds up the workgroup's partial
// sums while the others copy δ, so this costs no extra barrier, but it lengthens each
// step's critical path, hence the switch. Layout: W [d, d], h and dv [T+1, B, d], g_T [B, d].

const WG: u32 = 256u;
const MAX_HIDDEN: u32 = 2048u;
const TARGETS: u32 = 1u;

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    // 0: g_T at the top only (BP); 1: -dv_t at every step (TP).
    injection: u32,
    through_time: u32,
    norms: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> dv: array<f32>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> err_sq: array<f32>;

var<workgroup> delta_next: array<f32, MAX_HIDDEN>;
var<workgroup> err_part: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let nb = dims.batch;
    for (var t = dims.steps; t >= 1u; t--) {
        let row = (t * nb + s) * d;
        let out = ((t - 1u) * nb + s) * d;
        let recur = dims.through_time == 1u && t < dims.steps;
        var part = 0.0;
        for (var i = lid; i < d; i += WG) {
            var e = 0.0;
            if dims.injection == TARGETS {
                e = -dv[row + i];
            } else if t == dims.steps {
                e = g_top[s * d + i];
            }
            if recur {
                for (var j = 0u; j < d; j++) {
                    e += w[j * d + i] * delta_next[j];
                }
            }
            let ht = h[row + i];
            delta[out + i] = (1.0 - ht * ht) * e;
            part += e * e;
        }
        err_part[lid] = part;
        workgroupBarrier();
        if dims.norms == 1u && lid == 0u {
            var total = 0.0;
            for (var k = 0u; k < min(d, WG); k++) {
                total += err_part[k];
            }
            err_sq[(t - 1u) * nb + s] = total;
        }
        for (var i = lid; i < d; i += WG) {
            delta_next[i] = delta[out + i];
        }
        workgroupBarrier();
    }
}
