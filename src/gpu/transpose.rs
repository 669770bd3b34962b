//! Matrix transpose (`shaders/transpose.wgsl`): Wᵀ and Pᵀ for coalesced reads in the
//! forward pass and the target sweeps, and the GRU's gate blocks W_g, W_gᵀ for the
//! per-gate inversion.

use anyhow::Result;

use crate::gpu::buffers::grid_1d;
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;

/// transpose.wgsl's workgroup size.
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    rows: u32,
    cols: u32,
    row_stride: u32,
    src_offset: u32,
    out_offset: u32,
    _pad: [u32; 3],
}

/// The launch writing `out` [cols, rows] = `src`ᵀ for `src` [rows, cols].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    src: wgpu::BindingResource<'_>,
    out: wgpu::BindingResource<'_>,
    rows: usize,
    cols: usize,
) -> Result<Dispatch> {
    dispatch_at(ctx, (src, 0), (out, 0), rows, cols)
}

/// `dispatch` with the matrix at element `src_offset` of `src`, its transpose written
/// from element `out_offset` of `out`.
pub(crate) fn dispatch_at(
    ctx: &GpuContext,
    (src, src_offset): (wgpu::BindingResource<'_>, usize),
    (out, out_offset): (wgpu::BindingResource<'_>, usize),
    rows: usize,
    cols: usize,
) -> Result<Dispatch> {
    let (grid, row_stride) = grid_1d(ctx, rows * cols, WG);
    Dispatch::new(
        ctx,
        &ctx.kernels.transpose,
        &Dims {
            rows: rows as u32,
            cols: cols as u32,
            row_stride,
            src_offset: src_offset as u32,
            out_offset: out_offset as u32,
            _pad: [0; 3],
        },
        &[(1, src), (2, out)],
        grid,
    )
}
