// The gradient of DTP's reconstruction loss in the reverse layer (twin of
// src/cpu/dtp_reverse.rs; docs/ALGORITHM.md §14). For every step t = 1..T and sequence s
// at once (no recursion: one workgroup per column, grid [B, T]):
//
//     h~ = h_{t-1} + σ η          (η: include/noise.wgsl's stream, element ((t-1)·B + s)·d + i)
//     y  = tanh(W h~ + U x_t + b)              (the cell's step, b = b_ih + b_hh)
//     r  = tanh(V y + U x_t + c)               (the reverse layer g(y, x_t))
//     δ  = (r - h~) ⊙ (1 - r²) / B
//
// It writes δ and y [T·B, d] (row (t-1)·B + s); the matmul kernel then reduces them over
// all T·B rows into ∇V = Δᵀ Y and ∇c = Δᵀ 1.
//
// Bounded segments: one launch takes the steps dims.first + 1 … dims.first + dims.count
// (gpu::segments picks how many from gpu::loops::dtp_reverse), grid [B, quota]; the
// workgroups of a shorter last segment past its steps leave at once. Nothing is carried:
// the columns are independent. There is no loop over steps, so an invocation's loops do
// not grow with T; the split bounds a launch's time and its grid.
//
// Both products read one buffer holding Wᵀ (from element 0) and Vᵀ (from element
// dims.vt_offset), so that include/dot.wgsl's one-matrix accessor serves both, with
// neighbouring invocations reading neighbouring addresses. h~ and y sit side by side in
// workgroup memory (the two halves of `vecs`), since every unit reads all of them.
// Layout, row-major: Wᵀ and Vᵀ [d, d] each, U [d, p], x [T, B, p], h [T+1, B, d] (f32:
// DTP runs with f32 histories only), δ and y [T·B, d].

const WG: u32 = 256u;

// gpu::kernel appends to this file include/limits.wgsl (MAX_HIDDEN), include/dot.wgsl
// (column_dot8, column_rest, hsum; the operands are dot_matrix and dot_vector below),
// include/activation.wgsl (safe_tanh) and include/noise.wgsl (noise_gaussian).

struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    // Where Vᵀ starts in `mats`.
    vt_offset: u32,
    // The noise stream's key, and its standard deviation σ (0: no noise).
    k0: u32,
    k1: u32,
    sigma: f32,
    // This segment's steps: the first (0-based) and how many.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> mats: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> bias_hh: array<f32>;
@group(0) @binding(5) var<storage, read> bias_rev: array<f32>;
@group(0) @binding(6) var<storage, read> x: array<f32>;
@group(0) @binding(7) var<storage, read> h: array<f32>;
@group(0) @binding(8) var<storage, read_write> delta: array<f32>;
@group(0) @binding(9) var<storage, read_write> y_out: array<f32>;

// h~ in the first half, y in the second.
var<workgroup> vecs: array<f32, 2u * MAX_HIDDEN>;

// include/dot.wgsl's operands: Wᵀ or Vᵀ in `mats`, and h~ or y in `vecs`.
fn dot_matrix(e: u32) -> f32 {
    return mats[e];
}

fn dot_vector(j: u32) -> f32 {
    return vecs[j];
}

// U x_t for unit i of the column whose inputs start at element `x_row`.
fn input_term(i: u32, x_row: u32) -> f32 {
    var a = 0.0;
    for (var k = 0u; k < dims.input; k++) {
        a += u[i * dims.input + k] * x[x_row + k];
    }
    return a;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // The same for the whole workgroup: it leaves together.
    if wg.y >= dims.count {
        return;
    }
    let d = dims.hidden;
    // Column (t-1)·B + s: h_{t-1} of sequence s, with the inputs x_t.
    let col = (dims.first + wg.y) * dims.batch + wg.x;
    let x_row = col * dims.input;
    for (var i = lid; i < d; i += WG) {
        var hi = h[col * d + i];
        if dims.sigma != 0.0 {
            hi += dims.sigma * noise_gaussian(col * d + i, dims.k0, dims.k1);
        }
        vecs[i] = hi;
    }
    workgroupBarrier();
    for (var i = lid; i < d; i += WG) {
        let a = bias[i] + bias_hh[i] + input_term(i, x_row);
        let y = safe_tanh(column_rest(a, i, d, 0u) + hsum(column_dot8(i, d, 0u)));
        vecs[MAX_HIDDEN + i] = y;
        y_out[col * d + i] = y;
    }
    workgroupBarrier();
    let inv_b = 1.0 / f32(dims.batch);
    for (var i = lid; i < d; i += WG) {
        let c = dims.vt_offset + i;
        let a = bias_rev[i] + input_term(i, x_row);
        let r = safe_tanh(column_rest(a, c, d, MAX_HIDDEN) + hsum(column_dot8(c, d, MAX_HIDDEN)));
        delta[col * d + i] = (r - vecs[i]) * (1.0 - r * r) * inv_b;
    }
}
