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
// Blocks of steps (the host's gpu::blocks::forward sizes them so that all of it fits the
// workgroup memory): the states go round a ring of dims.block + 1 slots of dims.slot
// floats in `h_buf` (the segment's r-th step writes slot r mod (block + 1); h_{first−1}
// sits in slot 0), and the loop takes its global memory a block at a time. Before a block's
// first step the workgroup copies the block's inputs x_t (its sequences' rows, dims.block
// steps of them) into workgroup memory after the ring (`stage_inputs`, where dims.staged
// says they fit), and after its last step's barrier it stores the block's states to the
// history (`store_block`). Why: a global load on a step's chain may cost a memory round
// trip every step (a step took about 1 µs on an H200, far more than its arithmetic), while
// the loads and stores of a block are issued together and cost about one round trip
// (docs/PERFORMANCE.md, "Blocks of steps"). The sums are unchanged, bit for bit.
// Step t reads h_{t−1} from one slot and writes h_t into the next, so a single barrier per
// step separates the reads of h_{t−1} from the writes of the step that next uses its slot
// (block + 1 steps later); the block's stores read its slots after its last barrier, and
// the next step writes the one slot they do not read (h_{t−1} of the block's first step).
// A slot holds the workgroup's sequences one after another (sequence k of the workgroup
// at k·d), so LANES·SEQS·d ≤ dims.slot ≤ MAX_HIDDEN (the host checks it). After the
// barrier the whole of h_t is visible to every invocation, which is what the f16 history
// needs: two neighbouring units share a 32-bit word there, and one invocation must write
// both. The recursion itself always runs on the f32 values in workgroup memory; only the
// stored history is rounded.
//
// Lanes per unit (LANES, gpu::forward picks it): with LANES = L > 1 each unit's dot
// product is split over L invocations ("lanes"), lane l summing include/dot.wgsl's
// lane_chunk l of the eight-term part, so that a step's serial chain is about d/L terms
// instead of d (on a GPU the steps are pure latency: many idle invocations cost less than
// a long chain). The lanes write their partial sums to the slot that step t writes h_t
// into, lane l's of unit i of sequence k at l·SEQS·d + k·d + i: nobody reads that slot
// during step t before h_t is complete (the state it held, block + 1 steps earlier, was
// last read before step t − 1's final barrier; the stores of a block that ended at step
// t − 1 read other slots). After a
// barrier, the finisher of unit i (invocation i mod WG) adds to the input part and the
// last d % 8 terms the L partials in lane order (deterministic, but not the order of one
// lane: results change within f32 rounding with L), and writes h_t over lane 0's partial:
// only that finisher reads the partials of unit i, so the in-place write races with no
// one. Hence LANES·SEQS·d ≤ dims.slot (the host checks it). At LANES = 1 the lane code
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
    // Steps per block, floats per slot of the ring, and 1 when the inputs are staged in
    // workgroup memory (0: read from x at each step): gpu::blocks::forward.
    block: u32,
    slot: u32,
    staged: u32,
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

// The ring of states, then the staged inputs of a block.
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

// Where the staged inputs start: after the ring.
fn stage_start() -> u32 {
    return (dims.block + 1u) * dims.slot;
}

// Copies the inputs of the block from step `start` (dims.block steps, fewer at `last`),
// the n sequences' rows of each step, into workgroup memory (step q of the block at
// stage_start() + q·n·p). Each invocation loads at most STAGE_LOADS values
// (include/limits.wgsl; the host sizes the blocks so), all of them before it stores any:
// a constant count, which the drivers unroll, so that the loads are in flight together.
fn stage_inputs(start: u32, last: u32, n: u32, s0: u32, lid: u32) {
    if dims.staged == 0u {
        return;
    }
    let p = dims.input;
    let row = n * p;
    let total = min(dims.block, last + 1u - start) * row;
    var loaded: array<f32, STAGE_LOADS>;
    for (var r = 0u; r < STAGE_LOADS; r++) {
        let e = lid + r * WG;
        if e < total {
            let q = e / row;
            loaded[r] = x[((start + q - 1u) * dims.batch + s0) * p + (e - q * row)];
        }
    }
    for (var r = 0u; r < STAGE_LOADS; r++) {
        let e = lid + r * WG;
        if e < total {
            h_buf[stage_start() + e] = loaded[r];
        }
    }
}

// Where the input row of the workgroup's sequence k at step t, q steps into its block,
// starts: in the stage, or in x.
fn input_row(t: u32, q: u32, n: u32, s0: u32, k: u32) -> u32 {
    if dims.staged == 1u {
        return stage_start() + (q * n + k) * dims.input;
    }
    return ((t - 1u) * dims.batch + s0 + k) * dims.input;
}

// The input part of unit i of a sequence at a step, U x_t + b (both biases), from the
// input row at `row` (input_row's): what the sums over h_{t−1} go onto. It does not wait
// for h_{t−1}, so the steps form it before their products, and add the last d % 8 terms
// of W h_{t−1} (column_rest) to it after.
fn input_part(row: u32, i: u32) -> f32 {
    let p = dims.input;
    var a = bias[i] + bias_hh[i];
    for (var m = 0u; m < p; m++) {
        var xm: f32;
        if dims.staged == 1u {
            xm = h_buf[row + m];
        } else {
            xm = x[row + m];
        }
        a += u[i * p + m] * xm;
    }
    return a;
}

// Stores the states of a block's q steps, which end at step t in slot `cur`, to the
// history: called after the block's last barrier, which made all of them visible.
fn store_block(t: u32, q: u32, cur: u32, n: u32, s0: u32, lid: u32) {
    let ring = dims.block + 1u;
    let stride = hist_stride(dims.hidden);
    for (var j = 0u; j < q; j++) {
        // Step t + 1 − q + j, q − 1 − j slots before `cur` round the ring.
        let slot = (cur + ring - (q - 1u - j)) % ring;
        store_rows(((t + 1u - q + j) * dims.batch + s0) * stride, slot * dims.slot, n, lid);
    }
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
    // h_{first−1} into slot 0: h_0 = 0, or the previous segment's last states; and the
    // first block's inputs.
    for (var e = lid; e < n * d; e += WG) {
        h_buf[e] = select(carry[s0 * d + e], 0.0, first == 1u);
    }
    stage_inputs(first, last, n, s0, lid);
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
    // The slot of h_{t−1}, and the steps of the block done before step t.
    var cur = 0u;
    var q = 0u;
    for (var t = first; t <= last; t++) {
        // h_{t-1} in slot `cur`, h_t into the next one round the ring.
        let prev = cur * dims.slot;
        let slot = select(cur + 1u, 0u, cur == dims.block);
        let next = slot * dims.slot;
        // With lanes, the finisher's input parts of its first unit (lid), loaded now.
        var fin: array<f32, MAX_SEQS>;
        if LANES > 1u && lid < d {
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    fin[k] = input_part(input_row(t, q, n, s0, k), lid);
                }
            }
        }
        for (var i = lid / LANES; i < d; i += WG / LANES) {
            var inputs: array<f32, MAX_SEQS>;
            if LANES == 1u {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        inputs[k] = input_part(input_row(t, q, n, s0, k), i);
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
                            a = input_part(input_row(t, q, n, s0, k), i);
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
        // slot (nobody reads it after this point) and anyone may store any unit of h_t.
        workgroupBarrier();
        cur = slot;
        q += 1u;
        if q == dims.block || t == last {
            store_block(t, q, cur, n, s0, lid);
            q = 0u;
            // The next block's inputs, visible to all before its first step.
            if dims.staged == 1u && t < last {
                stage_inputs(t + 1u, last, n, s0, lid);
                workgroupBarrier();
            }
        }
    }
    // After the last barrier every state of the workgroup is visible to every invocation
    // (the set-up's, when the segment has no steps).
    for (var e = lid; e < n * d; e += WG) {
        carry[s0 * d + e] = h_buf[cur * dims.slot + e];
    }
}
