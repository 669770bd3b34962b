//! Forward pass of the tanh RNN, fused over time (`shaders/forward.wgsl`; twin of
//! `src/cpu/forward.rs`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::Hyper;
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{per_item_groups, ModelBuffers, SeqBuffers, Shape, Workspace};
use crate::gpu::kernel::{Dispatch, Groups};
use crate::gpu::storage::Storage;
use crate::gpu::transpose;
use crate::model::Params;
use crate::tasks::{Batch, Targets};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
}

/// The launches: Wᵀ, then the time loop with one workgroup per sequence, writing
/// h [T+1, B, d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let transpose = transpose::dispatch(
        ctx,
        l.w.bind(&model.theta),
        model.wt.as_entire_binding(),
        d,
        d,
    )?;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        input: l.dims.input as u32,
        hidden: l.dims.hidden as u32,
    };
    let forward = Dispatch::new(
        ctx,
        &ctx.history_kernels(seq.h.storage)?.forward,
        &dims,
        &[
            (1, model.wt.as_entire_binding()),
            (2, l.u.bind(&model.theta)),
            (3, l.b.bind(&model.theta)),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
        ],
        Groups::Direct(per_item_groups(ctx, shape.batch, "batch size B")?),
    )?;
    Ok([transpose, forward])
}

/// Hidden states h_0 … h_T on the GPU (stored in f32), as `cpu::forward::forward` returns
/// them.
pub fn forward(ctx: &GpuContext, params: &Params, x: &[DMatrix<f64>]) -> Result<Vec<DMatrix<f64>>> {
    let b = x.first().map_or(0, |m| m.nrows());
    let batch = Batch {
        x: x.to_vec(),
        y: Targets::Labels(vec![0; b]),
    };
    let (_model, ws) = Workspace::one_shot(ctx, params, &batch, &Hyper::default(), Storage::F32)?;
    ctx.submit(|pass| ws.forward.iter().for_each(|l| l.record(pass)))?;
    ws.seq.h.read(ctx, 0, x.len() + 1)
}
