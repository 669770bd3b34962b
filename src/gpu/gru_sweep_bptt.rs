//! The GRU's per-gate target sweep and the TP surrogate's BPTT in one backward loop, in
//! bounded segments (`shaders/gru_sweep_bptt.wgsl`; twins:
//! `src/cpu/gru_per_gate.rs::gru_per_gate_sweep`, then `src/cpu/gru.rs::gru_bptt` with the
//! targets' injection). Where it applies (`fits`) it computes what `gru_per_gate_sweep`
//! and `gru_bptt` compute one after the other, bit for bit, walking T steps once instead
//! of twice.

use anyhow::Result;

use crate::config::TpConfig;
use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::gru_per_gate_sweep::segment_dims;
use crate::gpu::layout::Shape;
use crate::gpu::{transpose, MAX_HIDDEN};

/// Whether the fused loop can run the per-gate inversion's backward pass: the surrogate
/// differentiated through time, and a step's three brackets and three blocks of dgh
/// within one half of the kernel's workgroup memory (6d ≤ `MAX_HIDDEN`, d ≤ 341). (The
/// GRU has one output, at the last step: `plan` refuses heads at every step for it.)
pub(crate) fn fits(d: usize, through_time: bool) -> bool {
    through_time && d.saturating_mul(6) <= MAX_HIDDEN
}

/// The launches: W below the stacked P_gᵀ of `model.gates` (W from the forward pass's
/// Wᵀ), then the loop with one workgroup per sequence, `steps` steps per launch, writing
/// the target offsets dv [T+1, B, d] (each segment handing its last offsets on in
/// `seq.carry`), dgi and dgh [T, B, 3d] (dgh into `seq.delta`) and e [T, B, d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
    tp: &TpConfig,
) -> Result<Vec<Dispatch>> {
    let d = model.layout.dims.hidden;
    let pw = &model.gates(ctx)?.pt;
    let w = transpose::dispatch_at(
        ctx,
        (model.wt.as_entire_binding(), 0),
        (pw.as_entire_binding(), 3 * d * d),
        d,
        3 * d,
    )?;
    let uniforms = segment_dims(shape, (shape.steps, steps), d, tp);
    let fused = Dispatch::segments(
        ctx,
        &ctx.gru_kernels(d)?.sweep_bptt,
        &uniforms,
        &[
            (1, pw.as_entire_binding()),
            // f32 histories only (`plan::Plan::check`).
            (2, seq.h.binding()),
            (3, seq.gates.as_entire_binding()),
            (4, seq.g_top.as_entire_binding()),
            (5, seq.dv.binding()),
            (6, seq.carry.as_entire_binding()),
            (7, seq.dgi.as_entire_binding()),
            (8, seq.delta.as_entire_binding()),
            (9, seq.err.as_entire_binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )?;
    Ok(vec![w, fused])
}
