// The target sweep and the TP surrogate's backpropagation through time in one backward
// loop (the tanh RNN with P; twin: src/cpu/target_sweep.rs, then src/cpu/bptt.rs with the
// targets' injection). For t = T, ..., 1:
//
//     [t ≥ 2]  dv_{t−1} = P s_t,   s_t the bracket of target_sweep.wgsl (linearized or
//              difference offsets; include/targets.wgsl)
//     e_t = −dv_t + [t < T] Wᵀ δ_{t+1},   δ_t = (1 − h_t²) ⊙ e_t
//
// with dv_T = −γ_h g_T and dv_0 = 0. Why one loop: target_sweep.wgsl and bptt.wgsl both
// walk t downwards, and step t of the BPTT needs only dv_t, which step t + 1 of the sweep
// made. The two products of a step (P s_t and Wᵀ δ_{t+1}) do not depend on each other, so
// one loop runs both in about the time of one: on a GPU the steps are latency-bound, and
// TP-RI then walks two time loops, as BP does, instead of three (docs/PERFORMANCE.md,
// "One backward loop for TP-RI"). It computes what the two kernels compute, bit for bit:
// the same brackets, sums in the same order, and the injection is the f32 offset that
// target_sweep.wgsl would have stored and bptt.wgsl read back (the host runs this kernel
// for f32 storage only, where that store is exact; it writes dv, δ and e as they do).
//
// The host runs it where it applies (gpu::sweep_bptt::fits): the linearized or difference
// mode, one output (no local targets), the surrogate differentiated through time, f32
// storage, each invocation owning at most one unit (d · LANES ≤ WG, so an invocation keeps
// its unit's h_t and dv_t in registers across the step), and LANES · SEQS · d ≤ MAX_HIDDEN / 2;
// elsewhere the two kernels run one after the other.
//
// Workgroup memory, FUSED = MAX_HIDDEN / 2 floats a block (16 KiB in all, as the other
// time loops): block 0 holds s_t, block 1 dv_t (then dv_{t−1}), blocks 2 and 3 δ_{t+1}
// and δ_t, alternating as in bptt.wgsl; sequence k of the workgroup at k·d in each. With
// lanes (LANES = L > 1, see forward.wgsl) lane l's partial sums go where the finisher will
// write: those of P s_t into block 1 (dv_t is in the finishers' registers by then), those
// of Wᵀ δ_{t+1} into δ_t's block, at l·SEQS·d + k·d + i; the finisher of unit i
// (invocation i) adds them in lane order.
//
// Per step: the brackets (each invocation its unit, from h_t and dv_t), a barrier, the two
// products and the finish (dv_{t−1} and δ_t into workgroup memory, δ_t and e_t into their
// histories), [with lanes a barrier before the finish,] a barrier, the store of dv_{t−1}
// (f16 words would pair units of two invocations; here it keeps target_sweep.wgsl's
// store_rows). Bounded segments as in the two kernels: a launch runs the steps
// dims.first, dims.first − 1, … (dims.count of them); a segment below the top starts from
// dv_{first} in `carry` [B, d] and from δ_{first+1} in the δ history.
//
// Layout: pw = [Pᵀ; W], both [d, d], one binding (transpose.wgsl writes both: Pᵀ from P,
// W from the forward pass's Wᵀ), so include/dot.wgsl's single matrix serves both products
// (W is rows d … 2d − 1, column c = d·d + i). h and dv [T+1, B, d], g_T [B, d], δ and e
// [T, B, d] (step t at row t − 1), carry [B, d]; the rows of a workgroup's sequences are
// consecutive in each.

// Invocations per workgroup: 256, or more with lanes (gpu::kernel sets it with LANES).
override WG: u32 = 256u;

// Sequences per workgroup: 1, 2, 4, 8 or 16 (at most MAX_SEQS), set per pipeline.
override SEQS: u32 = 1u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, MAX_SEQS),
// include/dot.wgsl (columns_dot8, column_rest, hsum, lane_chunk; the operands are
// dot_matrix and dot_vector below), include/activation.wgsl (clamp_eps),
// include/targets.wgsl (offset_bracket, store_rows, zero_rows; its operand is dv_value
// below) and the history storage (HIST_F16, hist_*): include/history.wgsl.

// One block of workgroup memory.
const FUSED: u32 = MAX_HIDDEN / 2u;

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
    // 1 here (f32 storage); include/targets.wgsl's stores multiply by it.
    dv_scale: f32,
    // This segment's steps: the first (T … 1) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> pw: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<HistWord>;
@group(0) @binding(3) var<storage, read> g_top: array<f32>;
@group(0) @binding(4) var<storage, read_write> dv: array<HistWord>;
@group(0) @binding(5) var<storage, read_write> carry: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> err: array<f32>;

// s_t | dv_t | δ (two blocks, alternating).
var<workgroup> blocks: array<f32, 4u * FUSED>;

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

// include/dot.wgsl's operands: [Pᵀ; W] and the blocks (s_t at k·d, δ_{t+1} at its block
// + k·d).
fn dot_matrix(e: u32) -> f32 {
    return pw[e];
}

fn dot_vector(j: u32) -> f32 {
    return blocks[j];
}

// include/targets.wgsl's operand: dv of the step in hand.
fn dv_value(e: u32) -> f32 {
    return blocks[FUSED + e];
}

// Unit i of the workgroup's sequence k (sequence s0 + k) at step t: dv_{t−1} from `sum_p`,
// the eight-term part of (P s_t)_i, when `sweep`; e_t and δ_t from the injection −dv_t and
// `sum_w`, the eight-term part of (Wᵀ δ_{t+1})_i (δ_{t+1} of the sequence at `above`),
// when `recur`; δ_t into workgroup memory at `at`. The orders of target_sweep.wgsl's and
// bptt.wgsl's finishes.
fn finish(t: u32, s0: u32, k: u32, i: u32, flags: vec2<bool>, sums: vec2<f32>, unit: vec2<f32>, above: u32, at: u32) {
    let d = dims.hidden;
    if flags.x {
        blocks[FUSED + k * d + i] = column_rest(sums.x, i, d, k * d);
    }
    var e = -unit.y;
    if flags.y {
        e = column_rest(e, d * d + i, d, above) + sums.y;
    }
    let ht = unit.x;
    let dt = (1.0 - ht * ht) * e;
    let out = ((t - 1u) * dims.batch + s0 + k) * d + i;
    delta[out] = dt;
    err[out] = e;
    blocks[at] = dt;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The workgroup's sequences s0 .. s0 + n − 1.
    let s0 = wg.x * SEQS;
    let n = min(SEQS, dims.batch - s0);
    let d = dims.hidden;
    let nb = dims.batch;
    let stride = hist_stride(d);
    let top = dims.first == dims.steps;
    // dv of the step in hand (the top offsets, or where the previous segment stopped) and,
    // below the top, δ_{first+1} from the history the previous segment wrote.
    for (var e = lid; e < n * d; e += WG) {
        blocks[FUSED + e] = select(carry[s0 * d + e], -dims.lr_target * g_top[s0 * d + e], top);
    }
    if !top {
        let above = (dims.first * nb + s0) * d;
        let half = (2u + ((dims.first + 1u) & 1u)) * FUSED;
        for (var e = lid; e < n * d; e += WG) {
            blocks[half + e] = delta[above + e];
        }
    }
    if top {
        zero_rows(s0 * stride, n, lid);
    }
    // The set-up wrote across the sequences' units, not by owned units: all of it must be
    // visible before the stores below and the steps' reads.
    workgroupBarrier();
    if top {
        store_rows((dims.steps * nb + s0) * stride, n, lid);
    }
    // This invocation's lane of its unit and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    let i = lid / LANES;
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        // The sweep's steps are T … 2; the BPTT's T … 1, through time below the top.
        let flags = vec2<bool>(t >= 2u, t < dims.steps);
        // δ_{t+1} in one block, δ_t into the other.
        let prev = (2u + ((t + 1u) & 1u)) * FUSED;
        let next = (2u + (t & 1u)) * FUSED;
        // h_t and dv_t of this invocation's unit (lid) of each sequence, and s_t.
        var unit: array<vec2<f32>, MAX_SEQS>;
        if lid < d {
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    let ht = load_h(((t * nb + s0 + k) * stride) + lid);
                    let dvt = blocks[FUSED + k * d + lid];
                    unit[k] = vec2<f32>(ht, dvt);
                    if flags.x {
                        blocks[k * d + lid] = offset_bracket(dims.mode, ht, dvt, 0.0, false);
                    }
                }
            }
        }
        // s_t complete; the previous step's stores have read dv_t's block.
        workgroupBarrier();
        if i < d {
            // The lane's parts of (P s_t)_i and (Wᵀ δ_{t+1})_i of all SEQS sequences, one
            // pass over each matrix's column i. Past the last sequence (k ≥ n) they sum
            // what the blocks hold there, never used.
            var acc_p: array<vec4<f32>, MAX_SEQS>;
            var acc_w: array<vec4<f32>, MAX_SEQS>;
            if flags.x {
                acc_p = columns_dot8(i, d, 0u, d, SEQS, chunk);
            }
            if flags.y {
                acc_w = columns_dot8(d * d + i, d, prev, d, SEQS, chunk);
            }
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    let sums = vec2<f32>(hsum(acc_p[k]), hsum(acc_w[k]));
                    if LANES == 1u {
                        finish(t, s0, k, i, flags, sums, unit[k], prev + k * d, next + k * d + i);
                    } else {
                        let part = lane * SEQS * d + k * d + i;
                        blocks[FUSED + part] = sums.x;
                        blocks[next + part] = sums.y;
                    }
                }
            }
        }
        if LANES > 1u {
            // All partials written; the finisher of unit lid reads only its own.
            workgroupBarrier();
            if lid < d {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        let at = k * d + lid;
                        var sums = vec2<f32>(blocks[FUSED + at], blocks[next + at]);
                        for (var l = 1u; l < LANES; l++) {
                            let part = l * SEQS * d + at;
                            sums += vec2<f32>(blocks[FUSED + part], blocks[next + part]);
                        }
                        finish(t, s0, k, lid, flags, sums, unit[k], prev + k * d, next + at);
                    }
                }
            }
        }
        // Everyone has read s_t and δ_{t+1} and written dv_{t−1} and δ_t.
        workgroupBarrier();
        if flags.x {
            store_rows(((t - 1u) * nb + s0) * stride, n, lid);
        }
    }
    // After the last barrier every offset of the workgroup is visible to every invocation
    // (the set-up's, when the segment has no steps).
    for (var e = lid; e < n * d; e += WG) {
        carry[s0 * d + e] = blocks[FUSED + e];
    }
}
