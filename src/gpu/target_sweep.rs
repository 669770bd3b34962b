//! The backward target sweep, fused over time in bounded segments (`shaders/target_sweep.wgsl`; twin of
//! `src/cpu/target_sweep.rs`).

use anyhow::Result;

use crate::config::{TargetMode, TpConfig};
use crate::gpu::buffers::{time_loop_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::{Shape, Slot};
use crate::gpu::packing::{Packing, TimeLoop};
use crate::gpu::segments::split;
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
    first: u32,
    count: u32,
    local: u32,
    hh_offset: u32,
}

/// The launches: Pᵀ, then the time loop with one workgroup per `packing.seqs` sequences, `steps`
/// steps per launch, reading h, g_T and P, writing the target offsets dv = v − h [T+1, B, d] (times
/// `seq.dv.scale`; each segment hands its last offsets on in `seq.carry`). With `local`
/// (outputs at every step) it reads g_t for every step and carries back each step's own
/// target too (docs/ALGORITHM.md §13).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
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
    // Steps T, T − 1, …, 2, in segments from the top.
    let uniforms: Vec<Dims> = split(shape.steps - 1, steps)
        .into_iter()
        .map(|seg| Dims {
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
            first: shape.steps as u32 - seg.first,
            count: seg.count,
            local: u32::from(local),
            hh_offset: (l.b_hh.start - l.b.start) as u32,
        })
        .collect();
    let sweep = Dispatch::segments(
        ctx,
        ctx.time_loop_kernel(seq.h.storage, TimeLoop::TargetSweep, packing)?,
        &uniforms,
        &[
            (1, model.pt.as_entire_binding()),
            (2, l.u.bind(&model.theta)),
            // b_ih through b_hh, one binding (the cell adds both).
            (
                3,
                Slot {
                    start: l.b.start,
                    len: l.b_hh.start + l.b_hh.len - l.b.start,
                }
                .bind(&model.theta),
            ),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.g_top.as_entire_binding()),
            (7, seq.dv.binding()),
            (8, seq.carry.as_entire_binding()),
        ],
        time_loop_groups(ctx, packing, shape.batch)?,
    )?;
    Ok([transpose, sweep])
}

// The twin's seven arguments plus the context: kept parallel on purpose.
