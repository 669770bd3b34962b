//! The GRU's per-gate target sweep, fused over time in bounded segments
//! (`shaders/gru_per_gate_sweep.wgsl`;
//! twin of `src/cpu/gru_per_gate.rs::gru_per_gate_sweep`). Its P_g come from
//! `inverse::GateCg`, recorded before it.

use anyhow::Result;

use crate::config::TpConfig;
use crate::gpu::buffers::{per_item_groups, GateBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::segments::split;

/// The uniform block of `gru_per_gate_sweep.wgsl` and `gru_sweep_bptt.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    lr_target: f32,
    first: u32,
    count: u32,
}

/// One block per launch of a loop over the steps T, T − 1, … (`looped` of them: T − 1 for
/// the sweep, which stops at step 2; T for the fused loop) in segments of `steps` from the
/// top.
pub(crate) fn segment_dims(
    shape: Shape,
    (looped, steps): (usize, usize),
    hidden: usize,
    tp: &TpConfig,
) -> Vec<Dims> {
    split(looped, steps)
        .into_iter()
        .map(|seg| Dims {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            hidden: hidden as u32,
            lr_target: tp.lr_target as f32,
            first: shape.steps as u32 - seg.first,
            count: seg.count,
        })
        .collect()
}

/// The launches: one workgroup per sequence, `steps` steps per launch, reading the stacked
/// P_gᵀ of `gates`, h, the forward pass's gates and g_T, writing the target offsets
/// dv = v − h [T+1, B, d] (each segment hands its last offsets on in `seq.carry`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    gates: &GateBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
    hidden: usize,
    tp: &TpConfig,
) -> Result<Dispatch> {
    // Steps T, T − 1, …, 2, in segments from the top.
    let uniforms = segment_dims(shape, (shape.steps - 1, steps), hidden, tp);
    Dispatch::segments(
        ctx,
        &ctx.gru_kernels(hidden)?.per_gate_sweep,
        &uniforms,
        &[
            (1, gates.pt.as_entire_binding()),
            // f32 histories only (`plan::Plan::check`).
            (2, seq.h.binding()),
            (3, seq.gates.as_entire_binding()),
            (4, seq.g_top.as_entire_binding()),
            (5, seq.dv.binding()),
            (6, seq.carry.as_entire_binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}
