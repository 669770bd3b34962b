//! Matrix transpose (`shaders/transpose.wgsl`): Wᵀ and Pᵀ for coalesced reads in the
//! forward pass and the target sweep.

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
    _pad: u32,
}

/// The launch writing `out` [cols, rows] = `src`ᵀ for `src` [rows, cols].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    src: wgpu::BindingResource<'_>,
    out: wgpu::BindingResource<'_>,
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
            _pad: 0,
        },
        &[(1, src), (2, out)],
        grid,
    )
}
