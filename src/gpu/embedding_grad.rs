//! The gradient of a trained embedding table (docs/ALGORITHM.md §13; twin of
//! `cpu::embedding::embedding_grad`): the per-token sums S [V, d] of δ by
//! `shaders/embedding_grad.wgsl`, then ∇E = S U by `matmul.wgsl`, into the table's slot
//! of the gradient buffer. Every row of ∇E is written (zero for tokens the batch lacks).

use anyhow::{Context, Result};

use crate::gpu::buffers::{grid_1d, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::matmul;

/// embedding_grad.wgsl's workgroup size.
const WG: usize = 256;

/// The uniform block of `embedding_grad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    vocab: u32,
    hidden: u32,
    row_stride: u32,
}

/// The two launches, after BPTT has written δ (and before the optimizer moves U): the
/// per-token sums, then their product with U in `stages` stages of the matmul.
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    stages: usize,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let (slot, vocab) = l.embed.context("∇E needs a trained embedding table")?;
    let e = seq
        .embedding
        .as_ref()
        .context("∇E needs the token buffers")?;
    let (d, p) = (l.dims.hidden, l.dims.input);
    let (grid, row_stride) = grid_1d(ctx, vocab * d, WG);
    let dims = Dims {
        vocab: vocab as u32,
        hidden: d as u32,
        row_stride,
    };
    let sums = Dispatch::new(
        ctx,
        &ctx.kernels.embedding_grad,
        &dims,
        &[
            (1, e.offsets.as_entire_binding()),
            (2, e.positions.as_entire_binding()),
            (3, seq.delta.as_entire_binding()),
            (4, e.sums.as_entire_binding()),
        ],
        grid,
    )?;
    let product = matmul::product(
        ctx,
        matmul::Operands {
            a: e.sums.as_entire_binding(),
            trans_a: false,
            b: l.u.bind(&model.theta),
            c: slot.bind(&model.grad),
            m: vocab,
            n: p,
            k: d,
        },
        stages,
    )?;
    Ok([sums, product])
}
