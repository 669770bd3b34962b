// The backward target sweep, fused over time (twin of src/cpu/target_sweep.rs).
//
//     v_T = h_T - γ_h g_T, then for t = T, ..., 2:
//     linearized:  v_{t-1} = h_{t-1} + P [(v_t - h_t) ⊘ (1 - clamp(h_t)²)]
//     difference:  v_{t-1} = h_{t-1} + P [atanh(clamp v_t) - atanh(clamp h_t)]
//     plain:       v_{t-1} = P [atanh(clamp v_t) - U x_t - b]
// (difference mode is f⁻¹(clamp v_t) - f⁻¹(clamp h_t) with the U x_t + b terms cancelled.)
// With outputs at every step (dims.local = 1, docs/ALGORITHM.md §13) g_top holds g_t for
// every step [T, B, d], v_T = h_T - γ_h g_T, and each step also carries back its own
// target v̂_t = h_t - γ_h g_t, whose offset -γ_h g_t joins dv_t in the bracket:
//     linearized:  P [(dv_t - γ_h g_t) ⊘ (1 - clamp(h_t)²)]
//     difference:  P [atanh(clamp v_t) + atanh(clamp v̂_t) - 2 atanh(clamp h_t)]
//     plain:       P [atanh(clamp v_t) + atanh(clamp v̂_t) - 2 (U x_t + b)]
//
// It stores the offsets dv_t = v_t - h_t, not v_t: with a small target step γ_h (1e-4
// in the published pixel-MNIST setting) v_t - h_t sits below f32's resolution of h_t,
// so forming v_t and subtracting h_t again would leave mostly rounding error. From the
// offsets, the linearized and difference modes and the surrogate's h_t - v_t = -dv_t
// need no cancelling subtraction. dv_0 = 0 (v_0 = h_0, never used).
//
// One workgroup carries SEQS consecutive sequences (the last one fewer when B is not a
// multiple of SEQS) and walks t downwards for all of them; their bracketed vectors s sit
// in workgroup memory since every unit of dv_{t-1} reads all of its sequence's s. The
// offsets dv_t of the step in hand stay in workgroup memory too, in f32 whatever the
// storage: the recursion never reads back the (possibly rounded) history it writes. Both
// arrays hold the workgroup's sequences one after another (sequence k at k·d), so
// SEQS·d ≤ MAX_HIDDEN (the host checks it). Invocation `lid` owns units lid, lid + WG, ...
// of every sequence in both loops, so it reads only the dv_t values it wrote itself; the
// stores of a finished row follow a barrier, since an f16 word pairs two units that
// different invocations computed.
// Why several sequences per workgroup (SEQS, the same count as forward.wgsl's): with one,
// every workgroup reads all of Pᵀ at every step, B·d² values a step from the cache; with
// SEQS, each element of Pᵀ an invocation loads serves the SEQS sequences (include/dot.wgsl's
// columns_dot8), dividing that traffic by SEQS (docs/PERFORMANCE.md, "Sequences per
// workgroup"). Each sequence's sums are formed in the same order as with SEQS = 1
// (column_dot's), so SEQS changes no result.
// Bounded segments: one launch runs the steps t = dims.first, dims.first − 1, … (dims.count
// of them; gpu::segments picks how many, gpu::loops charging SEQS times the work per step),
// the first segment (dims.first = T) after setting up dv_0 and dv_T. A segment hands dv of
// its last step to the next in `carry` [B, d], in f32: the history may hold it rounded to
// f16, and the sweep must go on from the f32 value.
// Lanes per unit (LANES, the same count as forward.wgsl's; see there for why): with
// LANES = L > 1, lane l of unit i sums lane_chunk l of (P s)_i and writes it to dv_cur,
// lane l's of sequence k at l·SEQS·d + k·d + i (so LANES·SEQS·d ≤ MAX_HIDDEN, the host
// checks it). dv_cur is free then: dv_t's last reads (the brackets, the previous rows'
// stores) come before the barrier that precedes the product. After a second barrier the
// finisher of unit i (invocation i mod WG) adds the L partials in lane order, then the last
// d % 8 terms, and writes dv_{t−1} over lane 0's partial: only that finisher reads the
// partials of unit i. At LANES = 1 the lane code is compiled out and the kernel runs the
// loops, barriers and sums it ran before lanes existed.
// It reads Pᵀ (transpose.wgsl writes it first) for coalesced reads, and takes eight terms
// of P s per loop iteration (include/dot.wgsl; see there for llvmpipe's loop cap).
// Layout: Pᵀ [d, d], U [d, p], x [T, B, p], h and dv [T+1, B, d'] (d' = hist_stride(d)),
// g_T [B, d] (local: g [T, B, d]), carry [B, d]; the rows of a workgroup's sequences are
// consecutive in each. dv is stored multiplied by dims.dv_scale, a power of two (1 for f32
// storage) that lifts small offsets (they scale with γ_h) out of f16's subnormal range.

// Invocations per workgroup: 64, 128 or 256 a lane, matched to d (gpu::kernel sets it with
// LANES: `Packing::new`).
override WG: u32 = 256u;

// Sequences per workgroup: 1, 2, 4, 8 or 16 (at most MAX_SEQS), set per pipeline.
override SEQS: u32 = 1u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (columns_dot8, column_rest, hsum; the operands are dot_matrix and dot_vector below),
// include/activation.wgsl (clamp_eps), include/targets.wgsl (the brackets of the offset
// modes, zero_rows) and the history storage (HIST_F16, hist_*): include/history.wgsl.

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
    dv_scale: f32,
    // This segment's steps: the first (T … 2, or T = 1 with none) and how many.
    first: u32,
    count: u32,
    // 1: outputs at every step, g_top is g [T, B, d] and every step has a local target.
    local: u32,
    // Where PyTorch's second bias b_hh starts in `bias`, which binds b_ih … b_hh (one
    // binding for both keeps the kernel at eight storage buffers).
    hh_offset: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> p_t: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> h: array<HistWord>;
@group(0) @binding(6) var<storage, read> g_top: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<HistWord>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;

var<workgroup> s_vec: array<f32, MAX_HIDDEN>;
// dv_t of the step in hand, then dv_{t-1}.
var<workgroup> dv_cur: array<f32, MAX_HIDDEN>;

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

// include/dot.wgsl's operands: Pᵀ and s (of the workgroup's sequence k at k·d).
fn dot_matrix(e: u32) -> f32 {
    return p_t[e];
}

fn dot_vector(j: u32) -> f32 {
    return s_vec[j];
}

// Writes dv_cur[0 .. n·d] (times dv_scale), the offsets of the workgroup's n sequences, as
// the rows of dv starting at element `row` (the sequences' rows are consecutive). Called after a
// barrier: f16 words pair units that other invocations computed.
fn store_rows(row: u32, n: u32, lid: u32) {
    let d = dims.hidden;
    if HIST_F16 {
        // Rows padded to even length: w = d'/2 words a row, each word two units of one row.
        let w = hist_stride(d) >> 1u;
        for (var e = lid; e < n * w; e += WG) {
            let k = e / w;
            let i = 2u * (e - k * w);
            let at = k * d + i;
            let next = select(0.0, dv_cur[at + 1u], i + 1u < d);
            dv[hist_word(row) + e] = hist_pair(dv_cur[at] * dims.dv_scale, next * dims.dv_scale);
        }
    } else {
        for (var e = lid; e < n * d; e += WG) {
            dv[row + e] = hist_f32(dv_cur[e] * dims.dv_scale);
        }
    }
}

// What the bracket of unit j of sequence s at step t reads from storage: h_t and the local
// target's offset v̂_t − h_t (0 without outputs at every step). The steps load their first
// unit's one step ahead (see main).
fn bracket_inputs(t: u32, s: u32, j: u32) -> vec2<f32> {
    let d = dims.hidden;
    let ht = load_h((t * dims.batch + s) * hist_stride(d) + j);
    var own = 0.0;
    if dims.local == 1u {
        own = -dims.lr_target * g_top[((t - 1u) * dims.batch + s) * d + j];
    }
    return vec2<f32>(ht, own);
}

// dv_{t−1} of unit i of the workgroup's sequence k into dv_cur, from `sum`, the eight-term
// part of (P s)_i (column_dot's order: then the last d % 8 terms); `prev` is the
// sequence's row t − 1 in h.
fn finish(k: u32, i: u32, prev: u32, sum: f32) {
    let d = dims.hidden;
    var a = column_rest(sum, i, d, k * d);
    // Plain targets are absolute: their offset subtracts h_{t-1}.
    if dims.mode != LINEARIZED && dims.mode != DIFFERENCE {
        a -= load_h(prev + i);
    }
    dv_cur[k * d + i] = a;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The workgroup's sequences s0 .. s0 + n − 1.
    let s0 = wg.x * SEQS;
    let n = min(SEQS, dims.batch - s0);
    let d = dims.hidden;
    let p = dims.input;
    let stride = hist_stride(d);
    let top = dims.first == dims.steps;
    let top_row = select(s0, (dims.steps - 1u) * dims.batch + s0, dims.local == 1u) * d;
    // dv of the step in hand: the top offsets, or where the previous segment stopped.
    for (var e = lid; e < n * d; e += WG) {
        dv_cur[e] = select(carry[s0 * d + e], -dims.lr_target * g_top[top_row + e], top);
    }
    if top {
        zero_rows(s0 * stride, n, lid);
    }
    // The set-up wrote dv_cur across the sequences' units, not by owned units: all of it
    // must be visible before the stores below and the steps' reads.
    workgroupBarrier();
    if top {
        store_rows((dims.steps * dims.batch + s0) * stride, n, lid);
    }
    // This invocation's lane of its units and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    let end = dims.first - dims.count;
    // The bracket inputs of this invocation's first unit (lid) at the step in hand: loaded
    // during the step before, so that their latency overlaps that step's product instead of
    // opening this step's critical path.
    var ahead: array<vec2<f32>, MAX_SEQS>;
    if lid < d && dims.count > 0u {
        for (var k = 0u; k < SEQS; k++) {
            if k < n {
                ahead[k] = bracket_inputs(dims.first, s0 + k, lid);
            }
        }
    }
    for (var t = dims.first; t > end; t--) {
        // Row t − 1 of the workgroup's first sequence in h, dv and x.
        let prev0 = ((t - 1u) * dims.batch + s0) * stride;
        let x_row0 = ((t - 1u) * dims.batch + s0) * p;
        for (var j = lid; j < d; j += WG) {
            // SEQS iterations rather than n, which the drivers unroll (at SEQS = 1 the loop
            // is gone).
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    var inputs = ahead[k];
                    if j != lid {
                        inputs = bracket_inputs(t, s0 + k, j);
                    }
                    let ht = inputs.x;
                    let own = inputs.y;
                    let dvt = dv_cur[k * d + j];
                    var sj: f32;
                    if dims.mode == LINEARIZED || dims.mode == DIFFERENCE {
                        sj = offset_bracket(dims.mode, ht, dvt, own, dims.local == 1u);
                    } else {
                        var pre = atanh_f32(clamp_eps(ht + dvt)) - bias[j] - bias[dims.hh_offset + j];
                        if dims.local == 1u {
                            pre += atanh_f32(clamp_eps(ht + own)) - bias[j] - bias[dims.hh_offset + j];
                        }
                        // Each inverse subtracts U x_t.
                        let inverses = f32(1u + dims.local);
                        let x_row = x_row0 + k * p;
                        for (var m = 0u; m < p; m++) {
                            pre -= inverses * u[j * p + m] * x[x_row + m];
                        }
                        sj = pre;
                    }
                    s_vec[k * d + j] = sj;
                }
            }
        }
        if lid < d && t - 1u > end {
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    ahead[k] = bracket_inputs(t - 1u, s0 + k, lid);
                }
            }
        }
        // Also orders the previous rows' stores (reads of dv_cur) before the writes below.
        workgroupBarrier();
        for (var i = lid / LANES; i < d; i += WG / LANES) {
            // The lane's part of (P s)_i of all SEQS sequences from one pass over its chunk
            // of column i of Pᵀ. Past the last sequence (k ≥ n) it sums what s_vec holds
            // there, never used.
            let acc = columns_dot8(i, d, 0u, d, SEQS, chunk);
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    if LANES == 1u {
                        finish(k, i, prev0 + k * stride, hsum(acc[k]));
                    } else {
                        dv_cur[lane * SEQS * d + k * d + i] = hsum(acc[k]);
                    }
                }
            }
        }
        if LANES > 1u {
            // All partials written; each finisher reads only its own units' (see the top).
            workgroupBarrier();
            for (var i = lid; i < d; i += WG) {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        var sum = dv_cur[k * d + i];
                        for (var l = 1u; l < LANES; l++) {
                            sum += dv_cur[l * SEQS * d + k * d + i];
                        }
                        finish(k, i, prev0 + k * stride, sum);
                    }
                }
            }
        }
        // s_vec is rewritten by the next step only after everyone has used it, and all of
        // dv_{t-1} is in dv_cur before anyone stores it.
        workgroupBarrier();
        store_rows(prev0, n, lid);
    }
    // After the last barrier every offset of the workgroup is visible to every invocation
    // (the set-up's, when the segment has no steps).
    for (var e = lid; e < n * d; e += WG) {
        carry[s0 * d + e] = dv_cur[e];
    }
}
