// Forward pass of the tanh RNN, fused over time (twin of src/cpu/forward.rs).
//
//     h_0 = 0,   h_t = tanh(W h_{t-1} + U x_t + b),   t = 1..T
//
// One workgroup per sequence walks t = 1..T; h_{t-1} sits in workgroup memory because
// every unit reads all of it. Invocation `lid` owns units lid, lid + WG, ... (d may
// exceed the workgroup size). Layout, row-major: W [d, d], U [d, p], x [T, B, p],
// h [T+1, B, d] (the whole history; step t of sequence s starts at (t*B + s)*d).

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
@group(0) @binding(1) var<storage, read> w: array<f32>;
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
            for (var j = 0u; j < d; j++) {
                a += w[i * d + j] * h_prev[j];
            }
            h[h_row + i] = safe_tanh(a);
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
