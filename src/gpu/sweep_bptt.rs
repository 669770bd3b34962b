//! The target sweep and the TP surrogate's BPTT in one backward loop, in bounded segments
//! (`shaders/sweep_bptt.wgsl`; twins: `src/cpu/target_sweep.rs`, then `src/cpu/bptt.rs`
//! with the targets' injection). Where it applies (`fits`) it computes what
//! `target_sweep` and `bptt` compute one after the other, bit for bit, walking T steps
//! once instead of twice.

use anyhow::Result;

use crate::config::{TargetMode, TpConfig};
use crate::gpu::blocks;
use crate::gpu::buffers::{time_loop_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::packing::{Packing, TimeLoop};
use crate::gpu::segments::split;
use crate::gpu::storage::Storage;
use crate::gpu::transpose;

/// The uniform block of `sweep_bptt.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    mode: u32,
    lr_target: f32,
    dv_scale: f32,
    first: u32,
    count: u32,
    block: u32,
    slot: u32,
}

/// Whether the fused loop can run TP's backward pass: the linearized or difference
/// targets (the plain mode needs U, x and b, past the kernel's bindings), one output (no
/// local targets), the surrogate differentiated through time, and a packing where each
/// invocation owns at most one unit (d · lanes ≤ workgroup size) and the loop's vectors
/// of lanes · sequences · d floats (four; six with f16 storage) fit its workgroup memory.
pub(crate) fn fits(
    tp: &TpConfig,
    (storage, packing, d): (Storage, Packing, usize),
    every_step: bool,
    through_time: bool,
) -> bool {
    tp.target_mode != TargetMode::Plain
        && !every_step
        && through_time
        && d.saturating_mul(packing.lanes) <= packing.workgroup_size
        && blocks::sweep_bptt_fits(packing, storage)
}

/// The launches: Pᵀ and W into one matrix [Pᵀ; W] (W from the forward pass's Wᵀ), then
/// the loop with one workgroup per `packing.seqs` sequences, `steps` steps per launch in
/// blocks of staged loads (`blocks::sweep_bptt`), writing the target offsets dv [T+1, B, d]
/// (each segment handing its last offsets on in `seq.carry`) and δ, e [T, B, d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    tp: &TpConfig,
) -> Result<Vec<Dispatch>> {
    let d = model.layout.dims.hidden;
    let none = wgpu::BufferUsages::empty();
    let pw = ctx.storage("[Pᵀ; W] [2d, d]", 4 * (2 * d * d) as u64, none)?;
    let matrices = [
        transpose::dispatch_at(
            ctx,
            (model.cg.x.as_entire_binding(), 0),
            (pw.as_entire_binding(), 0),
            d,
            d,
        )?,
        transpose::dispatch_at(
            ctx,
            (model.wt.as_entire_binding(), 0),
            (pw.as_entire_binding(), d * d),
            d,
            d,
        )?,
    ];
    let uniforms: Vec<Dims> = split(shape.steps, steps)
        .into_iter()
        .map(|seg| Dims {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            hidden: d as u32,
            mode: u32::from(tp.target_mode == TargetMode::Difference),
            lr_target: tp.lr_target as f32,
            dv_scale: seq.dv.scale,
            first: shape.steps as u32 - seg.first,
            count: seg.count,
            block: blocks::staged_steps(packing, blocks::sweep_bptt(seq.h.storage)) as u32,
            slot: packing.slot() as u32,
        })
        .collect();
    let fused = Dispatch::segments(
        ctx,
        ctx.time_loop_kernel(seq.h.storage, TimeLoop::SweepBptt, packing)?,
        &uniforms,
        &[
            (1, pw.as_entire_binding()),
            (2, seq.h.binding()),
            (3, seq.g_top.as_entire_binding()),
            (4, seq.dv.binding()),
            (5, seq.carry.as_entire_binding()),
            (6, seq.delta.as_entire_binding()),
            (7, seq.err.as_entire_binding()),
        ],
        time_loop_groups(ctx, packing, shape.batch)?,
    )?;
    Ok(matrices.into_iter().chain([fused]).collect())
}
