//! Backpropagation through time for BP and for the TP surrogate, in bounded segments (`shaders/bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/bptt.rs`).

use anyhow::Result;

use crate::gpu::blocks;
use crate::gpu::buffers::{time_loop_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::packing::{Packing, TimeLoop};
use crate::gpu::segments::split;

/// The uniform block of `bptt.wgsl` and `gru_bptt.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    injection: u32,
    through_time: u32,
    dv_scale: f32,
    first: u32,
    count: u32,
    block: u32,
    slot: u32,
}

impl Dims {
    /// `targets` injects h_t − v_t at every step (TP), otherwise g_T at the top (BP);
    /// dv is read as `seq.dv` stores it (times `dv_scale`). The segment is set by
    /// `dispatch_cell`.
    pub(crate) fn new(
        model: &ModelBuffers,
        seq: &SeqBuffers,
        shape: Shape,
        targets: bool,
        through_time: bool,
    ) -> Self {
        Self {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            hidden: model.layout.dims.hidden as u32,
            injection: u32::from(targets),
            through_time: u32::from(through_time),
            dv_scale: seq.dv.scale,
            first: 0,
            count: 0,
            block: 0,
            slot: 0,
        }
    }
}

/// The launches: one workgroup per `packing.seqs` sequences, `steps` steps per launch, writing δ
/// and e [T, B, d]. `targets` injects h_t − v_t at every step (TP), otherwise g_T at the top (BP),
/// or with `every_step` (outputs at every step) g_t at every step.
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    targets: bool,
    through_time: bool,
    every_step: bool,
) -> Result<Dispatch> {
    let mut dims = Dims::new(model, seq, shape, targets, through_time);
    if every_step && !targets {
        // bptt.wgsl's STEPS.
        dims.injection = 2;
    }
    launch(ctx, model, seq, (shape, steps, packing), &dims)
}

/// DTP's launch (docs/ALGORITHM.md §14): TP's, with the injection h_t − v_t divided by B,
/// its surrogate being a mean over the batch. The kernel divides what it reads of dv by
/// dv_scale, so B times the scale divides the injection (and e) by B.
pub(crate) fn dispatch_batch_mean(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    through_time: bool,
) -> Result<Dispatch> {
    let mut dims = Dims::new(model, seq, shape, true, through_time);
    dims.dv_scale *= shape.batch as f32;
    launch(ctx, model, seq, (shape, steps, packing), &dims)
}

/// bptt.wgsl's launch with `dims`, packed as `packing` says, on the tanh RNN's
/// buffers, in blocks of staged loads (`blocks::BPTT`).
fn launch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    dims: &Dims,
) -> Result<Dispatch> {
    let bindings = vec![
        (2, seq.h.binding()),
        (3, seq.dv.binding()),
        (4, seq.g_top.as_entire_binding()),
        (5, seq.delta.as_entire_binding()),
        (6, seq.err.as_entire_binding()),
    ];
    let kernel = ctx.time_loop_kernel(seq.h.storage, TimeLoop::Bptt, packing)?;
    let dims = Dims {
        block: blocks::staged_steps(packing, blocks::BPTT) as u32,
        slot: packing.slot() as u32,
        ..*dims
    };
    dispatch_cell(ctx, model, (shape, steps, packing), kernel, &dims, bindings)
}

/// What the backward launches of both cells share: `kernel`'s recursion, one workgroup
/// per `packing.seqs` sequences (the GRU's kernel carries one) and `steps` steps per launch from
/// the top, bound to W at 1 and to the cell's own `bindings` after it.
pub(crate) fn dispatch_cell<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    kernel: &wgpu::ComputePipeline,
    dims: &Dims,
    bindings: Vec<(u32, wgpu::BindingResource<'a>)>,
) -> Result<Dispatch> {
    let mut all = vec![(1, model.layout.w.bind(&model.theta))];
    all.extend(bindings);
    let uniforms: Vec<Dims> = split(shape.steps, steps)
        .into_iter()
        .map(|seg| Dims {
            first: shape.steps as u32 - seg.first,
            count: seg.count,
            ..*dims
        })
        .collect();
    Dispatch::segments(
        ctx,
        kernel,
        &uniforms,
        &all,
        time_loop_groups(ctx, packing, shape.batch)?,
    )
}
