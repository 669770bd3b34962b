//! The GRU's per-gate target sweep, fused over time (`shaders/gru_per_gate_sweep.wgsl`;
//! twin of `src/cpu/gru_per_gate.rs::gru_per_gate_sweep`). Its P_g come from
//! `inverse::GateCg`, recorded before it.

use anyhow::Result;

use crate::config::TpConfig;
use crate::gpu::buffers::{per_item_groups, GateBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    lr_target: f32,
}

/// The launch: one workgroup per sequence, reading the stacked P_gᵀ of `gates`, h, the
/// forward pass's gates and g_T, writing the target offsets dv = v − h [T+1, B, d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    gates: &GateBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    hidden: usize,
    tp: &TpConfig,
) -> Result<Dispatch> {
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        hidden: hidden as u32,
        lr_target: tp.lr_target as f32,
    };
    Dispatch::new(
        ctx,
        &ctx.kernels.gru_per_gate_sweep,
        &dims,
        &[
            (1, gates.pt.as_entire_binding()),
            // f32 histories only (`plan::Plan::check`).
            (2, seq.h.binding()),
            (3, seq.gates.as_entire_binding()),
            (4, seq.g_top.as_entire_binding()),
            (5, seq.dv.binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}
