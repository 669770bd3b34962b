//! Forward pass of the GRU, fused over time in bounded segments (`shaders/gru_forward.wgsl`; twin of
//! `src/cpu/gru.rs::gru_forward`), keeping each step's gates for the backward recursion and
//! the Jacobian products.

use anyhow::Result;

use crate::error::Error;
use crate::gpu::buffers::{ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::forward::dispatch_cell;
use crate::gpu::layout::Shape;
use crate::gpu::layout::MAX_HIDDEN;
use crate::gpu::options::{GpuOptions, LanesPerUnit};
use crate::gpu::packing::Packing;

/// How the GRU's forward pass runs at hidden size `d` on `ctx`'s adapter: one sequence per
/// workgroup, and the lanes per unit `options` fix (their three gates' partial sums must
/// fit the loop's workgroup memory, 3·lanes·d ≤ `MAX_HIDDEN`, and the lanes a workgroup,
/// lanes·d ≤ the adapter's invocations per workgroup), or one for `auto`: lanes have not
/// been timed on a GPU for the GRU (docs/PERFORMANCE.md, "Lanes for the GRU's forward
/// pass").
pub(crate) fn packing(ctx: &GpuContext, options: &GpuOptions, d: usize) -> Result<Packing> {
    let max_invocations = ctx.max_invocations_per_workgroup();
    let lanes = match options.lanes_per_unit {
        LanesPerUnit::Auto => 1,
        LanesPerUnit::Fixed(l) => {
            LanesPerUnit::fixed(l)?;
            if l > 1 && (3 * l * d > MAX_HIDDEN || l * d > max_invocations) {
                return Err(Error::setting(
                    "lanes_per_unit",
                    format!(
                        "{l} lanes per unit at hidden size d = {d} need {} values of the GRU's forward pass's workgroup memory and {} invocations per workgroup, more than its {MAX_HIDDEN} or this adapter's {max_invocations} (3 × lanes × d and lanes × d must fit); use fewer lanes, or `auto`",
                        3 * l * d,
                        l * d
                    ),
                )
                .into());
            }
            l
        }
    };
    Ok(Packing::new(1, lanes, d, max_invocations))
}

/// The launches: Wᵀ [d, 3d], then the time loop with one workgroup per sequence, `steps`
/// steps per launch, writing h [T+1, B, d] and the gates r | z | n | hn [T, B, 4d].
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
        ctx.gru_forward_kernel(packing)?,
        vec![
            (4, model.layout.b_hh.bind(&model.theta)),
            (5, seq.x.as_entire_binding()),
            // An f32 history (`iteration::check_storage`).
            (6, seq.h.binding()),
            (7, seq.gates.as_entire_binding()),
        ],
    )
}
