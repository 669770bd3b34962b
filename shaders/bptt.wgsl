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
// multiple of SEQS); their δ_{t+1} sit in workgroup memory one after another (sequence k
// of the workgroup at k·d, so SEQS·d ≤ MAX_HIDDEN: the host checks it). In the local mode
// there is no recursion, but the same loop serves (it is as cheap as the injection itself).
// Why several sequences per workgroup (SEQS, the same count as forward.wgsl's): with one,
// every workgroup reads all of W at every step, B·d² values a step from the cache; with
// SEQS, each element of W an invocation loads serves the SEQS sequences (include/dot.wgsl's
// columns_dot8), dividing that traffic by SEQS (docs/PERFORMANCE.md, "Sequences per
// workgroup"). Each sequence's sums are formed in the same order as with SEQS = 1, so SEQS
// changes no result.
// Bounded segments: one launch runs the steps t = dims.first, dims.first − 1, … (dims.count
// of them; gpu::segments picks how many, gpu::loops charging SEQS times the work per step).
// A segment below the top starts from δ_{first+1}, which the previous segment stored in f32
// (δ is never rounded), so the recursion goes on exactly as in one long launch.
// Lanes per unit (LANES, the same count as forward.wgsl's; see there for why): with
// LANES = L > 1, lane l of unit i sums lane_chunk l of (Wᵀ δ_{t+1})_i into `partials`
// (lane l's of sequence k at l·SEQS·d + k·d + i, so LANES·SEQS·d ≤ MAX_HIDDEN, the host
// checks it); after a barrier the finisher of unit i (invocation i mod WG, the one that
// copies δ_t back) adds the last d % 8 terms to the injection and then the L partials in
// lane order. δ_{t+1} cannot hold them, being read until that barrier, hence the second
// array (16 KiB in all, as forward.wgsl's). At LANES = 1 the lane code is compiled out and
// the kernel runs the loops, barriers and sums it ran before lanes existed.
// Wᵀδ reads w[j*d + i]: neighbouring invocations (i) read neighbouring addresses, eight
// terms per loop iteration (include/dot.wgsl; see there for llvmpipe's loop cap).
// Layout: W [d, d], h and dv [T+1, B, d'] (d' = hist_stride(d); dv stored times
// dims.dv_scale), g_T [B, d] (or g [T, B, d]), δ and e [T, B, d]. The rows of a
// workgroup's sequences are consecutive in each.

// Invocations per workgroup: 256, or more with lanes (gpu::kernel sets it with LANES).
override WG: u32 = 256u;
const TARGETS: u32 = 1u;
const STEPS: u32 = 2u;

// Sequences per workgroup: 1, 2, 4, 8 or 16 (at most MAX_SEQS), set per pipeline.
override SEQS: u32 = 1u;

// Lanes per unit: 1, 2, 4, 8 or 16, set per pipeline.
override LANES: u32 = 1u;

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
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> h: array<HistWord>;
@group(0) @binding(3) var<storage, read> dv: array<HistWord>;
@group(0) @binding(4) var<storage, read> g_top: array<f32>;
@group(0) @binding(5) var<storage, read_write> delta: array<f32>;
@group(0) @binding(6) var<storage, read_write> err: array<f32>;

var<workgroup> delta_next: array<f32, MAX_HIDDEN>;
// The lanes' partial sums of Wᵀ δ_{t+1} (LANES > 1 only).
var<workgroup> partials: array<f32, MAX_HIDDEN>;

fn load_h(i: u32) -> f32 {
    return hist_value(h[hist_word(i)], i);
}

fn load_dv(i: u32) -> f32 {
    return hist_value(dv[hist_word(i)], i);
}

// include/dot.wgsl's operands: W and δ_{t+1} (of the workgroup's sequence k at k·d).
fn dot_matrix(e: u32) -> f32 {
    return w[e];
}

fn dot_vector(j: u32) -> f32 {
    return delta_next[j];
}

// e_t and δ_t of unit i of the workgroup's sequence k (sequence s0 + k) at step t, from
// `sum`, the eight-term part of (Wᵀ δ_{t+1})_i when `recur`: the injection, then the last
// d % 8 terms, then `sum`.
fn finish(t: u32, s0: u32, k: u32, i: u32, recur: bool, sum: f32) {
    let d = dims.hidden;
    let nb = dims.batch;
    // Row t of the sequence in h and dv, row t − 1 in δ, e and g.
    let row = (t * nb + s0 + k) * hist_stride(d);
    let out = ((t - 1u) * nb + s0 + k) * d;
    var e = 0.0;
    if dims.injection == TARGETS {
        // Exact: dv_scale is a power of two.
        e = -load_dv(row + i) * (1.0 / dims.dv_scale);
    } else if dims.injection == STEPS {
        e = g_top[out + i];
    } else if t == dims.steps {
        e = g_top[(s0 + k) * d + i];
    }
    if recur {
        // The last d % 8 terms go onto the injection first.
        e = column_rest(e, i, d, k * d) + sum;
    }
    let ht = load_h(row + i);
    delta[out + i] = (1.0 - ht * ht) * e;
    err[out + i] = e;
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
            delta_next[e] = delta[above + e];
        }
        workgroupBarrier();
    }
    // This invocation's lane of its units and the terms the lane sums.
    let lane = lid % LANES;
    let chunk = lane_chunk(d, lane, LANES);
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        let recur = dims.through_time == 1u && t < dims.steps;
        for (var i = lid / LANES; i < d; i += WG / LANES) {
            // The lane's part of (Wᵀ δ_{t+1})_i of all SEQS sequences from one pass over
            // its chunk of column i of W. Past the last sequence (k ≥ n) it sums what
            // workgroup memory holds there, never used.
            var acc: array<vec4<f32>, MAX_SEQS>;
            if recur {
                acc = columns_dot8(i, d, 0u, d, SEQS, chunk);
            }
            // SEQS iterations rather than n, which the drivers unroll.
            for (var k = 0u; k < SEQS; k++) {
                if k < n {
                    if LANES == 1u {
                        finish(t, s0, k, i, recur, hsum(acc[k]));
                    } else {
                        partials[lane * SEQS * d + k * d + i] = hsum(acc[k]);
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
                        var sum = partials[k * d + i];
                        for (var l = 1u; l < LANES; l++) {
                            sum += partials[l * SEQS * d + k * d + i];
                        }
                        finish(t, s0, k, i, recur, sum);
                    }
                }
            }
        }
        let out0 = ((t - 1u) * nb + s0) * d;
        // Everyone has read δ_{t+1}; overwrite it. Each invocation reads back only the
        // units it wrote itself (units i ≡ lid mod WG of each sequence, hence a loop per
        // sequence rather than one over all n·d values), so no storage barrier is needed.
        workgroupBarrier();
        for (var k = 0u; k < SEQS; k++) {
            if k < n {
                for (var i = lid; i < d; i += WG) {
                    delta_next[k * d + i] = delta[out0 + k * d + i];
                }
            }
        }
        workgroupBarrier();
    }
}
