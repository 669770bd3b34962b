// Forward pass of the tanh RNN, fused over time (twin of src/cpu/forward.rs).
//
//     h_0 = 0,   h_t = tanh(W h_{t-1} + U x_t + b),   t = 1..T
//
// One workgroup per sequence walks t = 1..T; h_{t-1} sits in workgroup memory because
// every unit reads all of it. Invocation `lid` owns units lid, lid + WG, ... (d may
// exceed the workgroup size). It reads Wᵀ (transpose.wgsl writes it first), so that in
// Σ_j W[i][j] h_j neighbouring invocations read neighbouring addresses.
//
// The dot product takes eight terms per loop iteration. Besides the fewer branches, this
// keeps the loop count per invocation (≈ T·d/8) under the 65535 that llvmpipe (Mesa's
// software Vulkan driver, at least up to 22.3) allows one invocation in total before it
// silently cuts loops short; the host refuses shapes over that bound on llvmpipe.
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
// step t of sequence s starts at element (t*B + s)*d'), where d' = hist_stride(d).

const WG: u32 = 256u;
// Largest hidden size; the host checks d against the same number (gpu::MAX_HIDDEN).
const MAX_HIDDEN: u32 = 2048u;

// The history storage (HIST_F16, hist_*): include/history.wgsl, which gpu::kernel
// appends to this file.

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> wt: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> h: array<HistWord>;

// Two d-vectors: h_{t-1} and h_t, alternating halves.
var<workgroup> h_buf: array<f32, 2u * MAX_HIDDEN>;

// tanh saturates to ±1 in f32 well before |a| = 15; clamping keeps implementations that
// go through exp(2a) from overflowing into NaN.
fn safe_tanh(a: f32) -> f32 {
    return tanh(clamp(a, -15.0, 15.0));
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
    for (var i = lid; i < d; i += WG) {
        h_buf[i] = 0.0;
    }
    workgroupBarrier();
    store_row(s * stride, 0u, lid);
    for (var t = 1u; t <= dims.steps; t++) {
        // h_{t-1} in one half, h_t into the other.
        let prev = ((t - 1u) & 1u) * MAX_HIDDEN;
        let next = (t & 1u) * MAX_HIDDEN;
        let x_row = ((t - 1u) * dims.batch + s) * p;
        for (var i = lid; i < d; i += WG) {
            var a = bias[i];
            for (var k = 0u; k < p; k++) {
                a += u[i * p + k] * x[x_row + k];
            }
            var j = 0u;
            var acc = vec4<f32>(0.0);
            for (; j + 8u <= d; j += 8u) {
                acc += vec4<f32>(wt[j * d + i], wt[(j + 1u) * d + i], wt[(j + 2u) * d + i], wt[(j + 3u) * d + i])
                    * vec4<f32>(h_buf[prev + j], h_buf[prev + j + 1u], h_buf[prev + j + 2u], h_buf[prev + j + 3u]);
                acc += vec4<f32>(wt[(j + 4u) * d + i], wt[(j + 5u) * d + i], wt[(j + 6u) * d + i], wt[(j + 7u) * d + i])
                    * vec4<f32>(h_buf[prev + j + 4u], h_buf[prev + j + 5u], h_buf[prev + j + 6u], h_buf[prev + j + 7u]);
            }
            for (; j < d; j++) {
                a += wt[j * d + i] * h_buf[prev + j];
            }
            h_buf[next + i] = safe_tanh(a + (acc.x + acc.y) + (acc.z + acc.w));
        }
        // Everyone has read h_{t-1} and written h_t: the next step may overwrite h_{t-1}'s
        // half (nobody reads it after this point) and anyone may store any unit of h_t.
        workgroupBarrier();
        store_row((t * dims.batch + s) * stride, next, lid);
    }
}
