// The inputs of a language model with a trained embedding table (docs/ALGORITHM.md §13;
// twin of cpu::embedding::gather): x_t = E[id_t] for every step and sequence,
//
//     x[r, c] = E[tokens[r], c]     r = (t - 1)·B + s over all T·B rows, c < p
//
// so that the forward pass reads the table as it stands after the last optimizer step.
// One invocation per element of x [T, B, p]; the host checked every id below V
// (validate::check_tokens). Layout: tokens [T, B] u32 (step-major, as x's rows), E [V, p]
// and x [T, B, p] row-major f32.

const WG: u32 = 256u;

struct Dims {
    // T·B rows of x.
    rows: u32,
    // p, the width of x and of E.
    width: u32,
    // Invocations per row of the grid (it may be 2-D).
    row_stride: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * dims.row_stride + gid.x;
    if idx >= dims.rows * dims.width {
        return;
    }
    let r = idx / dims.width;
    let c = idx % dims.width;
    x[idx] = table[tokens[r] * dims.width + c];
}
