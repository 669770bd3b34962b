//! Backpropagation through the GRU for BP and for the TP surrogate (`shaders/gru_bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/gru.rs::gru_bptt`).

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::config::{Hyper, Inversion, Method, TpConfig, TpGrad};
use crate::cpu::bptt::{Injection, RnnGrads};
use crate::cpu::gru::GruGrads;
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{
    per_item_groups, rows_f32, stack, ModelBuffers, SeqBuffers, Shape, Workspace,
};
use crate::gpu::kernel::{Dispatch, Groups};
use crate::model::{CellKind, Params};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    injection: u32,
    through_time: u32,
}

/// The launch: one workgroup per sequence, writing dgh (into `seq.delta`) and dgi
/// [T, B, 3d] and e [T, B, d]. `targets` injects h_t − v_t at every step (TP), otherwise
/// g_T at the top (BP).
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
    };
    Dispatch::new(
        ctx,
        &ctx.kernels.gru_bptt,
        &dims,
        &[
            (1, model.layout.w.bind(&model.theta)),
            (2, seq.h.as_entire_binding()),
            (3, seq.gates.as_entire_binding()),
            (4, seq.dv.as_entire_binding()),
            (5, seq.g_top.as_entire_binding()),
            (6, seq.dgi.as_entire_binding()),
            (7, seq.delta.as_entire_binding()),
            (8, seq.err.as_entire_binding()),
        ],
        Groups::Direct(per_item_groups(ctx, shape.batch, "batch size B")?),
    )
}

/// Gradients of w_hh, w_ih, b_ih and b_hh on the GPU, as `cpu::gru::gru_bptt` returns
/// them. The kernel linearizes at the states and gates of its own forward pass on `x`;
/// `h` (the reference's states) serves only to form the target offsets v − h in f64.
pub fn gru_bptt(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<GruGrads> {
    ensure!(
        h.len() == x.len() + 1,
        "need h_0 … h_T: got {} states for {} steps",
        h.len(),
        x.len()
    );
    let method = match injection {
        Injection::Top(_) => Method::Bp,
        Injection::Targets(_) => Method::Tp,
    };
    ensure!(
        method == Method::Tp || through_time,
        "BP injects g_T at the top only; without recursion it has no gradient below T"
    );
    let hyper = Hyper {
        method,
        tp: TpConfig {
            inversion: Inversion::Jacobian,
            tp_grad: if through_time {
                TpGrad::ThroughTime
            } else {
                TpGrad::Local
            },
            // The workspace's jacobian sweep never runs here: one iteration keeps the
            // llvmpipe loop guard from counting a solve that does not happen.
            cg_max_iter: 1,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    ensure!(
        params.cell == CellKind::Gru,
        "gru_bptt needs GRU parameters, got a {:?} cell",
        params.cell
    );
    let (model, ws) = Workspace::after_forward(ctx, params, x, &hyper)?;
    match injection {
        Injection::Targets(v) => {
            // The kernel reads offsets v − h (see target_sweep.wgsl); form them in f64.
            let dv: Vec<_> = v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect();
            ctx.write(&ws.seq.dv, 0, &stack(&dv));
        }
        Injection::Top(g) => ctx.write(&ws.seq.g_top, 0, &rows_f32(g)),
    }
    ctx.submit(|pass| {
        ws.bptt.record(pass);
        ws.reductions.iter().for_each(|r| r.record(pass));
    })?;
    let g = model.read_params(ctx, &model.grad)?;
    Ok(GruGrads {
        rnn: RnnGrads {
            w_hh: g.w_hh,
            w_ih: g.w_ih,
            b: g.b,
            error_norms: ws.error_norms.read(ctx)?,
        },
        b_hh: g.b_hh,
    })
}
