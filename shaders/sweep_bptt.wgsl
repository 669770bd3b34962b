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
// the same brackets, sums in the same order, and the injection is the offset that
// target_sweep.wgsl would have stored and bptt.wgsl read back (`injection`: with f16
// storage, the f32 offset rounded as the history stores it; the sweep itself goes on from
// the f32 value, as target_sweep.wgsl's does). It writes dv, δ and e as they do.
//
// The host runs it where it applies (gpu::sweep_bptt::fits): the linearized or difference
// mode, one output (no local targets), the surrogate differentiated through time, each
// invocation owning at most one unit (d · LANES ≤ WG), and its vectors within workgroup
// memory (four of LANES · SEQS · d floats, six with f16 storage); elsewhere the two kernels
// run one after the other.
//
// One barrier a step (two with lanes), as in forward.wgsl: the finisher of unit i, which
// forms dv_{t−1} of that unit, also forms the unit's bracket s_{t−1} for the next step, so
// the brackets need no phase of their own. Invocation i owns unit i of every sequence of
// its workgroup: it keeps the unit's dv_t in registers from one step to the next, stores
// dv_{t−1} to the history itself (f32: one word a value, no pairing with a neighbour's),
// and keeps h_t of its unit from the step before, where it was h_{t−1}.
//
// f16 storage pairs two units in one word of the dv history, units that different
// invocations finish. So there the finisher of unit i leaves dv_{t−1} in a fifth (or, for
// the next step, sixth) vector of workgroup memory, and after the step's last barrier
// the invocations store the row's words from it (`store_pairs`, as target_sweep.wgsl's
// store_rows does). The next step's finishers write the other of the two vectors; the
// step after rewrites this one only past the next barrier, when the stores have read it.
//
// Blocks of steps (dims.block, gpu::blocks::staged_steps; 0: none): before the
// first step of each block, the finisher of unit i loads h_{t−1} of its unit for all the
// block's steps t at once into its own part of workgroup memory (`stage_block`), where the
// steps read them: the loads are issued together, so that their latency is paid about once
// a block, even where a driver waits for outstanding loads at every barrier (loading them
// a step ahead did not pay in the forward pass: docs/PERFORMANCE.md, "Blocks of steps"). Only
// that invocation writes and reads its part, so the stage needs no barrier. Without room
// for one step (large d with lanes) each step loads h_{t−1} before its products.
//
// Workgroup memory (16 KiB in all, as the other time loops): four vectors of dims.slot =
// LANES·SEQS·d floats (six with f16 storage: the two of dv), then the stage. Vectors 0 and 1 hold s_t, alternating (s_t in
// vector t mod 2), vectors 2 and 3 δ_t (vector 2 + t mod 2); sequence k of the workgroup at
// k·d in each. Step t reads s_t
// and δ_{t+1} and writes s_{t−1} and δ_t into the other two, whose last reads (of s_{t+1}
// and δ_{t+2}) were step t + 1's, before its barrier. With lanes (LANES = L > 1, see
// forward.wgsl) lane l's partial sums go where the finisher will write: those of P s_t into
// s_{t−1}'s vector, those of Wᵀ δ_{t+1} into δ_t's, at l·SEQS·d + k·d + i; after a barrier
// the finisher of unit i adds them in lane order and writes over lane 0's.
//
// Bounded segments as in the two kernels: a launch runs the steps dims.first,
// dims.first − 1, … (dims.count of them); a segment below the top starts from dv_{first}
// in `carry` [B, d] (in f32, whatever the storage) and from δ_{first+1} in the δ history.
//
// Layout: pw = [Pᵀ; W], both [d, d], one binding (transpose.wgsl writes both: Pᵀ from P,
// W from the forward pass's Wᵀ), so include/dot.wgsl's single matrix serves both products
// (W is rows d … 2d − 1, column c = d·d + i). h and dv [T+1, B, d'] (d' = hist_stride(d)),
// g_T [B, d], δ and e [T, B, d] (step t at row t − 1), carry [B, d]; the rows of a
// workgroup's sequences are consecutive in each. dv is stored multiplied by dims.dv_scale,
// as target_sweep.wgsl stores it.

// Invocations per workgroup: 64, 128 or 256 a lane, matched to d (gpu::kernel sets it with
// LANES: `Packing::new`).
override WG: u32 = 256u;

// Sequences per workgroup: 1, 2, 4, 8 or 16 (at most MAX_SEQS), set per pipeline.
override SEQS: u32 = 1u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

// Whether the loop keeps its invocation's chunk of its column(s) in registers where they fit
// (include/dot.wgsl, REG_BLOCKS), set per pipeline: `gpu::packing::Packing::registers`,
// which leaves it off where the registers would crowd the workgroup (a driver then spills).
override REGISTERS: bool = false;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, MAX_SEQS),
// include/dot.wgsl (columns_dot8, column_rest, hsum, lane_chunk; the operands are
// dot_matrix and dot_vector below), include/activation.wgsl (clamp_eps),
// include/targets.wgsl (offset_bracket, zero_rows) and the history storage (HIST_F16,
// hist_*): include/history.wgsl.

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
    // The power of two dv is stored multiplied by (1 for f32 storage).
    dv_scale: f32,
    // This segment's steps: the first (T … 1) and how many.
    first: u32,
    count: u32,
    // Steps per block of staged loads (0: none), and floats per vector: LANES·SEQS·d.
    block: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> pw: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<HistWord>;
@group(0) @binding(3) var<storage, read> g_top: array<f32>;
@group(0) @binding(4) var<storage, read_write> dv: array<HistWord>;
@group(0) @binding(5) var<storage, read_write> carry: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;
@group(0) @binding(7) var<storage, read_write> err: array<f32>;

// s (two vectors, alternating), δ (two vectors, alternating), with f16 storage dv (two
// vectors, alternating), then the stage.
var<workgroup> fused_buf: array<f32, 2u * MAX_HIDDEN>;

// Where s_t and δ_t sit in `fused_buf`.
fn s_block(t: u32) -> u32 {
    return (t & 1u) * dims.slot;
}

fn delta_block(t: u32) -> u32 {
    return (2u + (t & 1u)) * dims.slot;
}

// Where dv_t waits for its row's stores (f16 storage only).
fn dv_block(t: u32) -> u32 {
    return (4u + (t & 1u)) * dims.slot;
}

// Where the stage starts: after the vectors.
fn stage_start() -> u32 {
    return select(4u, 6u, HIST_F16) * dims.slot;
}

// −dv_t as bptt.wgsl injects it: read back from the history, which holds it rounded to
// f16 with f16 storage (dv_scale is a power of two, so the scaling is exact).
fn injection(dvt: f32) -> f32 {
    if HIST_F16 {
        return -hist_value(hist_pair(dvt * dims.dv_scale, 0.0), 0u) * (1.0 / dims.dv_scale);
    }
    return -dvt;
}

// dv_t as the row t of dv of the workgroup's n sequences, from dv_block(t), two units a
// word (f16 storage only; the rows are padded to even length). Called after a barrier:
// the words pair units that other invocations finished.
fn store_pairs(t: u32, n: u32, s0: u32, lid: u32) {
    let d = dims.hidden;
    let w = hist_stride(d) >> 1u;
    let row = (t * dims.batch + s0) * hist_stride(d);
    for (var e = lid; e < n * w; e += WG) {
        let k = e / w;
        let i = 2u * (e - k * w);
        let at = dv_block(t) + k * d + i;
        let next = select(0.0, fused_buf[at + 1u], i + 1u < d);
        dv[hist_word(row) + e] = hist_pair(fused_buf[at] * dims.dv_scale, next * dims.dv_scale);
    }
}

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

// h_{t−1−j} of unit lid of the workgroup's n sequences for the `steps` steps of a block from
// step t (j < steps), into the invocation's part of the stage: sequence k's at
// stage_start() + (j·n + k)·d + lid. At most STAGE_LOADS loads (the host sizes the blocks
// so), all issued before the first store: a constant count, which the drivers unroll.
fn stage_block(t: u32, steps: u32, n: u32, s0: u32, lid: u32) {
    let d = dims.hidden;
    let count = steps * n;
    var loaded: array<f32, STAGE_LOADS>;
    for (var r = 0u; r < STAGE_LOADS; r++) {
        if r < count {
            let j = r / n;
            loaded[r] = load_h(((t - 1u - j) * dims.batch + s0 + r - j * n) * hist_stride(d) + lid);
        }
    }
    for (var r = 0u; r < STAGE_LOADS; r++) {
        if r < count {
            fused_buf[stage_start() + r * d + lid] = loaded[r];
        }
    }
}

// include/dot.wgsl's operands: [Pᵀ; W] and fused_buf.
fn dot_matrix(e: u32) -> f32 {
    return pw[e];
}

fn dot_vector(j: u32) -> f32 {
    return fused_buf[j];
}

// What the finisher of a unit of one sequence carries through a step: h_t, h_{t−1} (loaded
// before the products) and dv_t.
struct Unit {
    ht: f32,
    h_prev: f32,
    dv: f32,
}

// Step t of unit i of the workgroup's sequence k (sequence s0 + k), from `sums`, the
// eight-term parts of (P s_t)_i (when flags.x: the sweep steps, t ≥ 2) and of
// (Wᵀ δ_{t+1})_i (when flags.y: below the top): dv_{t−1} into the history and the unit's
// registers, its bracket s_{t−1} (if a sweep step follows), e_t and δ_t into their
// histories and δ_t into its vector. The orders of target_sweep.wgsl's and bptt.wgsl's
// finishes. Returns the unit with dv_{t−1}.
fn finish(t: u32, s0: u32, k: u32, i: u32, flags: vec2<bool>, sums: vec2<f32>, unit: Unit) -> Unit {
    let d = dims.hidden;
    let nb = dims.batch;
    var next = unit;
    if flags.x {
        let dv_prev = column_rest(sums.x, i, d, s_block(t) + k * d);
        if HIST_F16 {
            fused_buf[dv_block(t - 1u) + k * d + i] = dv_prev;
        } else {
            dv[((t - 1u) * nb + s0 + k) * hist_stride(d) + i] = hist_f32(dv_prev);
        }
        if t > 2u {
            fused_buf[s_block(t - 1u) + k * d + i] = offset_bracket(dims.mode, unit.h_prev, dv_prev, 0.0, false);
        }
        next.dv = dv_prev;
    }
    var e = injection(unit.dv);
    if flags.y {
        e = column_rest(e, d * d + i, d, delta_block(t + 1u) + k * d) + sums.y;
    }
    let dt = (1.0 - unit.ht * unit.ht) * e;
    let out = ((t - 1u) * nb + s0 + k) * d + i;
    delta[out] = dt;
    err[out] = e;
    fused_buf[delta_block(t) + k * d + i] = dt;
    return next;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The workgroup's sequences s0 .. s0 + n − 1.
    let s0 = wg.x * SEQS;
    let n = min(SEQS, dims.batch - s0);
    let d = dims.hidden;
    let nb = dims.batch;
    let stride = hist_stride(d);
    let first = dims.first;
    let top = first == dims.steps;
    // Unit lid of each sequence: dv_first (the top offsets, or where the previous segment
    // stopped), stored at the top, and its bracket s_first.
    var units: array<Unit, MAX_SEQS>;
    if top {
        zero_rows(s0 * stride, n, lid);
    }
    if lid < d {
        for (var k = 0u; k < SEQS; k++) {
            if k < n {
                let at = (s0 + k) * d + lid;
                let dvt = select(carry[at], -dims.lr_target * g_top[at], top);
                units[k].dv = dvt;
                if top && HIST_F16 {
                    fused_buf[dv_block(first) + k * d + lid] = dvt;
                } else if top {
                    dv[((first * nb) + s0 + k) * stride + lid] = hist_f32(dvt);
                }
                if first >= 2u {
                    let ht = load_h((first * nb + s0 + k) * stride + lid);
                    fused_buf[s_block(first) + k * d + lid] = offset_bracket(dims.mode, ht, dvt, 0.0, false);
                }
            }
        }
    }
    // Below the top, δ_{first+1} from the history the previous segment wrote.
    if !top {
        let above = (first * nb + s0) * d;
        for (var e = lid; e < n * d; e += WG) {
            fused_buf[delta_block(first + 1u) + e] = delta[above + e];
        }
    }
    // The set-up wrote across the sequences' units: all of it must be visible before the
    // steps' reads (and the stores of the top row's pairs).
    workgroupBarrier();
    if top && HIST_F16 {
        store_pairs(first, n, s0, lid);
    }
    // This invocation's lane of its unit and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    let i = lid / LANES;
    // The lane's chunks of column i of Pᵀ and of W in registers for the whole launch, where
    // they fit (include/dot.wgsl, REG_BLOCKS).
    let resident = REGISTERS && column_fits_registers(d, LANES, WG);
    var p_col: array<vec4<f32>, 2u * REG_BLOCKS>;
    var w_col: array<vec4<f32>, 2u * REG_BLOCKS>;
    if resident && i < d {
        p_col = column_registers(i, d, chunk);
        w_col = column_registers(d * d + i, d, chunk);
    }
    let end = first - dims.count;
    // Step t's h_t is step t + 1's h_{t−1}: before the first step, h_first waits in h_prev.
    if lid < d {
        for (var k = 0u; k < SEQS; k++) {
            if k < n {
                units[k].h_prev = load_h((first * nb + s0 + k) * stride + lid);
            }
        }
    }
    // The steps of the current block done before step t.
    var q = 0u;
    for (var t = first; t > end; t--) {
        // The sweep's steps are T … 2; the BPTT's T … 1, through time below the top.
        let flags = vec2<bool>(t >= 2u, t < dims.steps);
        if lid < d {
            if dims.block > 0u && q == 0u {
                stage_block(t, min(dims.block, t - end), n, s0, lid);
            }
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    units[k].ht = units[k].h_prev;
                    if dims.block > 0u {
                        units[k].h_prev = fused_buf[stage_start() + (q * n + k) * d + lid];
                    } else {
                        units[k].h_prev = load_h(((t - 1u) * nb + s0 + k) * stride + lid);
                    }
                }
            }
        }
        q += 1u;
        if q == dims.block {
            q = 0u;
        }
        if i < d {
            // The lane's parts of (P s_t)_i and (Wᵀ δ_{t+1})_i of all SEQS sequences, one
            // pass over each matrix's column i. Past the last sequence (k ≥ n) they sum
            // what fused_buf holds there, never used.
            var acc_p: array<vec4<f32>, MAX_SEQS>;
            var acc_w: array<vec4<f32>, MAX_SEQS>;
            if flags.x && resident {
                acc_p = columns_dot8_registers(p_col, s_block(t), d, SEQS, chunk);
            } else if flags.x {
                acc_p = columns_dot8(i, d, s_block(t), d, SEQS, chunk);
            }
            if flags.y && resident {
                acc_w = columns_dot8_registers(w_col, delta_block(t + 1u), d, SEQS, chunk);
            } else if flags.y {
                acc_w = columns_dot8(d * d + i, d, delta_block(t + 1u), d, SEQS, chunk);
            }
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    let sums = vec2<f32>(hsum(acc_p[k]), hsum(acc_w[k]));
                    if LANES == 1u {
                        units[k] = finish(t, s0, k, i, flags, sums, units[k]);
                    } else {
                        let part = lane * SEQS * d + k * d + i;
                        fused_buf[s_block(t - 1u) + part] = sums.x;
                        fused_buf[delta_block(t) + part] = sums.y;
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
                        var sums = vec2<f32>(fused_buf[s_block(t - 1u) + at], fused_buf[delta_block(t) + at]);
                        for (var l = 1u; l < LANES; l++) {
                            let part = l * SEQS * d + at;
                            sums += vec2<f32>(fused_buf[s_block(t - 1u) + part], fused_buf[delta_block(t) + part]);
                        }
                        units[k] = finish(t, s0, k, lid, flags, sums, units[k]);
                    }
                }
            }
        }
        // Everyone has read s_t and δ_{t+1} and written s_{t−1} and δ_t (and dv_{t−1}).
        workgroupBarrier();
        if HIST_F16 && flags.x {
            store_pairs(t - 1u, n, s0, lid);
        }
    }
    // dv of the segment's last step, for the next segment.
    if lid < d {
        for (var k = 0u; k < SEQS; k++) {
            if k < n {
                carry[(s0 + k) * d + lid] = units[k].dv;
            }
        }
    }
}
