//! Backpropagation through the GRU for BP and for the TP surrogate (`shaders/gru_bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/gru.rs::gru_bptt`).

use anyhow::Result;

use crate::gpu::bptt::{dispatch_cell, Dims};
use crate::gpu::buffers::{ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::packing::GruLoop;
use crate::gpu::packing::Packing;

/// The launches: one workgroup per sequence with `packing`'s lanes per unit
/// (`Packing::gru`), `steps` steps per launch, writing dgh (into `seq.delta`) and dgi
/// [T, B, 3d] and e [T, B, d]. `targets` injects h_t − v_t at every step (TP), otherwise
/// g_T at the top (BP).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    targets: bool,
    through_time: bool,
) -> Result<Dispatch> {
    // f32 histories only (`iteration::check_storage`).
    let dims = Dims::new(model, seq, shape, targets, through_time);
    let bindings = vec![
        (2, seq.h.binding()),
        (3, seq.gates.as_entire_binding()),
        (4, seq.dv.binding()),
        (5, seq.g_top.as_entire_binding()),
        (6, seq.dgi.as_entire_binding()),
        (7, seq.delta.as_entire_binding()),
        (8, seq.err.as_entire_binding()),
    ];
    dispatch_cell(
        ctx,
        model,
        (shape, steps, packing),
        ctx.gru_loop_kernel(GruLoop::Bptt, packing)?,
        &dims,
        bindings,
    )
}
