// Forward pass of the tanh RNN, fused over time (twin of src/cpu/forward.rs).
//
//     h_0 = 0,   h_t = tanh(W h_{t-1} + U x_t + b),   t = 1..T
//
// One workgroup carries SEQS consecutive sequences (the last one fewer when B is not a
// multiple of SEQS) and walks t = 1..T for all of them; their h_{t-1} sit in workgroup
// memory because every unit reads all of it. Invocation `lid` owns units lid, lid + WG,
// ... (d may exceed the workgroup size) of every sequence of its workgroup. It reads Wᵀ
// (transpose.wgsl writes it first), so that in Σ_j W[i][j] h_j neighbouring invocations
// read neighbouring addresses.
//
// Why several sequences per workgroup (SEQS, gpu::forward picks it): with one, every
// workgroup reads all of Wᵀ at every step, B·d² values a step from the cache, which bounds
// the loop at large B and d (docs/PERFORMANCE.md, "Sequences per workgroup"). With SEQS,
// each element of Wᵀ an invocation loads serves the SEQS sequences (include/dot.wgsl's
// columns_dot8: a small matrix product per step instead of SEQS matrix–vector products),
// so the cache traffic is divided by SEQS, at the price of ⌈B/SEQS⌉ workgroups instead of
// B. Each sequence's sums are formed in the same order as with SEQS = 1, so SEQS changes
// no result. (It pays on llvmpipe; on GPUs the added serial work per step costs more than
// the traffic saved, so there the host's `auto` takes SEQS = 1 and lanes instead, below.)
//
// The dot products are include/dot.wgsl's, eight terms per loop iteration (see there for
// llvmpipe's loop cap, which bounds the steps of one segment; gpu::loops charges SEQS
// times the work per step).
//
// Bounded segments: one launch runs the steps dims.first .. dims.first + dims.count − 1 of
// the loop (gpu::segments picks how many, so that no launch runs too long), and the host
// records the launches of all segments in order. The state a segment hands to the next is
// h of its last step, kept in `carry` [B, d] in f32: the history may hold it rounded to
// f16, and the recursion must go on from the f32 value, as one long launch would.
//
// The states ping-pong between the two halves of `h_buf`: step t reads h_{t-1} from one
// half and writes h_t into the other, so a single barrier per step separates the reads
// of h_{t-1} from the writes of h_{t+1} into the same half. A half holds the workgroup's
// sequences one after another (sequence k of the workgroup at k·d), so SEQS·d ≤ MAX_HIDDEN
// (the host checks it): the workgroup memory is 2·MAX_HIDDEN floats whatever SEQS. After
// the barrier the whole of h_t is visible to every invocation, which is what the f16
// history needs: two neighbouring units share a 32-bit word there, and one invocation
// must write both. The recursion itself always runs on the f32 values in workgroup
// memory; only the stored history is rounded.
//
// Lanes per unit (LANES, gpu::forward picks it): with LANES = L > 1 each unit's dot
// product is split over L invocations ("lanes"), lane l summing include/dot.wgsl's
// lane_chunk l of the eight-term part, so that a step's serial chain is about d/L terms
// instead of d (on a GPU the steps are pure latency: many idle invocations cost less than
// a long chain). The lanes write their partial sums to the half of h_buf that step t writes
// h_t into, lane l's of unit i of sequence k at l·SEQS·d + k·d + i: nobody reads that half
// during step t before h_t is complete (its last reads, of h_{t−2}, were step t − 1's,
// before that step's final barrier; its stores of h_{t−1} read the other half). After a
// barrier, the finisher of unit i (invocation i mod WG) adds to the input part and the
// last d % 8 terms the L partials in lane order (deterministic, but not the order of one
// lane: results change within f32 rounding with L), and writes h_t over lane 0's partial:
// only that finisher reads the partials of unit i, so the in-place write races with no
// one. Hence LANES·SEQS·d ≤ MAX_HIDDEN (the host checks it). At LANES = 1 the lane code
// is compiled out: each invocation finishes its units right away, as before lanes existed
// (the same loops and barriers, the same sums).
//
// Layout, row-major: Wᵀ [d, d], U [d, p], x [T, B, p], h [T+1, B, d'] (the whole history;
// step t of sequence s starts at element (t*B + s)*d'), where d' = hist_stride(d);
// carry [B, d]. The rows of a workgroup's sequences are consecutive in x, h and carry.

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

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (column_dot8, column_rest; the operands are dot_matrix and dot_vector below),
// include/activation.wgsl (safe_tanh) and the history storage (HIST_F16, hist_*):
// include/history.wgsl.

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    // This segment's steps: first (1 … T) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> h: array<HistWord>;
@group(0) @binding(6) var<storage, read_write> carry: array<f32>;
// PyTorch's second bias: the cell adds b_ih (`bias`) and b_hh.
@group(0) @binding(7) var<storage, read> bias_hh: array<f32>;

// The last d % 8 terms of column lid of Wᵀ, where the loop keeps its columns in registers
// (the finisher of unit lid adds them; include/dot.wgsl, rest_registers).
var<private> w_rest: array<f32, 8>;

// Two d-vectors: h_{t-1} and h_t, alternating halves.
var<workgroup> h_buf: array<f32, 2u * MAX_HIDDEN>;

// include/dot.wgsl's operands: Wᵀ, and h_buf (h_{t-1} of the workgroup's sequence k is
// at `prev` + k·d).
fn dot_matrix(e: u32) -> f32 {
    return wt[e];
}

fn dot_vector(j: u32) -> f32 {
    return h_buf[j];
}

// Writes h_buf[half .. half + n·d], the states of the workgroup's n sequences, as the
// history rows starting at element `row` (the sequences' rows are consecutive). Called
// after a barrier: f16 words pair units that other invocations computed.
fn store_rows(row: u32, half: u32, n: u32, lid: u32) {
    let d = dims.hidden;
    if HIST_F16 {
        // Rows padded to even length: w = d'/2 words a row, each word two units of one row.
        let w = hist_stride(d) >> 1u;
        for (var e = lid; e < n * w; e += WG) {
            let k = e / w;
            let i = 2u * (e - k * w);
            let at = half + k * d + i;
            let next = select(0.0, h_buf[at + 1u], i + 1u < d);
            h[hist_word(row) + e] = hist_pair(h_buf[at], next);
        }
    } else {
        for (var e = lid; e < n * d; e += WG) {
            h[row + e] = hist_f32(h_buf[half + e]);
        }
    }
}

// The input part of unit i of sequence s at step t, U x_t + b (both biases): what the sums
// over h_{t−1} go onto. It does not wait for h_{t−1}, so the steps load it before their
// products (its loads' latency then overlaps the product instead of following it), and
// add the last d % 8 terms of W h_{t−1} (column_rest) to it after.
fn input_part(t: u32, s: u32, i: u32) -> f32 {
    let p = dims.input;
    let x_row = ((t - 1u) * dims.batch + s) * p;
    var a = bias[i] + bias_hh[i];
    for (var m = 0u; m < p; m++) {
        a += u[i * p + m] * x[x_row + m];
    }
    return a;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The workgroup's sequences s0 .. s0 + n − 1.
    let s0 = wg.x * SEQS;
    let n = min(SEQS, dims.batch - s0);
    let d = dims.hidden;
    let stride = hist_stride(d);
    let first = dims.first;
    let last = first + dims.count - 1u;
    // h_{first−1} into its half: h_0 = 0, or the previous segment's last states.
    let start = ((first - 1u) & 1u) * MAX_HIDDEN;
    for (var e = lid; e < n * d; e += WG) {
        h_buf[start + e] = select(carry[s0 * d + e], 0.0, first == 1u);
    }
    workgroupBarrier();
    if first == 1u {
        store_rows(s0 * stride, 0u, n, lid);
    }
    // This invocation's lane of its units and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    // The lane's chunk of column lid / LANES of Wᵀ in registers for the whole launch, where
    // it fits (include/dot.wgsl, REG_BLOCKS).
    let resident = REGISTERS && column_fits_registers(d, LANES, WG);
    var w_col: array<vec4<f32>, 2u * REG_BLOCKS>;
    if resident && lid / LANES < d {
        w_col = column_registers(lid / LANES, d, chunk);
    }
    if resident && lid < d {
        w_rest = rest_registers(lid, d);
    }
    for (var t = first; t <= last; t++) {
        // h_{t-1} in one half, h_t into the other.
        let prev = ((t - 1u) & 1u) * MAX_HIDDEN;
        let next = (t & 1u) * MAX_HIDDEN;
        // With lanes, the finisher's input parts of its first unit (lid), loaded now.
        var fin: array<f32, MAX_SEQS>;
        if LANES > 1u && lid < d {
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    fin[k] = input_part(t, s0 + k, lid);
                }
            }
        }
        for (var i = lid / LANES; i < d; i += WG / LANES) {
            var inputs: array<f32, MAX_SEQS>;
            if LANES == 1u {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        inputs[k] = input_part(t, s0 + k, i);
                    }
                }
            }
            // The lane's part of (W h_{t-1})_i of all SEQS sequences from one pass over
            // its chunk of column i of Wᵀ. Past the last sequence (k ≥ n) it sums what
            // the half holds there, never stored.
            var acc: array<vec4<f32>, MAX_SEQS>;
            if resident {
                acc = columns_dot8_registers(w_col, prev, d, SEQS, chunk);
            } else {
                acc = columns_dot8(i, d, prev, d, SEQS, chunk);
            }
            // SEQS iterations rather than n, which the drivers unroll (at SEQS = 1 the loop
            // is gone: llvmpipe's loop count stays what it was before this loop existed).
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    if LANES == 1u {
                        // The partial sums onto the input part one pair at a time.
                        let sum = acc[k];
                        let a = column_rest_kept(inputs[k], resident, w_rest, i, d, prev + k * d);
                        h_buf[next + k * d + i] = safe_tanh(a + (sum.x + sum.y) + (sum.z + sum.w));
                    } else {
                        h_buf[next + lane * SEQS * d + k * d + i] = hsum(acc[k]);
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
                        let at = next + k * d + i;
                        var a = fin[k];
                        if i != lid {
                            a = input_part(t, s0 + k, i);
                        }
                        a = column_rest_kept(a, resident, w_rest, i, d, prev + k * d);
                        for (var l = 0u; l < LANES; l++) {
                            a += h_buf[at + l * SEQS * d];
                        }
                        h_buf[at] = safe_tanh(a);
                    }
                }
            }
        }
        // Everyone has read h_{t-1} and written h_t: the next step may overwrite h_{t-1}'s
        // half (nobody reads it after this point) and anyone may store any unit of h_t.
        workgroupBarrier();
        store_rows((t * dims.batch + s0) * stride, next, n, lid);
    }
    // After the last barrier every state of the workgroup is visible to every invocation
    // (the set-up's, when the segment has no steps).
    let end = (last & 1u) * MAX_HIDDEN;
    for (var e = lid; e < n * d; e += WG) {
        carry[s0 * d + e] = h_buf[end + e];
    }
}
