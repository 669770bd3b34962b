// The per-token sums behind the gradient of a trained embedding table (docs/ALGORITHM.md
// §13; twin of the first half of cpu::embedding::embedding_grad). The gradient flowing
// into input x_t is δ_t U, so the row of token v is
//
//     ∇E[v] = Σ_{r holds v} δ[r] U = S[v] U,     S[v, j] = Σ_{r holds v} δ[r, j]
//
// This kernel writes S [V, d]; matmul.wgsl then forms ∇E = S U. WGSL has no float
// atomics, so nothing is scattered: the host uploads, with the tokens, the rows holding
// each token as a CSR index (positions[offsets[v] .. offsets[v + 1]] are the rows r of δ,
// r = (t - 1)·B + s, that hold token v, ascending), and each invocation gathers one
// element S[v, j]. Every element is written, zero for a token the batch lacks.
// One invocation per element of S; neighbouring invocations (j) read neighbouring
// addresses of δ.
//
// Bounded segments: a launch adds the rows first .. first + count − 1 of each token's list
// (gpu::segments picks how many, so that no launch runs too long; the host records enough
// launches for one token at all T·B rows, and those past a token's list add nothing); the
// first launch writes S, the others add to it.
// Layout: offsets [V + 1], positions [T·B] u32; δ [T, B, d] and S [V, d] row-major f32.

const WG: u32 = 256u;

struct Dims {
    // V, the rows of the table.
    vocab: u32,
    // d, the width of δ.
    hidden: u32,
    // Invocations per row of the grid (it may be 2-D).
    row_stride: u32,
    // This launch's part of each token's list of rows.
    first: u32,
    count: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> delta: array<f32>;
@group(0) @binding(4) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * dims.row_stride + gid.x;
    if idx >= dims.vocab * dims.hidden {
        return;
    }
    let v = idx / dims.hidden;
    let j = idx % dims.hidden;
    let start = offsets[v] + dims.first;
    let end = min(offsets[v + 1u], start + dims.count);
    var acc = 0.0;
    for (var k = start; k < end; k++) {
        acc += delta[positions[k] * dims.hidden + j];
    }
    sums[idx] = select(acc, sums[idx] + acc, dims.first > 0u);
}
