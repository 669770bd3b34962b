// out = srcᵀ for a row-major src [rows, cols]: Wᵀ for the forward pass and Pᵀ for the
// target sweeps, so that their time loops, where invocation i computes Σ_j M[i][j] s_j,
// read Mᵀ[j][i]: neighbouring invocations, neighbouring addresses. One launch of d²
// invocations per step against T·B·d² multiply-adds in the loop that benefits.
//
// The matrix may start anywhere in src and go anywhere in out (elements src_offset,
// out_offset): the GRU's per-gate inversion takes each gate block W_g [d, d] out of
// W [3d, d] and stacks the three P_gᵀ, at offsets a storage binding could not start at.

const WG: u32 = 256u;

struct Dims {
    rows: u32,
    cols: u32,
    // Invocations per row of the grid (it may be 2-D).
    row_stride: u32,
    src_offset: u32,
    out_offset: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * dims.row_stride + gid.x;
    if idx >= dims.rows * dims.cols {
        return;
    }
    let r = idx / dims.cols;
    let c = idx % dims.cols;
    out[dims.out_offset + c * dims.rows + r] = src[dims.src_offset + idx];
}
