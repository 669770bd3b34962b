//! The inputs of a language model with a trained embedding table, gathered on the device
//! (`shaders/embedding_gather.wgsl`; twin of `cpu::embedding::gather`).

use anyhow::{Context, Result};

use crate::gpu::buffers::{grid_1d, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;

/// embedding_gather.wgsl's workgroup size.
const WG: usize = 256;

/// The uniform block of `embedding_gather.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    rows: u32,
    width: u32,
    row_stride: u32,
}

/// The launch that writes x [T, B, p] = E\[tokens\] from the parameters' table: the first
/// of an iteration, so that the forward pass reads the table as the last step left it.
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
) -> Result<Dispatch> {
    let (slot, _) = model
        .layout
        .embed
        .context("the gather needs a trained embedding table")?;
    let e = seq
        .embedding
        .as_ref()
        .context("the gather needs the token buffers")?;
    let p = model.layout.dims.input;
    let rows = shape.steps * shape.batch;
    let (grid, row_stride) = grid_1d(ctx, rows * p, WG);
    let dims = Dims {
        rows: rows as u32,
        width: p as u32,
        row_stride,
    };
    Dispatch::new(
        ctx,
        &ctx.kernels.embedding_gather,
        &dims,
        &[
            (1, e.tokens.as_entire_binding()),
            (2, slot.bind(&model.theta)),
            (3, seq.x.as_entire_binding()),
        ],
        grid,
    )
}
