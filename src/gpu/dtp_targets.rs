//! DTP's backward sweep of difference targets through the learned reverse layer, fused
//! over time (`shaders/dtp_targets.wgsl`; twin of `src/cpu/dtp_targets.rs`;
//! docs/ALGORITHM.md §14).

use anyhow::{Context, Result};

use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::dtp_reverse::DtpReverse;
use crate::gpu::layout::Shape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    lr_target: f32,
}

/// The time loop with one workgroup per sequence, reading h, g_T and the Vᵀ `reverse`
/// keeps, writing the target offsets dv = v − h [T+1, B, d] (f32 histories).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    reverse: &DtpReverse,
    lr_target: f64,
) -> Result<Dispatch> {
    let l = &model.layout;
    let [_, rev_b] = l.rev.context("DTP needs buffers with a reverse layer")?;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        input: l.dims.input as u32,
        hidden: l.dims.hidden as u32,
        lr_target: lr_target as f32,
    };
    Dispatch::new(
        ctx,
        &ctx.kernels.dtp_targets,
        &dims,
        &[
            (1, reverse.vt.bind(&reverse.mats)),
            (2, l.u.bind(&model.theta)),
            (3, rev_b.bind(&model.theta)),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.g_top.as_entire_binding()),
            (7, seq.dv.binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}
