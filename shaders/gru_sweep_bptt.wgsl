// The GRU's per-gate target sweep and the TP surrogate's backpropagation through time in
// one backward loop (twins: src/cpu/gru_per_gate.rs::gru_per_gate_sweep, then
// src/cpu/gru.rs::gru_bptt with the targets' injection; sweep_bptt.wgsl is the tanh
// RNN's). For t = T, ..., 1, with the gates r, z, n, hn of step t and h = h_{t−1}:
//
//     [t ≥ 2]  dv_{t−1} = (1 − z) ⊙ dv_t + P_z b_z + P_r b_r + P_n b_n   (the brackets b_g of
//              include/gate_brackets.wgsl, at δ = dv_t)
//     e_t = −dv_t + [t < T] J_{t+1}ᵀ e_{t+1},   dgi_t, dgh_t from e_t (gru_bptt.wgsl)
//     J_tᵀ e_t = z ⊙ e_t + Wᵀ dgh_t
//
// with dv_T = −γ_h g_T and dv_0 = 0. Why one loop: gru_per_gate_sweep.wgsl and
// gru_bptt.wgsl both walk t downwards, and step t of the recursion needs only dv_t, which
// step t + 1 of the sweep made. The six products of a step (three of the P_g, three
// blocks of Wᵀ) do not depend on each other, so they share one barrier, and TP-RI walks
// two time loops, as BP does, instead of three (docs/PERFORMANCE.md, "One backward loop
// for the GRU"). It computes what the two kernels compute, bit for bit: the same
// brackets, the same sums in the same order, and the injection is dv_t as the sweep
// stored it (the GRU's histories are f32, so the stored value is the register's).
//
// The host runs it where it applies (gpu::gru_sweep_bptt::fits): the per-gate inversion,
// the surrogate differentiated through time (no local targets), and the six
// vectors of a step within one half of workgroup memory (6d ≤ MAX_HIDDEN, d ≤ 341);
// elsewhere the two kernels run one after the other.
//
// One workgroup per sequence; invocation `lid` owns units lid, lid + WG, ... and keeps
// their dv_t and J_{t+1}ᵀ e_{t+1} in registers from one step to the next. Each step
// writes its three brackets at half + g·d and its three blocks of dgh at half + 3d + g·d
// of `part`, alternating halves from step to step (as gru_bptt.wgsl's dgh do): the next
// step writes the other half, so one barrier a step suffices. Each product reads a whole
// vector of its gate, through workgroup memory.
//
// Bounded segments as in the two kernels: a launch runs the steps dims.first,
// dims.first − 1, … (dims.count of them); the first (dims.first = T) sets up dv_0 and
// dv_T; one below the top starts from dv_{first} in `carry` [B, d] and forms
// J_{first+1}ᵀ e_{first+1} again from the stored e, gates and dgh of step first + 1, as
// gru_bptt.wgsl does, and each hands dv of its last step on in `carry`.
//
// Layout, row-major: pw = [P_rᵀ; P_zᵀ; P_nᵀ; W] [6d, d] (gpu::inverse::GateCg stacks the
// P_gᵀ, the host copies W [3d, d] below them), one binding so that include/dot.wgsl's
// single matrix serves all six products (block g of Wᵀ dgh is column 3d·d + g·d·d + i).
// h and dv [T+1, B, d], gates [T, B, 4d] (r | z | n | hn from gru_forward.wgsl), g_T [B, d],
// carry [B, d], dgi and dgh [T, B, 3d] and e [T, B, d] (step t at row (t−1)·B + s).

// Invocations per workgroup: 64, 128 or 256, matched to d (gpu::kernel sets it:
// `matched_workgroup_size`). Each owns at most SLOTS = MAX_HIDDEN / 256 units: one where
// WG < 256 (d ≤ WG there).
override WG: u32 = 256u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, SLOTS), include/dot.wgsl
// (column_dot; the operands are dot_matrix and dot_vector below), include/activation.wgsl
// (sigmoid_slope), include/gru.wgsl (load_gates, gru_step_backward) and
// include/gate_brackets.wgsl (the brackets, in the published order).

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    lr_target: f32,
    // This segment's steps: the first (T … 1) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> pw: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> gates: array<f32>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> dv: array<f32>;
@group(0) @binding(6) var<storage, read_write> carry: array<f32>;
@group(0) @binding(7) var<storage, read_write> dgi: array<f32>;
@group(0) @binding(8) var<storage, read_write> dgh: array<f32>;
@group(0) @binding(9) var<storage, read_write> err: array<f32>;

// A step's brackets (at half + g·d) and dgh (at half + 3d + g·d); the other half holds the
// previous step's.
var<workgroup> part: array<f32, 2u * MAX_HIDDEN>;

// Where include/dot.wgsl's vector starts in `part`: the bracket or dgh block in hand.
var<private> block_base: u32;

// include/dot.wgsl's operands: [P_tᵀ; W] and one vector of `part`.
fn dot_matrix(e: u32) -> f32 {
    return pw[e];
}

fn dot_vector(j: u32) -> f32 {
    return part[block_base + j];
}

// carried + Wᵀ dgh for unit i, dgh's three blocks at `base` in `part` (written before a
// barrier), in gru_bptt.wgsl's order of gates.
fn add_wt_dgh(carried: f32, i: u32, base: u32) -> f32 {
    let d = dims.hidden;
    var out = carried;
    for (var gate = 0u; gate < 3u; gate++) {
        block_base = base + gate * d;
        out += column_dot(3u * d * d + gate * d * d + i, d);
    }
    return out;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let nb = dims.batch;
    let top = dims.first == dims.steps;
    // dv_t and J_{t+1}ᵀ e_{t+1} of the owned units at the step in hand.
    var dv_own: array<f32, SLOTS>;
    var carried: array<f32, SLOTS>;
    for (var k = 0u; k < SLOTS; k++) {
        let i = lid + k * WG;
        if i >= d {
            break;
        }
        let dvt = select(carry[s * d + i], -dims.lr_target * g_top[s * d + i], top);
        if top {
            dv[s * d + i] = 0.0;
            dv[(dims.steps * nb + s) * d + i] = dvt;
        } else {
            // J_{first+1}ᵀ e_{first+1}: its direct part now, Wᵀ dgh after the barrier.
            let out = (dims.first * nb + s) * 3u * d;
            let base = ((dims.first + 1u) & 1u) * MAX_HIDDEN + 3u * d;
            part[base + i] = dgh[out + i];
            part[base + d + i] = dgh[out + d + i];
            part[base + 2u * d + i] = dgh[out + 2u * d + i];
            let z = gates[(dims.first * nb + s) * 4u * d + d + i];
            carried[k] = z * err[(dims.first * nb + s) * d + i];
        }
        dv_own[k] = dvt;
    }
    if !top {
        workgroupBarrier();
        let base = ((dims.first + 1u) & 1u) * MAX_HIDDEN + 3u * d;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            carried[k] = add_wt_dgh(carried[k], i, base);
        }
    }
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        let prev = ((t - 1u) * nb + s) * d;
        let gate_row = ((t - 1u) * nb + s) * 4u * d;
        let out = ((t - 1u) * nb + s) * 3u * d;
        let half = (t & 1u) * MAX_HIDDEN;
        // dv_{t−1} of the owned units: the direct term here, the products after the barrier.
        var acc: array<f32, SLOTS>;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            let g = load_gates(gate_row, d, i);
            let hp = h[prev + i];
            acc[k] = (1.0 - g.z) * dv_own[k];
            for (var gate = 0u; gate < 3u; gate++) {
                part[half + gate * d + i] = bracket(gate, g, hp, dv_own[k]);
            }
            // The recursion's step t, injected with h_t − v_t = −dv_t.
            let e = carried[k] - dv_own[k];
            err[prev + i] = e;
            // (da_r, da_z, da_n), the unit's dgi; its dgh is (da_r, da_z, da_n r).
            let da = gru_step_backward(e, g, hp);
            dgi[out + i] = da.x;
            dgi[out + d + i] = da.y;
            dgi[out + 2u * d + i] = da.z;
            dgh[out + i] = da.x;
            dgh[out + d + i] = da.y;
            dgh[out + 2u * d + i] = da.z * g.r;
            part[half + 3u * d + i] = da.x;
            part[half + 4u * d + i] = da.y;
            part[half + 5u * d + i] = da.z * g.r;
            // The direct path of h_t = … + z ⊙ h_{t−1}; Wᵀ dgh follows.
            carried[k] = g.z * e;
        }
        // Step 1 has no products: dv_0 = 0 was set at the top, and nothing is carried below.
        if t > 1u {
            workgroupBarrier();
            for (var k = 0u; k < SLOTS; k++) {
                let i = lid + k * WG;
                if i >= d {
                    break;
                }
                for (var m = 0u; m < 3u; m++) {
                    let gate = gate_in_order(m);
                    block_base = half + gate * d;
                    acc[k] += column_dot(gate * d * d + i, d);
                }
                dv[prev + i] = acc[k];
                dv_own[k] = acc[k];
                carried[k] = add_wt_dgh(carried[k], i, half + 3u * d);
            }
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
