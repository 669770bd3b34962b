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
// One workgroup per sequence; the outer loop takes one step t per iteration and keeps
// its state only in dv (storage) and dv_cur (workgroup memory). Bounded segments, as in
// target_sweep.wgsl: one launch runs the steps t = dims.first, dims.first − 1, …
// (dims.count of them; gpu::segments picks how many from gpu::loops::per_gate_sweep), the
// first segment (dims.first = T) after setting up dv_0 and dv_T, and each hands dv of its
// last step to the next in `carry` [B, d]. Every bracket of unit i reads only unit i's values; a product reads
// the whole bracket, which sits in workgroup memory, one gate at a time (three d-vectors
// would not fit MAX_HIDDEN's budget of two). Invocation `lid` owns units lid, lid + WG,
// ...: the row dv_{t−1} accumulates in storage, each invocation reading back only the
// elements it wrote itself. The histories are f32 (the GRU runs with f32 storage only).
// Each product takes eight terms per loop iteration (include/dot.wgsl).
//
// Layout, row-major: P_tᵀ [3d, d] (block g = P_gᵀ, gates r, z, n), h and dv [T+1, B, d],
// gates [T, B, 4d] (r | z | n | hn from gru_forward.wgsl), g_T [B, d], carry [B, d].

const WG: u32 = 256u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (column_dot; the operands are dot_matrix and dot_vector below), include/activation.wgsl
// (sigmoid_slope: s(u) with the clamp margin ε) and include/gru.wgsl (load_gates).

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    lr_target: f32,
    // This segment's steps: the first (T … 2, or T = 1 with none) and how many.
    first: u32,
    count: u32,
}

// The gate blocks of W (and of the stacked P_gᵀ) in PyTorch's order.
const GATE_R: u32 = 0u;
const GATE_Z: u32 = 1u;
const GATE_N: u32 = 2u;

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> p_t: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> gates: array<f32>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> dv: array<f32>;
@group(0) @binding(6) var<storage, read_write> carry: array<f32>;

// The bracket of the gate in hand, which every unit's product reads.
var<workgroup> s_vec: array<f32, MAX_HIDDEN>;
// dv_t of the step in hand (each invocation reads only its own units).
var<workgroup> dv_cur: array<f32, MAX_HIDDEN>;

// include/dot.wgsl's operands: the stacked P_gᵀ and the bracket.
fn dot_matrix(e: u32) -> f32 {
    return p_t[e];
}

fn dot_vector(j: u32) -> f32 {
    return s_vec[j];
}

// The bracket of `gate` for one unit: its gates g, h_{t−1} = hp and δ = e.
fn bracket(gate: u32, g: Gates, hp: f32, e: f32) -> f32 {
    // δ through h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n into n's pre-activation.
    let dn = (1.0 - g.n * g.n) * g.z * e;
    if gate == GATE_R {
        return g.hn * dn / sigmoid_slope(g.r);
    }
    if gate == GATE_Z {
        return (g.n - hp) * e / sigmoid_slope(g.z);
    }
    return g.r * dn;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let top = dims.first == dims.steps;
    // dv of the step in hand: the top offset, or where the previous segment stopped.
    for (var i = lid; i < d; i += WG) {
        let dvt = select(carry[s * d + i], -dims.lr_target * g_top[s * d + i], top);
        if top {
            dv[s * d + i] = 0.0;
            dv[(dims.steps * dims.batch + s) * d + i] = dvt;
        }
        dv_cur[i] = dvt;
    }
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        let prev = ((t - 1u) * dims.batch + s) * d;
        let gate_row = ((t - 1u) * dims.batch + s) * 4u * d;
        // The direct term (1 − z) ⊙ δ.
        for (var i = lid; i < d; i += WG) {
            dv[prev + i] = (1.0 - gates[gate_row + d + i]) * dv_cur[i];
        }
        // The published order: z, then r, then n.
        for (var k = 0u; k < 3u; k++) {
            let gate = select(select(GATE_N, GATE_R, k == 1u), GATE_Z, k == 0u);
            for (var i = lid; i < d; i += WG) {
                s_vec[i] = bracket(gate, load_gates(gate_row, d, i), h[prev + i], dv_cur[i]);
            }
            workgroupBarrier();
            for (var i = lid; i < d; i += WG) {
                dv[prev + i] += column_dot(gate * d * d + i, d);
            }
            // Everyone has read the bracket before the next gate's overwrites it.
            workgroupBarrier();
        }
        for (var i = lid; i < d; i += WG) {
            dv_cur[i] = dv[prev + i];
        }
    }
    // Each invocation hands on the units it wrote itself.
    for (var i = lid; i < d; i += WG) {
        carry[s * d + i] = dv_cur[i];
    }
}
