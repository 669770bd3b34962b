//! The backward target sweep, fused over time (`shaders/target_sweep.wgsl`; twin of
//! `src/cpu/target_sweep.rs`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::{Hyper, Method, TargetMode, TpConfig};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{
    per_item_groups, rows_f32, ModelBuffers, SeqBuffers, Shape, Workspace,
};
use crate::gpu::kernel::Dispatch;
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
    mode: u32,
    lr_target: f32,
    dv_scale: f32,
}

/// The launches: Pᵀ, then the time loop with one workgroup per sequence, reading h, g_T
/// and P, writing the target offsets dv = v − h [T+1, B, d] (times `seq.dv.scale`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    tp: &TpConfig,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let transpose = transpose::dispatch(
        ctx,
        model.cg.x.as_entire_binding(),
        model.pt.as_entire_binding(),
        d,
        d,
    )?;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        input: l.dims.input as u32,
        hidden: l.dims.hidden as u32,
        mode: match tp.target_mode {
            TargetMode::Linearized => 0,
            TargetMode::Difference => 1,
            TargetMode::Plain => 2,
        },
        lr_target: tp.lr_target as f32,
        dv_scale: seq.dv.scale,
    };
    let sweep = Dispatch::new(
        ctx,
        &ctx.history_kernels(seq.h.storage)?.target_sweep,
        &dims,
        &[
            (1, model.pt.as_entire_binding()),
            (2, l.u.bind(&model.theta)),
            (3, l.b.bind(&model.theta)),
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.g_top.as_entire_binding()),
            (7, seq.dv.binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )?;
    Ok([transpose, sweep])
}

/// Targets v_0 … v_T on the GPU (histories in f32), as `cpu::target_sweep::target_sweep`
/// returns them.
// The twin's seven arguments plus the context: kept parallel on purpose.
#[allow(clippy::too_many_arguments)]
pub fn target_sweep(
    ctx: &GpuContext,
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    mode: TargetMode,
) -> Result<Vec<DMatrix<f64>>> {
    let b = grad_h.nrows();
    anyhow::ensure!(
        h.len() == x.len() + 1,
        "need h_0 … h_T: got {} states for {} steps",
        h.len(),
        x.len()
    );
    let batch = Batch {
        x: x.to_vec(),
        y: Targets::Labels(vec![0; b]),
    };
    let hyper = Hyper {
        method: Method::Tp,
        tp: TpConfig {
            lr_target,
            target_mode: mode,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let (model, ws) = Workspace::one_shot(ctx, params, &batch, &hyper, Storage::F32)?;
    ws.seq.h.write(ctx, 0, h);
    ctx.write(&ws.seq.g_top, 0, &rows_f32(grad_h));
    ctx.write(&model.cg.x, 0, &rows_f32(p_inv));
    let sweep = ws
        .sweep
        .as_ref()
        .expect("a TP workspace has a target sweep");
    ctx.submit(|pass| sweep.iter().for_each(|l| l.record(pass)))?;
    let dv = ws.seq.dv.read(ctx, 0, x.len() + 1)?;
    Ok(h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect())
}
