//! Forward pass of the GRU, fused over time in bounded segments (`shaders/gru_forward.wgsl`; twin of
//! `src/cpu/gru.rs::gru_forward`), keeping each step's gates for the backward recursion and
//! the Jacobian products.

use anyhow::Result;

use crate::gpu::buffers::{ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::forward::dispatch_cell;
use crate::gpu::layout::Shape;
use crate::gpu::packing::GruLoop;
use crate::gpu::packing::Packing;

/// The launches: Wᵀ [d, 3d], then the time loop with one workgroup per sequence and
/// `packing`'s lanes per unit (`Packing::gru`), `steps` steps per launch, writing h [T+1, B, d] and the gates r | z | n | hn [T, B, 4d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
) -> Result<[Dispatch; 2]> {
    dispatch_cell(
        ctx,
        model,
        (shape, steps, packing),
        None,
        ctx.gru_loop_kernel(GruLoop::Forward, packing)?,
        vec![
            (4, model.layout.b_hh.bind(&model.theta)),
            (5, seq.x.as_entire_binding()),
            // An f32 history (`iteration::check_storage`).
            (6, seq.h.binding()),
            (7, seq.gates.as_entire_binding()),
        ],
    )
}
