//! The backward target sweep, fused over time (`shaders/target_sweep.wgsl`; twin of
//! `src/cpu/target_sweep.rs`).

use anyhow::Result;

use crate::config::{TargetMode, TpConfig};
use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::transpose;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
    dv_scale: f32,
    local: u32,
}

/// The launches: Pᵀ, then the time loop with one workgroup per sequence, reading h, g_T
/// and P, writing the target offsets dv = v − h [T+1, B, d] (times `seq.dv.scale`).
/// With `local` (outputs at every step) it reads g_t for every step and carries back
/// each step's own target too (docs/ALGORITHM.md §13).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    tp: &TpConfig,
    local: bool,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let transpose = transpose::dispatch(
        ctx,
        model.cg.x.as_entire_binding(),
        model.pt.as_entire_binding(),
        d,
        d,
    )?;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        input: l.dims.input as u32,
        hidden: l.dims.hidden as u32,
        mode: match tp.target_mode {
            TargetMode::Linearized => 0,
            TargetMode::Difference => 1,
            TargetMode::Plain => 2,
        },
        lr_target: tp.lr_target as f32,
        dv_scale: seq.dv.scale,
        local: u32::from(local),
    };
    let sweep = Dispatch::new(
        ctx,
        &ctx.history_kernels(seq.h.storage)?.target_sweep,
        &dims,
        &[
            (1, model.pt.as_entire_binding()),
            (2, l.u.bind(&model.theta)),
            (3, l.b.bind(&model.theta)),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.g_top.as_entire_binding()),
            (7, seq.dv.binding()),
            (8, l.b_hh.bind(&model.theta)),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )?;
    Ok([transpose, sweep])
}

// The twin's seven arguments plus the context: kept parallel on purpose.
