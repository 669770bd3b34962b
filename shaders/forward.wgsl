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
// Layout, row-major: Wᵀ [d, d], U [d, p], x [T, B, p], h [T+1, B, d] (the whole history;
// step t of sequence s starts at (t*B + s)*d).

const WG: u32 = 256u;
// Largest hidden size; the host checks d against the same number (gpu::MAX_HIDDEN).
const MAX_HIDDEN: u32 = 2048u;

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
@group(0) @binding(5) var<storage, read_write> h: array<f32>;

var<workgroup> h_prev: array<f32, MAX_HIDDEN>;

// tanh saturates to ±1 in f32 well before |a| = 15; clamping keeps implementations that
// go through exp(2a) from overflowing into NaN.
fn safe_tanh(a: f32) -> f32 {
    return tanh(clamp(a, -15.0, 15.0));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let p = dims.input;
    for (var i = lid; i < d; i += WG) {
        h_prev[i] = 0.0;
        h[s * d + i] = 0.0;
    }
    workgroupBarrier();
    for (var t = 1u; t <= dims.steps; t++) {
        let x_row = ((t - 1u) * dims.batch + s) * p;
        let h_row = (t * dims.batch + s) * d;
        for (var i = lid; i < d; i += WG) {
            var a = bias[i];
            for (var k = 0u; k < p; k++) {
                a += u[i * p + k] * x[x_row + k];
            }
            var j = 0u;
            var acc = vec4<f32>(0.0);
            for (; j + 8u <= d; j += 8u) {
                acc += vec4<f32>(wt[j * d + i], wt[(j + 1u) * d + i], wt[(j + 2u) * d + i], wt[(j + 3u) * d + i])
                    * vec4<f32>(h_prev[j], h_prev[j + 1u], h_prev[j + 2u], h_prev[j + 3u]);
                acc += vec4<f32>(wt[(j + 4u) * d + i], wt[(j + 5u) * d + i], wt[(j + 6u) * d + i], wt[(j + 7u) * d + i])
                    * vec4<f32>(h_prev[j + 4u], h_prev[j + 5u], h_prev[j + 6u], h_prev[j + 7u]);
            }
            for (; j < d; j++) {
                a += wt[j * d + i] * h_prev[j];
            }
            h[h_row + i] = safe_tanh(a + (acc.x + acc.y) + (acc.z + acc.w));
        }
        // Everyone has read h_{t-1}; overwrite it with h_t (each invocation reads back
        // only the units it wrote itself, so no storage barrier is needed).
        workgroupBarrier();
        for (var i = lid; i < d; i += WG) {
            h_prev[i] = h[h_row + i];
        }
        workgroupBarrier();
    }
}
