// Forward pass of the tanh RNN, fused over time (twin of src/cpu/forward.rs).
//
//     h_0 = 0,   h_t = tanh(W h_{t-1} + U x_t + b),   t = 1..T
//
// One workgroup per sequence walks t = 1..T; h_{t-1} sits in workgroup memory because
// every unit reads all of it. Invocation `lid` owns units lid, lid + WG, ... (d may
// exceed the workgroup size). It reads Wᵀ (transpose.wgsl writes it first), so that in
// Σ_j W[i][j] h_j neighbouring invocations read neighbouring addresses.
//
// The dot product is include/dot.wgsl's, eight terms per loop iteration (see there for
// llvmpipe's loop cap, which bounds the steps of one segment).
//
// Bounded segments: one launch runs the steps dims.first .. dims.first + dims.count − 1 of
// the loop (gpu::segments picks how many, so that no launch runs too long), and the host
// records the launches of all segments in order. The state a segment hands to the next is
// h of its last step, kept in `carry` [B, d] in f32: the history may hold it rounded to
// f16, and the recursion must go on from the f32 value, as one long launch would.
//
// The state ping-pongs between the two halves of `h_buf`: step t reads h_{t-1} from one
// half and writes h_t into the other, so a single barrier per step separates the reads
// of h_{t-1} from the writes of h_{t+1} into the same half. After that barrier the whole
// of h_t is visible to every invocation, which is what the f16 history needs: two
// neighbouring units share a 32-bit word there, and one invocation must write both.
// The recursion itself always runs on the f32 values in workgroup memory; only the
// stored history is rounded.
//
// Layout, row-major: Wᵀ [d, d], U [d, p], x [T, B, p], h [T+1, B, d'] (the whole history;
// step t of sequence s starts at element (t*B + s)*d'), where d' = hist_stride(d);
// carry [B, d].

const WG: u32 = 256u;

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

// Two d-vectors: h_{t-1} and h_t, alternating halves.
var<workgroup> h_buf: array<f32, 2u * MAX_HIDDEN>;

// include/dot.wgsl's operands: Wᵀ, and h_buf (h_{t-1} is the half at `prev`).
fn dot_matrix(e: u32) -> f32 {
    return wt[e];
}

fn dot_vector(j: u32) -> f32 {
    return h_buf[j];
}

// Writes h_buf[half .. half + d] as the history row starting at element `row`. Called
// after a barrier: f16 words pair units that other invocations computed.
fn store_row(row: u32, half: u32, lid: u32) {
    let d = dims.hidden;
    if HIST_F16 {
        for (var i = 2u * lid; i < d; i += 2u * WG) {
            let next = select(0.0, h_buf[half + i + 1u], i + 1u < d);
            h[hist_word(row + i)] = hist_pair(h_buf[half + i], next);
        }
    } else {
        for (var i = lid; i < d; i += WG) {
            h[row + i] = hist_f32(h_buf[half + i]);
        }
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let p = dims.input;
    let stride = hist_stride(d);
    let first = dims.first;
    let last = first + dims.count - 1u;
    // h_{first−1} into its half: h_0 = 0, or the previous segment's last state.
    let start = ((first - 1u) & 1u) * MAX_HIDDEN;
    for (var i = lid; i < d; i += WG) {
        h_buf[start + i] = select(carry[s * d + i], 0.0, first == 1u);
    }
    workgroupBarrier();
    if first == 1u {
        store_row(s * stride, 0u, lid);
    }
    for (var t = first; t <= last; t++) {
        // h_{t-1} in one half, h_t into the other.
        let prev = ((t - 1u) & 1u) * MAX_HIDDEN;
        let next = (t & 1u) * MAX_HIDDEN;
        let x_row = ((t - 1u) * dims.batch + s) * p;
        for (var i = lid; i < d; i += WG) {
            var a = bias[i] + bias_hh[i];
            for (var k = 0u; k < p; k++) {
                a += u[i * p + k] * x[x_row + k];
            }
            // (W h_{t-1})_i: this kernel adds the last d % 8 terms to the input part first,
            // then the partial sums one pair at a time.
            let acc = column_dot8(i, d, prev);
            h_buf[next + i] = safe_tanh(column_rest(a, i, d, prev) + (acc.x + acc.y) + (acc.z + acc.w));
        }
        // Everyone has read h_{t-1} and written h_t: the next step may overwrite h_{t-1}'s
        // half (nobody reads it after this point) and anyone may store any unit of h_t.
        workgroupBarrier();
        store_row((t * dims.batch + s) * stride, next, lid);
    }
    // Each invocation hands on the units it computed itself.
    for (var i = lid; i < d; i += WG) {
        carry[s * d + i] = h_buf[(last & 1u) * MAX_HIDDEN + i];
    }
}
