//! The gradient of a trained embedding table (docs/ALGORITHM.md §13; twin of
//! `cpu::embedding::embedding_grad`): the per-token sums S [V, d] of δ by
//! `shaders/embedding_grad.wgsl`, then ∇E = S U by `matmul.wgsl`, into the table's slot
//! of the gradient buffer. Every row of ∇E is written (zero for tokens the batch lacks).

use anyhow::{Context, Result};

use crate::gpu::buffers::{grid_1d, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::loops::{self, REDUCTION_STAGE};
use crate::gpu::matmul;
use crate::gpu::segments::{split, Segmenting};

/// embedding_grad.wgsl's workgroup size.
const WG: usize = 256;

/// The uniform block of `embedding_grad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    vocab: u32,
    hidden: u32,
    row_stride: u32,
    first: u32,
    count: u32,
}

/// The launches, after BPTT has written δ (and before the optimizer moves U): the
/// per-token sums over the `rows` = T·B rows of δ in bounded segments, then their product
/// with U, each as `segmenting` picks.
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    rows: usize,
    segmenting: &Segmenting,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let (slot, vocab) = l.embed.context("∇E needs a trained embedding table")?;
    let e = seq
        .embedding
        .as_ref()
        .context("∇E needs the token buffers")?;
    let (d, p) = (l.dims.hidden, l.dims.input);
    let (grid, row_stride) = grid_1d(ctx, vocab * d, WG);
    let workgroups = grid.iter().map(|&g| g as usize).product();
    let stages = segmenting.quota(&loops::embedding_sums(rows, workgroups))?;
    let blocks: Vec<Dims> = split(rows, stages.saturating_mul(REDUCTION_STAGE))
        .into_iter()
        .map(|seg| Dims {
            vocab: vocab as u32,
            hidden: d as u32,
            row_stride,
            first: seg.first,
            count: seg.count,
        })
        .collect();
    let sums = Dispatch::segments(
        ctx,
        &ctx.kernels.embedding_grad,
        &blocks,
        &[
            (1, e.offsets.as_entire_binding()),
            (2, e.positions.as_entire_binding()),
            (3, seq.delta.as_entire_binding()),
            (4, e.sums.as_entire_binding()),
        ],
        grid,
    )?;
    let ops = matmul::Operands {
        a: e.sums.as_entire_binding(),
        trans_a: false,
        b: l.u.bind(&model.theta),
        c: slot.bind(&model.grad),
        m: vocab,
        n: p,
        k: d,
    };
    let stages = ops.stages(segmenting)?;
    let product = matmul::product(ctx, ops, stages)?;
    Ok([sums, product])
}
