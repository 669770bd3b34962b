// The GRU's per-gate target sweep, the published GRU inversion (docs/ALGORITHM.md §5;
// twin of src/cpu/gru_per_gate.rs::gru_per_gate_sweep):
//
//     v_T = h_T − γ_h g_T, then for t = T, ..., 2, with h = h_{t−1}, δ = v_t − h_t and the
//     gates r, z, n, a = hn of step t:
//     v_{t−1} = h + (1 − z) ⊙ δ + P_z[(n − h) ⊙ δ ⊘ s(z)]
//                 + P_r[a ⊙ (1 − n²) ⊙ z ⊙ δ ⊘ s(r)] + P_n[r ⊙ (1 − n²) ⊙ z ⊙ δ]
//     s(u) = ū(1 − ū), ū = clamp(u, ε, 1 − ε)
//
// P_g = (W_gᵀW_g + rI)⁻¹W_gᵀ for the gate blocks W_g of W, formed before this launch
// (gpu::inverse::GateCg) and read here transposed and stacked, [P_rᵀ; P_zᵀ; P_nᵀ] [3d, d],
// so that neighbouring invocations read neighbouring addresses.
//
// Like target_sweep.wgsl it stores the offsets dv_t = v_t − h_t (see there for why):
// dv_{t−1} is the sum of the direct term and the three products, without h. dv_0 = 0.
//
// One workgroup per sequence; invocation `lid` owns units lid, lid + WG, ... and keeps
// their dv_t in registers from one step to the next. Bounded segments, as in
// target_sweep.wgsl: one launch runs the steps t = dims.first, dims.first − 1, …
// (dims.count of them; gpu::segments picks how many from gpu::loops::per_gate_sweep), the
// first segment (dims.first = T) after setting up dv_0 and dv_T, and each hands dv of its
// last step to the next in `carry` [B, d]. Every bracket of unit i reads only unit i's
// values; a product reads the whole bracket of its gate, through workgroup memory. Where
// the three gates' brackets fit one half of it (3d ≤ MAX_HIDDEN, d ≤ 682) they go there at
// once, alternating halves from step to step: one barrier a step. Wider, they go one gate
// at a time through one half, two barriers a gate, keeping workgroup memory at 16 KiB. Each
// unit adds the direct term and the three products in the published order either way, in
// a register, and stores dv_{t−1} once. The histories are f32 (the GRU runs with f32
// storage only). Each product takes eight terms per loop iteration (include/dot.wgsl).
//
// Layout, row-major: P_tᵀ [3d, d] (block g = P_gᵀ, gates r, z, n), h and dv [T+1, B, d],
// gates [T, B, 4d] (r | z | n | hn from gru_forward.wgsl), g_T [B, d], carry [B, d].

// Invocations per workgroup: 64, 128 or 256, matched to d (gpu::kernel sets it:
// `matched_workgroup_size`). Each owns at most SLOTS = MAX_HIDDEN / 256 units: one where
// WG < 256 (d ≤ WG there).
override WG: u32 = 256u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, SLOTS), include/dot.wgsl
// (column_dot; the operands are dot_matrix and dot_vector below), include/activation.wgsl
// (sigmoid_slope: s(u) with the clamp margin ε), include/gru.wgsl (load_gates) and
// include/gate_brackets.wgsl (the brackets, in the published order).

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    lr_target: f32,
    // This segment's steps: the first (T … 2, or T = 1 with none) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> p_t: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> gates: array<f32>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> dv: array<f32>;
@group(0) @binding(6) var<storage, read_write> carry: array<f32>;

// The brackets every unit's products read: the three gates' at half + gate·d, or the gate
// in hand's at 0 past d = 682.
var<workgroup> part: array<f32, 2u * MAX_HIDDEN>;

// Where include/dot.wgsl's vector starts in `part`: the gate in hand's bracket.
var<private> block_base: u32;

// include/dot.wgsl's operands: the stacked P_gᵀ and the bracket.
fn dot_matrix(e: u32) -> f32 {
    return p_t[e];
}

fn dot_vector(j: u32) -> f32 {
    return part[block_base + j];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let top = dims.first == dims.steps;
    // All three brackets at once (one round a step), or one gate a round.
    let all = 3u * d <= MAX_HIDDEN;
    let rounds = select(3u, 1u, all);
    // dv of the owned units at the step in hand: the top offset, or where the previous
    // segment stopped.
    var dv_own: array<f32, SLOTS>;
    for (var k = 0u; k < SLOTS; k++) {
        let i = lid + k * WG;
        if i >= d {
            break;
        }
        let dvt = select(carry[s * d + i], -dims.lr_target * g_top[s * d + i], top);
        if top {
            dv[s * d + i] = 0.0;
            dv[(dims.steps * dims.batch + s) * d + i] = dvt;
        }
        dv_own[k] = dvt;
    }
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        let prev = ((t - 1u) * dims.batch + s) * d;
        let gate_row = ((t - 1u) * dims.batch + s) * 4u * d;
        let half = (t & 1u) * MAX_HIDDEN;
        // dv_{t−1} of the owned units: the direct term (1 − z) ⊙ δ, then the products.
        var acc: array<f32, SLOTS>;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            acc[k] = (1.0 - gates[gate_row + d + i]) * dv_own[k];
        }
        for (var round = 0u; round < rounds; round++) {
            for (var k = 0u; k < SLOTS; k++) {
                let i = lid + k * WG;
                if i >= d {
                    break;
                }
                let g = load_gates(gate_row, d, i);
                let hp = h[prev + i];
                for (var m = 0u; m < 3u; m++) {
                    if all || m == round {
                        let gate = gate_in_order(m);
                        part[select(0u, half + gate * d, all) + i] = bracket(gate, g, hp, dv_own[k]);
                    }
                }
            }
            workgroupBarrier();
            for (var k = 0u; k < SLOTS; k++) {
                let i = lid + k * WG;
                if i >= d {
                    break;
                }
                for (var m = 0u; m < 3u; m++) {
                    if all || m == round {
                        let gate = gate_in_order(m);
                        block_base = select(0u, half + gate * d, all);
                        acc[k] += column_dot(gate * d * d + i, d);
                    }
                }
            }
            // One gate at a time: everyone has read the bracket before the next gate's
            // overwrites it. (All at once, the next step writes the other half.)
            if !all {
                workgroupBarrier();
            }
        }
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            dv[prev + i] = acc[k];
            dv_own[k] = acc[k];
        }
    }
    // Each invocation hands on the units it owns.
    for (var k = 0u; k < SLOTS; k++) {
        let i = lid + k * WG;
        if i >= d {
            break;
        }
        carry[s * d + i] = dv_own[k];
    }
}
