//! Backpropagation through time for BP and for the TP surrogate (`shaders/bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/bptt.rs`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::{Hyper, Method, TpConfig, TpGrad};
use crate::cpu::bptt::{Injection, RnnGrads};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{
    per_item_groups, rows_f32, ModelBuffers, SeqBuffers, Shape, Workspace,
};
use crate::gpu::kernel::{Dispatch, Groups};
use crate::gpu::storage::Storage;
use crate::model::Params;
use crate::tasks::{Batch, Targets};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    injection: u32,
    through_time: u32,
    dv_scale: f32,
}

/// The launch: one workgroup per sequence, writing δ and e [T, B, d]. `targets` injects
/// h_t − v_t at every step (TP), otherwise g_T at the top (BP).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    targets: bool,
    through_time: bool,
) -> Result<Dispatch> {
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        hidden: model.layout.dims.hidden as u32,
        injection: u32::from(targets),
        through_time: u32::from(through_time),
        dv_scale: seq.dv.scale,
    };
    Dispatch::new(
        ctx,
        &ctx.history_kernels(seq.h.storage)?.bptt,
        &dims,
        &[
            (1, model.layout.w.bind(&model.theta)),
            (2, seq.h.binding()),
            (3, seq.dv.binding()),
            (4, seq.g_top.as_entire_binding()),
            (5, seq.delta.as_entire_binding()),
            (6, seq.err.as_entire_binding()),
        ],
        Groups::Direct(per_item_groups(ctx, shape.batch, "batch size B")?),
    )
}

/// Gradients of W, U, b on the GPU (histories in f32), as `cpu::bptt::bptt` returns them.
pub fn bptt(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<RnnGrads> {
    let b = x.first().map_or(0, |m| m.nrows());
    let batch = Batch {
        x: x.to_vec(),
        y: Targets::Labels(vec![0; b]),
    };
    let (method, targets) = match injection {
        Injection::Top(_) => (Method::Bp, None),
        Injection::Targets(v) => (Method::Tp, Some(v)),
    };
    let hyper = Hyper {
        method,
        tp: TpConfig {
            tp_grad: if through_time {
                TpGrad::ThroughTime
            } else {
                TpGrad::Local
            },
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    anyhow::ensure!(
        method == Method::Tp || through_time,
        "BP injects g_T at the top only; without recursion it has no gradient below T"
    );
    let (model, ws) = Workspace::one_shot(ctx, params, &batch, &hyper, Storage::F32)?;
    ws.seq.h.write(ctx, 0, h);
    match (injection, targets) {
        (_, Some(v)) => {
            // The kernel reads offsets v − h (see target_sweep.wgsl); form them in f64.
            let dv: Vec<_> = v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect();
            ws.seq.dv.write(ctx, 0, &dv)
        }
        (Injection::Top(g), None) => ctx.write(&ws.seq.g_top, 0, &rows_f32(g)),
        (Injection::Targets(_), None) => unreachable!("targets were matched above"),
    }
    ctx.submit(|pass| {
        ws.bptt.record(pass);
        ws.reductions.iter().for_each(|r| r.record(pass));
    })?;
    let g = model.read_params(ctx, &model.grad)?;
    Ok(RnnGrads {
        w_hh: g.w_hh,
        w_ih: g.w_ih,
        b: g.b,
        error_norms: ws.error_norms.read(ctx)?,
    })
}
