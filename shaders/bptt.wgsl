// Backpropagation through time, fused over time, for BP and for the TP surrogate
// (twin of src/cpu/bptt.rs). For t = T, ..., 1:
//
//     e_t = inject_t + [through time, t < T] Wᵀ δ_{t+1},   δ_t = (1 - h_t²) ⊙ e_t
//     inject_t = g_T at t = T and 0 elsewhere (BP), or h_t - v_t = -dv_t (TP surrogate;
//     the target sweep stores the offsets dv_t = v_t - h_t), or g_t at every step (BP
//     with outputs at every step; g_top then holds g [T, B, d])
//
// and writes the history δ [T, B, d] (step t at row (t-1)*B + s); the matmul kernel then
// reduces it over all T·B rows into ∇W = Δᵀ H_{0..T-1}, ∇U = Δᵀ X, ∇b = Δᵀ 1.
// It also writes the errors e [T, B, d] themselves: the diagnostics (‖∂ℓ/∂h_t‖ for BP,
// `tpri trace`'s error norms) reduce them later with sum_sq.wgsl, only when asked. One
// more store per element is cheaper than a reduction on every step's critical path, and
// e cannot be recovered from δ where h saturates (1 - h² = 0 in f32).
// One workgroup carries SEQS consecutive sequences (the last one fewer when B is not a
// multiple of SEQS). In the local mode there is no recursion, but the same loop serves (it
// is as cheap as the injection itself).
// Why several sequences per workgroup (SEQS, the same count as forward.wgsl's): with one,
// every workgroup reads all of W at every step, B·d² values a step from the cache; with
// SEQS, each element of W an invocation loads serves the SEQS sequences (include/dot.wgsl's
// columns_dot8), dividing that traffic by SEQS (docs/PERFORMANCE.md, "Sequences per
// workgroup"). Each sequence's sums are formed in the same order as with SEQS = 1, so SEQS
// changes no result.
// The δ vectors ping-pong between two vectors of dims.slot = LANES·SEQS·d floats at the
// start of `delta_buf`: step t reads δ_{t+1} from one and writes δ_t into the other
// (sequence k of the workgroup at k·d, so LANES·SEQS·d ≤ MAX_HIDDEN: the host checks it),
// so one barrier a step separates the reads of δ_{t+1} from the writes of δ_{t−1} into
// the same vector. δ_t goes
// from the invocation that forms it straight into workgroup memory: the recursion never
// reads back the history it stores (a round trip through global memory on every step's
// critical path, and a second barrier, until docs/PERFORMANCE.md's "BPTT without the
// round trip").
// The loads that do not wait for δ_{t+1} (the injection, h_t) come a block of steps at a
// time (dims.block, gpu::blocks::staged_steps; 0: none): before the first step of
// each block, the finisher of unit i loads its unit's inputs for all the block's steps at
// once into its own part of workgroup memory after the two vectors (`stage_block`), where
// the steps read them. The loads are issued together, so that their latency is paid about
// once a block, even where a driver waits for outstanding loads at every barrier
// (docs/PERFORMANCE.md, "Blocks of steps"). Only that invocation writes and reads its
// part, so the stage needs no barrier. The units an invocation owns beyond its first
// (d > WG), and every unit where not one step fits (forced packings only), load their
// inputs at each step: before the product at one lane, in the finishing with lanes.
// Bounded segments: one launch runs the steps t = dims.first, dims.first − 1, … (dims.count
// of them; gpu::segments picks how many, gpu::loops charging SEQS times the work per step).
// A segment below the top starts from δ_{first+1}, which the previous segment stored in f32
// (δ is never rounded), so the recursion goes on exactly as in one long launch.
// Lanes per unit (LANES, the same count as forward.wgsl's; see there for why): with
// LANES = L > 1, lane l of unit i sums lane_chunk l of (Wᵀ δ_{t+1})_i into the vector
// that step t writes δ_t into (lane l's of sequence k at l·SEQS·d + k·d + i; nobody reads
// that vector during step t: its last reads, of δ_{t+2}, were step t + 1's, before that
// step's barrier). After a
// barrier the finisher of unit i (invocation i mod WG) adds the last d % 8 terms to the
// injection and then the L partials in lane order, and writes δ_t over lane 0's partial:
// only that finisher reads the partials of unit i. At LANES = 1 the lane code is compiled
// out.
// Wᵀδ reads w[j*d + i]: neighbouring invocations (i) read neighbouring addresses, eight
// terms per loop iteration (include/dot.wgsl; see there for llvmpipe's loop cap).
// Layout: W [d, d], h and dv [T+1, B, d'] (d' = hist_stride(d); dv stored times
// dims.dv_scale), g_T [B, d] (or g [T, B, d]), δ and e [T, B, d]. The rows of a
// workgroup's sequences are consecutive in each.

// Invocations per workgroup: 64, 128 or 256 a lane, matched to d (gpu::kernel sets it with
// LANES: `Packing::new`).
override WG: u32 = 256u;
const TARGETS: u32 = 1u;
const STEPS: u32 = 2u;

// Sequences per workgroup: 1, 2, 4, 8 or 16 (at most MAX_SEQS), set per pipeline.
override SEQS: u32 = 1u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

// Whether the loop keeps its invocation's chunk of its column(s) in registers where they fit
// (include/dot.wgsl, REG_BLOCKS), set per pipeline: `gpu::packing::Packing::registers`,
// which leaves it off where the registers would crowd the workgroup (a driver then spills).
override REGISTERS: bool = false;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (columns_dot8, column_rest; the operands are dot_matrix and dot_vector below) and the
// history storage (HIST_F16, hist_*): include/history.wgsl.

struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    // 0: g_T at the top only (BP); 1: -dv_t at every step (TP); 2: g_t at every step.
    injection: u32,
    through_time: u32,
    // dv is stored multiplied by this power of two (1 for f32 storage).
    dv_scale: f32,
    // This segment's steps: the first (T … 1) and how many.
    first: u32,
    count: u32,
    // Steps per block of staged loads (0: none), and floats per vector: LANES·SEQS·d.
    block: u32,
    slot: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<HistWord>;
@group(0) @binding(3) var<storage, read> dv: array<HistWord>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> err: array<f32>;

// Two vectors: δ_{t+1} and δ_t (or the lanes' partial sums of Wᵀ δ_{t+1}), alternating;
// then the stage.
var<workgroup> delta_buf: array<f32, 2u * MAX_HIDDEN>;

// Where δ_t sits in delta_buf.
fn delta_at(t: u32) -> u32 {
    return (t & 1u) * dims.slot;
}

// Where the stage starts: after the two vectors.
fn stage_start() -> u32 {
    return 2u * dims.slot;
}

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

fn load_dv(i: u32) -> f32 {
    return hist_value(dv[hist_word(i)], i);
}

// include/dot.wgsl's operands: W and delta_buf (δ_{t+1} of the workgroup's sequence k at
// its half + k·d).
fn dot_matrix(e: u32) -> f32 {
    return w[e];
}

fn dot_vector(j: u32) -> f32 {
    return delta_buf[j];
}

// What step t of unit i of sequence s needs besides δ_{t+1}: its injection and h_t.
fn step_inputs(t: u32, s: u32, i: u32) -> vec2<f32> {
    let d = dims.hidden;
    let nb = dims.batch;
    // Row t of the sequence in h and dv, row t − 1 in g.
    let row = (t * nb + s) * hist_stride(d);
    var e = 0.0;
    if dims.injection == TARGETS {
        // Exact: dv_scale is a power of two.
        e = -load_dv(row + i) * (1.0 / dims.dv_scale);
    } else if dims.injection == STEPS {
        e = g_top[((t - 1u) * nb + s) * d + i];
    } else if t == dims.steps {
        e = g_top[s * d + i];
    }
    return vec2<f32>(e, load_h(row + i));
}

// The step inputs of unit lid of the workgroup's n sequences for the `steps` steps of a
// block from step t (step t − j, j < steps), into the invocation's part of the stage:
// sequence k's at stage_start() + 2·((j·n + k)·d + lid). At most STAGE_LOADS loads (the host
// sizes the blocks so), all issued before the first store: a constant count, which the
// drivers unroll.
fn stage_block(t: u32, steps: u32, n: u32, s0: u32, lid: u32) {
    let count = steps * n;
    var loaded: array<vec2<f32>, STAGE_LOADS / 2u>;
    for (var r = 0u; r < STAGE_LOADS / 2u; r++) {
        if r < count {
            let j = r / n;
            loaded[r] = step_inputs(t - j, s0 + r - j * n, lid);
        }
    }
    for (var r = 0u; r < STAGE_LOADS / 2u; r++) {
        if r < count {
            let at = stage_start() + 2u * (r * dims.hidden + lid);
            delta_buf[at] = loaded[r].x;
            delta_buf[at + 1u] = loaded[r].y;
        }
    }
}

// Step t's inputs of unit i of the workgroup's sequence k, q steps into the block: from
// the stage for the invocation's first unit where the loop stages them, else loaded.
fn unit_inputs(t: u32, q: u32, n: u32, s0: u32, k: u32, i: u32, lid: u32) -> vec2<f32> {
    if dims.block > 0u && i == lid {
        let at = stage_start() + 2u * ((q * n + k) * dims.hidden + lid);
        return vec2<f32>(delta_buf[at], delta_buf[at + 1u]);
    }
    return step_inputs(t, s0 + k, i);
}

// e_t and δ_t of unit i of the workgroup's sequence k (sequence s0 + k) at step t, from its
// step_inputs and `sum`, the eight-term part of (Wᵀ δ_{t+1})_i (δ_{t+1} of the sequence at
// `above` in delta_buf) when `recur`: the injection, then the last d % 8 terms, then `sum`.
// δ_t goes to the history and to delta_buf at `at`.
fn finish(t: u32, s0: u32, k: u32, i: u32, recur: bool, sum: f32, inputs: vec2<f32>, above: u32, at: u32) {
    let d = dims.hidden;
    var e = inputs.x;
    if recur {
        e = column_rest(e, i, d, above) + sum;
    }
    let ht = inputs.y;
    let dt = (1.0 - ht * ht) * e;
    let out = ((t - 1u) * dims.batch + s0 + k) * d + i;
    delta[out] = dt;
    err[out] = e;
    delta_buf[at] = dt;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The workgroup's sequences s0 .. s0 + n − 1.
    let s0 = wg.x * SEQS;
    let d = dims.hidden;
    let nb = dims.batch;
    let n = min(SEQS, nb - s0);
    if dims.first < dims.steps {
        // The previous launch stored these rows: any invocation may load any of them.
        let above = (dims.first * nb + s0) * d;
        for (var e = lid; e < n * d; e += WG) {
            delta_buf[delta_at(dims.first + 1u) + e] = delta[above + e];
        }
        workgroupBarrier();
    }
    // This invocation's lane of its units and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    // The lane's chunk of column lid / LANES of W in registers for the whole launch, where
    // it fits (include/dot.wgsl, REG_BLOCKS).
    let resident = REGISTERS && column_fits_registers(d, LANES, WG);
    var w_col: array<vec4<f32>, 2u * REG_BLOCKS>;
    if resident && lid / LANES < d {
        w_col = column_registers(lid / LANES, d, chunk);
    }
    let end = dims.first - dims.count;
    // The steps of the current block done before step t.
    var q = 0u;
    for (var t = dims.first; t > end; t--) {
        let recur = dims.through_time == 1u && t < dims.steps;
        // δ_{t+1} in one vector, δ_t into the other.
        let prev = delta_at(t + 1u);
        let next = delta_at(t);
        if dims.block > 0u && q == 0u && lid < d {
            stage_block(t, min(dims.block, t - end), n, s0, lid);
        }
        for (var i = lid / LANES; i < d; i += WG / LANES) {
            var inputs: array<vec2<f32>, MAX_SEQS>;
            if LANES == 1u {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        inputs[k] = unit_inputs(t, q, n, s0, k, i, lid);
                    }
                }
            }
            // The lane's part of (Wᵀ δ_{t+1})_i of all SEQS sequences from one pass over
            // its chunk of column i of W. Past the last sequence (k ≥ n) it sums what
            // workgroup memory holds there, never used.
            var acc: array<vec4<f32>, MAX_SEQS>;
            if recur && resident {
                acc = columns_dot8_registers(w_col, prev, d, SEQS, chunk);
            } else if recur {
                acc = columns_dot8(i, d, prev, d, SEQS, chunk);
            }
            // SEQS iterations rather than n, which the drivers unroll.
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    if LANES == 1u {
                        finish(t, s0, k, i, recur, hsum(acc[k]), inputs[k], prev + k * d, next + k * d + i);
                    } else {
                        delta_buf[next + lane * SEQS * d + k * d + i] = hsum(acc[k]);
                    }
                }
            }
        }
        if LANES > 1u {
            // All partials written; each finisher reads only its own units'.
            workgroupBarrier();
            for (var i = lid; i < d; i += WG) {
                for (var k = 0u; k < SEQS; k++) {
                    if k < n {
                        let at = next + k * d + i;
                        var sum = delta_buf[at];
                        for (var l = 1u; l < LANES; l++) {
                            sum += delta_buf[at + l * SEQS * d];
                        }
                        let inputs = unit_inputs(t, q, n, s0, k, i, lid);
                        finish(t, s0, k, i, recur, sum, inputs, prev + k * d, at);
                    }
                }
            }
        }
        // Everyone has read δ_{t+1} and written δ_t: the next step may overwrite δ_{t+1}'s
        // vector.
        workgroupBarrier();
        q += 1u;
        if q == dims.block {
            q = 0u;
        }
    }
}
