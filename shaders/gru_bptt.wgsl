// Backpropagation through the GRU, fused over time, for BP and for the TP surrogate
// (twin of src/cpu/gru.rs::gru_bptt; bptt.wgsl is the tanh RNN's). For t = T, ..., 1:
//
//     e_t = inject_t + [through time, t < T] J_{t+1}ᵀ e_{t+1}
//     inject_t = g_T at t = T and 0 elsewhere (BP), or h_t − v_t = −dv_t (TP surrogate)
//
// and from e_t the pre-activation gradients of step t (gi = U x_t + b_ih, gh = W h_{t−1} + b_hh),
// gates r, z, n (the same elementwise step as cpu::gru::gru_step_backward):
//
//     da_n = e (1 − z)(1 − n²),   da_r = da_n hn r (1 − r),   da_z = e (h_{t−1} − n) z (1 − z)
//     dgi = [da_r, da_z, da_n],   dgh = [da_r, da_z, da_n ⊙ r]
//     J_tᵀ e_t = z ⊙ e_t + Wᵀ dgh
//
// It writes dgi and dgh [T, B, 3d] (step t at row (t−1)*B + s); the matmul kernel then
// reduces them over all T·B rows into ∇W = dghᵀ H_{0..T−1}, ∇U = dgiᵀ X, ∇b_ih = dgiᵀ 1,
// ∇b_hh = dghᵀ 1. It also writes e [T, B, d] for the diagnostics, as bptt.wgsl does.
//
// One workgroup per sequence; invocation `lid` owns units lid, lid + WG, ... and keeps
// their carried J_{t+1}ᵀ e_{t+1} in registers. Wᵀ dgh sums over all 3d rows of W, so each
// unit needs every unit's dgh: it goes through workgroup memory one gate (d values) at a
// time, keeping workgroup memory at one d-vector (WebGPU guarantees 16 KiB) whatever d.
// Wᵀ dgh reads w[row*d + i]: neighbouring invocations read neighbouring addresses.
// Layout: W [3d, d], h and dv [T+1, B, d], gates [T, B, 4d] (r | z | n | hn, from
// gru_forward.wgsl), g_T [B, d].

const WG: u32 = 256u;
const MAX_HIDDEN: u32 = 2048u;
// Units one invocation owns at most (MAX_HIDDEN / WG).
const SLOTS: u32 = 8u;
const TARGETS: u32 = 1u;

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    // 0: g_T at the top only (BP); 1: −dv_t at every step (TP).
    injection: u32,
    through_time: u32,
    // dv is stored multiplied by this power of two (bptt.wgsl's uniform; always 1 here:
    // the GRU's histories are f32).
    dv_scale: f32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> gates: array<f32>;
@group(0) @binding(4) var<storage, read> dv: array<f32>;
@group(0) @binding(5) var<storage, read> g_top: array<f32>;
@group(0) @binding(6) var<storage, read_write> dgi: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgh: array<f32>;
@group(0) @binding(8) var<storage, read_write> err: array<f32>;

var<workgroup> part: array<f32, MAX_HIDDEN>;

// Σ_j W[row0 + j][i] part[j]: one gate's block of Wᵀ dgh, eight terms per loop iteration
// (llvmpipe's loop cap; see forward.wgsl).
fn block_t_dot(row0: u32, i: u32) -> f32 {
    let d = dims.hidden;
    var acc = vec4<f32>(0.0);
    var j = 0u;
    for (; j + 8u <= d; j += 8u) {
        let c = (row0 + j) * d + i;
        acc += vec4<f32>(w[c], w[c + d], w[c + 2u * d], w[c + 3u * d])
            * vec4<f32>(part[j], part[j + 1u], part[j + 2u], part[j + 3u]);
        acc += vec4<f32>(w[c + 4u * d], w[c + 5u * d], w[c + 6u * d], w[c + 7u * d])
            * vec4<f32>(part[j + 4u], part[j + 5u], part[j + 6u], part[j + 7u]);
    }
    var sum = (acc.x + acc.y) + (acc.z + acc.w);
    for (; j < d; j++) {
        sum += w[(row0 + j) * d + i] * part[j];
    }
    return sum;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let nb = dims.batch;
    // J_{t+1}ᵀ e_{t+1} of the owned units (zero above the top and in the local mode).
    var carried: array<f32, SLOTS>;
    // dgh of the owned units at the current step, gates r, z, n as x, y, z.
    var own_dgh: array<vec3<f32>, SLOTS>;
    for (var t = dims.steps; t >= 1u; t--) {
        let row = (t * nb + s) * d;
        let prev = ((t - 1u) * nb + s) * d;
        let gate_row = ((t - 1u) * nb + s) * 4u * d;
        let out = ((t - 1u) * nb + s) * 3u * d;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            var e = carried[k];
            if dims.injection == TARGETS {
                e -= dv[row + i] / dims.dv_scale;
            } else if t == dims.steps {
                e += g_top[s * d + i];
            }
            err[prev + i] = e;
            let r = gates[gate_row + i];
            let z = gates[gate_row + d + i];
            let n = gates[gate_row + 2u * d + i];
            let hn = gates[gate_row + 3u * d + i];
            let da_n = e * (1.0 - z) * (1.0 - n * n);
            let da_r = da_n * hn * r * (1.0 - r);
            let da_z = e * (h[prev + i] - n) * z * (1.0 - z);
            dgi[out + i] = da_r;
            dgi[out + d + i] = da_z;
            dgi[out + 2u * d + i] = da_n;
            dgh[out + i] = da_r;
            dgh[out + d + i] = da_z;
            dgh[out + 2u * d + i] = da_n * r;
            own_dgh[k] = vec3<f32>(da_r, da_z, da_n * r);
            // The direct path of h_t = … + z ⊙ h_{t−1}; Wᵀ dgh follows.
            carried[k] = z * e;
        }
        if dims.through_time == 1u && t > 1u {
            for (var gate = 0u; gate < 3u; gate++) {
                // Everyone has finished with the previous block.
                workgroupBarrier();
                for (var k = 0u; k < SLOTS; k++) {
                    let i = lid + k * WG;
                    if i >= d {
                        break;
                    }
                    part[i] = own_dgh[k][gate];
                }
                workgroupBarrier();
                for (var k = 0u; k < SLOTS; k++) {
                    let i = lid + k * WG;
                    if i >= d {
                        break;
                    }
                    carried[k] += block_t_dot(gate * d, i);
                }
            }
        } else {
            carried = array<f32, SLOTS>();
        }
    }
}
