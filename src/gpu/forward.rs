//! Forward pass of the tanh RNN, fused over time in bounded segments
//! (`shaders/forward.wgsl`; twin of `src/cpu/forward.rs`).

use anyhow::Result;

use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::segments::split;
use crate::gpu::transpose;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    first: u32,
    count: u32,
}

/// The launches: Wᵀ, then the time loop with one workgroup per sequence, `steps` steps per
/// launch, writing h [T+1, B, d] (and handing each segment's last state on in `seq.carry`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
) -> Result<[Dispatch; 2]> {
    dispatch_cell(
        ctx,
        model,
        (shape, steps),
        &ctx.history_kernels(seq.h.storage)?.forward,
        vec![
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.carry.as_entire_binding()),
            (7, model.layout.b_hh.bind(&model.theta)),
        ],
    )
}

/// What the forward launches of both cells share: Wᵀ ([d, gates·d] from W [gates·d, d]),
/// then `kernel`'s time loop, one workgroup per sequence and `steps` steps per launch,
/// bound to Wᵀ, U and b at 1–3 and to the cell's own `bindings` after them.
pub(crate) fn dispatch_cell<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    (shape, steps): (Shape, usize),
    kernel: &wgpu::ComputePipeline,
    bindings: Vec<(u32, wgpu::BindingResource<'a>)>,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let transpose = transpose::dispatch(
        ctx,
        l.w.bind(&model.theta),
        model.wt.as_entire_binding(),
        l.cell.gates() * d,
        d,
    )?;
    let uniforms: Vec<Dims> = split(shape.steps, steps)
        .into_iter()
        .map(|seg| Dims {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            input: l.dims.input as u32,
            hidden: d as u32,
            first: 1 + seg.first,
            count: seg.count,
        })
        .collect();
    let mut all = vec![
        (1, model.wt.as_entire_binding()),
        (2, l.u.bind(&model.theta)),
        (3, l.b.bind(&model.theta)),
    ];
    all.extend(bindings);
    let forward = Dispatch::segments(
        ctx,
        kernel,
        &uniforms,
        &all,
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )?;
    Ok([transpose, forward])
}
