//! DTP's backward sweep of difference targets through the learned reverse layer, fused
//! over time in bounded segments (`shaders/dtp_targets.wgsl`; twin of `src/cpu/dtp_targets.rs`;
//! docs/ALGORITHM.md §14).

use anyhow::{Context, Result};

use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::dtp_reverse::DtpReverse;
use crate::gpu::layout::Shape;
use crate::gpu::segments::split;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    lr_target: f32,
    first: u32,
    count: u32,
}

/// The time loop with one workgroup per sequence, `steps` steps per launch, reading h,
/// g_T and the Vᵀ `reverse` keeps, writing the target offsets dv = v − h [T+1, B, d] (f32
/// histories; each segment hands its last offsets on in `seq.carry`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
    reverse: &DtpReverse,
    lr_target: f64,
) -> Result<Dispatch> {
    let l = &model.layout;
    let [_, rev_b] = l.rev.context("DTP needs buffers with a reverse layer")?;
    // Steps T, T − 1, …, 2, in segments from the top.
    let uniforms: Vec<Dims> = split(shape.steps - 1, steps)
        .into_iter()
        .map(|seg| Dims {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            input: l.dims.input as u32,
            hidden: l.dims.hidden as u32,
            lr_target: lr_target as f32,
            first: shape.steps as u32 - seg.first,
            count: seg.count,
        })
        .collect();
    Dispatch::segments(
        ctx,
        &ctx.kernels.dtp_targets,
        &uniforms,
        &[
            (1, reverse.vt.bind(&reverse.mats)),
            (2, l.u.bind(&model.theta)),
            (3, rev_b.bind(&model.theta)),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.g_top.as_entire_binding()),
            (7, seq.dv.binding()),
            (8, seq.carry.as_entire_binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}
