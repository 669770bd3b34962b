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
// unit needs every unit's dgh, through workgroup memory. Where the three gate blocks fit
// one half of it (3d ≤ MAX_HIDDEN, d ≤ 682) they go there at once, alternating halves from
// step to step (as forward.wgsl's states do): one barrier a step. Wider, they go one gate
// (d values) at a time through one half, two barriers a gate, keeping workgroup memory at
// 16 KiB (what WebGPU guarantees) whatever d. The sums are the same, in the same order,
// either way. Wᵀ dgh reads w[row*d + i]: neighbouring invocations read neighbouring
// addresses, eight terms per loop iteration (include/dot.wgsl; see there for llvmpipe's
// loop cap).
// Layout: W [3d, d], h and dv [T+1, B, d], gates [T, B, 4d] (r | z | n | hn, from
// gru_forward.wgsl), g_T [B, d].

// Invocations per workgroup: 64, 128 or 256 a lane, matched to d (gpu::kernel sets it with
// LANES: `Packing::new`). Each owns at most SLOTS = MAX_HIDDEN / 256 units: one where
// WG < 256 (d ≤ WG there).
override WG: u32 = 256u;
const TARGETS: u32 = 1u;

// Lanes per unit of Wᵀ dgh: 1, 2, 4, 8 or 16, set per pipeline (the host allows more than
// one where dgh and the lanes' parts fit one half of workgroup memory, (3 + LANES)·d ≤
// MAX_HIDDEN). With LANES = L > 1, lane l of unit i sums include/dot.wgsl's lane_chunk l of
// the eight-term parts of the three blocks, after a barrier the unit's owner adds the L
// parts in lane order and then the last d % 8 terms of each block: a chain of about 3d/L
// terms a step instead of 3d, for a second barrier (as forward.wgsl's lanes). The sums
// change within f32 rounding; at L = 1 the lane code is compiled out.
override LANES: u32 = 1u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, SLOTS),
// include/dot.wgsl (column_dot, and with lanes lane_chunk, columns_dot8, column_rest; the
// operands are dot_matrix and dot_vector below) and
// include/gru.wgsl (load_gates, gru_step_backward: the step backward, shared with
// jacobian.wgsl).

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
    // This segment's steps: the first (T … 1) and how many.
    first: u32,
    count: u32,
    // bptt.wgsl's blocks of staged loads and its vectors' size: 0 here, and unused.
    block: u32,
    slot: u32,
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

// dgh of the step in hand, its three gate blocks at half + gate·d (or one block at a time
// from 0, past d = 682); the other half holds the previous step's.
var<workgroup> part: array<f32, 2u * MAX_HIDDEN>;

// Where include/dot.wgsl's vector starts in `part`: the gate block in hand.
var<private> block_base: u32;

// include/dot.wgsl's operands: W [3d, d] and one gate's block of dgh.
fn dot_matrix(e: u32) -> f32 {
    return w[e];
}

fn dot_vector(j: u32) -> f32 {
    return part[block_base + j];
}

// carried + Wᵀ dgh for the owned units (own_dgh, gates r, z, n as x, y, z), one gate block
// of W at a time; dgh goes through `part` at `half` (0 or MAX_HIDDEN, alternating from one
// call to the next) when its three blocks fit there. Called in uniform control flow
// (barriers).
fn add_wt_dgh(lid: u32, own_dgh: array<vec3<f32>, SLOTS>, carried: array<f32, SLOTS>, half: u32) -> array<f32, SLOTS> {
    let d = dims.hidden;
    var out = carried;
    if 3u * d <= MAX_HIDDEN {
        // The previous call read the other half: no barrier before these writes.
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            part[half + i] = own_dgh[k].x;
            part[half + d + i] = own_dgh[k].y;
            part[half + 2u * d + i] = own_dgh[k].z;
        }
        workgroupBarrier();
        if LANES > 1u {
            // Each lane's part of the three blocks' sums, after dgh at half + 3d + lane·d
            // (the host keeps (3 + LANES)·d ≤ MAX_HIDDEN).
            let lane = lid % LANES;
            let chunk = lane_chunk(d, lane, LANES);
            for (var i = lid / LANES; i < d; i += WG / LANES) {
                var sum = 0.0;
                for (var gate = 0u; gate < 3u; gate++) {
                    block_base = half + gate * d;
                    sum += hsum(columns_dot8(gate * d * d + i, d, 0u, 0u, 1u, chunk)[0]);
                }
                part[half + (3u + lane) * d + i] = sum;
            }
            // All parts written; each unit's owner reads only its own.
            workgroupBarrier();
            for (var k = 0u; k < SLOTS; k++) {
                let i = lid + k * WG;
                if i >= d {
                    break;
                }
                for (var l = 0u; l < LANES; l++) {
                    out[k] += part[half + (3u + l) * d + i];
                }
                for (var gate = 0u; gate < 3u; gate++) {
                    block_base = half + gate * d;
                    out[k] = column_rest(out[k], gate * d * d + i, d, 0u);
                }
            }
            return out;
        }
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            for (var gate = 0u; gate < 3u; gate++) {
                block_base = half + gate * d;
                // Σ_j W[gate·d + j][i] dgh_gate[j]: this gate's block of Wᵀ dgh.
                out[k] += column_dot(gate * d * d + i, d);
            }
        }
        return out;
    }
    block_base = 0u;
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
            out[k] += column_dot(gate * d * d + i, d);
        }
    }
    return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let nb = dims.batch;
    let through_time = dims.through_time == 1u;
    // J_{t+1}ᵀ e_{t+1} of the owned units (zero above the top and in the local mode).
    var carried: array<f32, SLOTS>;
    // dgh of the owned units at the current step, gates r, z, n as x, y, z.
    var own_dgh: array<vec3<f32>, SLOTS>;
    if through_time && dims.first < dims.steps {
        // J_{first+1}ᵀ e_{first+1} = z ⊙ e + Wᵀ dgh, from step first + 1's stored values,
        // exactly as the step below forms it.
        let gate_row = (dims.first * nb + s) * 4u * d;
        let out = (dims.first * nb + s) * 3u * d;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            own_dgh[k] = vec3<f32>(dgh[out + i], dgh[out + d + i], dgh[out + 2u * d + i]);
            carried[k] = gates[gate_row + d + i] * err[(dims.first * nb + s) * d + i];
        }
        carried = add_wt_dgh(lid, own_dgh, carried, ((dims.first + 1u) & 1u) * MAX_HIDDEN);
    }
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
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
            let g = load_gates(gate_row, d, i);
            // (da_r, da_z, da_n), the unit's dgi; its dgh is (da_r, da_z, da_n r).
            let da = gru_step_backward(e, g, h[prev + i]);
            dgi[out + i] = da.x;
            dgi[out + d + i] = da.y;
            dgi[out + 2u * d + i] = da.z;
            dgh[out + i] = da.x;
            dgh[out + d + i] = da.y;
            dgh[out + 2u * d + i] = da.z * g.r;
            own_dgh[k] = vec3<f32>(da.x, da.y, da.z * g.r);
            // The direct path of h_t = … + z ⊙ h_{t−1}; Wᵀ dgh follows.
            carried[k] = g.z * e;
        }
        if through_time && t > 1u {
            carried = add_wt_dgh(lid, own_dgh, carried, (t & 1u) * MAX_HIDDEN);
        } else {
            carried = array<f32, SLOTS>();
        }
    }
}
