// DTP's backward sweep of difference targets through the learned reverse layer, fused
// over time (twin of src/cpu/dtp_targets.rs; docs/ALGORITHM.md §14):
//
//     v_T = h_T - γ_h g_T, then for t = T, ..., 2:
//     v_{t-1} = h_{t-1} - g(h_t, x_t) + g(v_t, x_t),    g(h, x) = tanh(V h + c + U x)
//
// Like target_sweep.wgsl it stores the offsets dv_t = v_t - h_t (dv_0 = 0), and it forms
// them without the cancelling subtraction: with a = V h_t + c + U x_t, g_h = tanh(a) and
// δa = V dv_t (linear in the offset, so taken from the offset itself),
//
//     dv_{t-1} = tanh(a + δa) - tanh(a) = tanh(δa) (1 - g_h²) / (1 + g_h tanh(δa)),
//
// which keeps the digits of offsets far below f32's resolution of h_t (γ_h = 1e-7 in the
// published pixel-MNIST setting).
//
// One workgroup per sequence walks t downwards. h_t and dv_t sit in the two halves of
// `vecs` (every unit reads all of both); each invocation keeps the new offsets of the
// units it owns (lid, lid + WG, ..., at most SLOTS of them) in registers until everyone
// has read dv_t, then writes them over it.
// Bounded segments, as in target_sweep.wgsl: one launch runs the steps t = dims.first,
// dims.first − 1, … (dims.count of them; gpu::segments picks how many from
// gpu::loops::dtp_targets), the first segment (dims.first = T) after setting up dv_0 and
// dv_T, and each hands dv of its last step to the next in `carry` [B, d].
// Layout, row-major: Vᵀ [d, d], U [d, p], x [T, B, p], h and dv [T+1, B, d] (f32: DTP
// runs with f32 histories only), g_T [B, d], carry [B, d].

const WG: u32 = 256u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN, SLOTS),
// include/dot.wgsl (column_dot8, column_rest, hsum; the operands are dot_matrix and
// dot_vector below) and include/activation.wgsl (safe_tanh).

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    lr_target: f32,
    // This segment's steps: the first (T … 2, or T = 1 with none) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> vt: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias_rev: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> h: array<f32>;
@group(0) @binding(6) var<storage, read> g_top: array<f32>;
@group(0) @binding(7) var<storage, read_write> dv: array<f32>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;

// h_t in the first half, dv_t in the second.
var<workgroup> vecs: array<f32, 2u * MAX_HIDDEN>;

// include/dot.wgsl's operands: Vᵀ, and h_t or dv_t in `vecs`.
fn dot_matrix(e: u32) -> f32 {
    return vt[e];
}

fn dot_vector(j: u32) -> f32 {
    return vecs[j];
}

// tanh accurate to a few ulp also near 0, where tanh implementations that go through
// exp(2a) lose all relative precision (the offsets δa are 1e-9 in the pixel setting): a
// short odd series there (next term < 1e-11 relative at |a| = 1/8).
fn tanh_f32(a: f32) -> f32 {
    if abs(a) < 0.125 {
        let a2 = a * a;
        return a * (1.0 - a2 * (1.0 / 3.0 - a2 * (2.0 / 15.0 - a2 * (17.0 / 315.0 - a2 * (62.0 / 2835.0)))));
    }
    return safe_tanh(a);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = wg.x;
    let d = dims.hidden;
    let p = dims.input;
    let top = dims.first == dims.steps;
    // dv of the step in hand: the top offset, or where the previous segment stopped.
    for (var i = lid; i < d; i += WG) {
        let dvt = select(carry[s * d + i], -dims.lr_target * g_top[s * d + i], top);
        if top {
            dv[s * d + i] = 0.0;
            dv[(dims.steps * dims.batch + s) * d + i] = dvt;
        }
        vecs[MAX_HIDDEN + i] = dvt;
    }
    var next: array<f32, SLOTS>;
    let end = dims.first - dims.count;
    for (var t = dims.first; t > end; t--) {
        let row = (t * dims.batch + s) * d;
        let x_row = ((t - 1u) * dims.batch + s) * p;
        for (var i = lid; i < d; i += WG) {
            vecs[i] = h[row + i];
        }
        // Also orders the last step's writes of dv_t into `vecs` before the reads below.
        workgroupBarrier();
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            var a = bias_rev[i];
            for (var j = 0u; j < p; j++) {
                a += u[i * p + j] * x[x_row + j];
            }
            let g_h = safe_tanh(column_rest(a, i, d, 0u) + hsum(column_dot8(i, d, 0u)));
            let tda = tanh_f32(column_rest(0.0, i, d, MAX_HIDDEN) + hsum(column_dot8(i, d, MAX_HIDDEN)));
            next[k] = tda * (1.0 - g_h * g_h) / (1.0 + g_h * tda);
        }
        // Everyone has read h_t and dv_t.
        workgroupBarrier();
        let prev = row - dims.batch * d;
        for (var k = 0u; k < SLOTS; k++) {
            let i = lid + k * WG;
            if i >= d {
                break;
            }
            vecs[MAX_HIDDEN + i] = next[k];
            dv[prev + i] = next[k];
        }
    }
    // Each invocation hands on the units it wrote itself.
    for (var i = lid; i < d; i += WG) {
        carry[s * d + i] = vecs[MAX_HIDDEN + i];
    }
}
