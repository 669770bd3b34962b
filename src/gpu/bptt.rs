//! Backpropagation through time for BP and for the TP surrogate (`shaders/bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/bptt.rs`).

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::config::{Hyper, Inversion, Method, TpConfig, TpGrad};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{
    per_item_groups, rows_f32, ModelBuffers, SeqBuffers, Shape, Workspace,
};
use crate::gpu::kernel::Dispatch;
use crate::gpu::storage::Storage;
use crate::kernel_io::{Injection, RnnGrads};
use crate::model::Params;

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
}

impl Dims {
    /// `targets` injects h_t − v_t at every step (TP), otherwise g_T at the top (BP);
    /// dv is read as `seq.dv` stores it (times `dv_scale`).
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
        }
    }
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
    let dims = Dims::new(model, seq, shape, targets, through_time);
    let bindings = vec![
        (2, seq.h.binding()),
        (3, seq.dv.binding()),
        (4, seq.g_top.as_entire_binding()),
        (5, seq.delta.as_entire_binding()),
        (6, seq.err.as_entire_binding()),
    ];
    let kernel = &ctx.history_kernels(seq.h.storage)?.bptt;
    dispatch_cell(ctx, model, shape, kernel, &dims, bindings)
}

/// What the backward launches of both cells share: `kernel`'s recursion, one workgroup
/// per sequence, bound to W at 1 and to the cell's own `bindings` after it.
pub(crate) fn dispatch_cell<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    shape: Shape,
    kernel: &wgpu::ComputePipeline,
    dims: &Dims,
    bindings: Vec<(u32, wgpu::BindingResource<'a>)>,
) -> Result<Dispatch> {
    let mut all = vec![(1, model.layout.w.bind(&model.theta))];
    all.extend(bindings);
    Dispatch::new(
        ctx,
        kernel,
        dims,
        &all,
        per_item_groups(ctx, shape.batch, "batch size B")?,
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
    let (g, error_norms) = backward_once(ctx, params, x, h, injection, through_time)?;
    Ok(RnnGrads {
        w_hh: g.w_hh,
        w_ih: g.w_ih,
        b: g.b,
        error_norms,
    })
}

/// One run of the cell's backward recursion and the gradient reductions, as the one-shot
/// `bptt` and `gru_bptt` need it: the kernels linearize at the states (and gates) of the
/// GPU's own forward pass on `x`; `h`, the reference's states, serves only to form the
/// target offsets v − h in f64. Returns the gradient tensors (head at zero) and ‖e_t‖.
pub(crate) fn backward_once(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<(Params, Vec<f64>)> {
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
            inversion: Inversion::default_for(params.cell),
            tp_grad: if through_time {
                TpGrad::ThroughTime
            } else {
                TpGrad::Local
            },
            // No solve runs here: one iteration keeps the llvmpipe loop guard from
            // counting one that does not happen.
            cg_max_iter: 1,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let (model, ws) = Workspace::after_forward(ctx, params, x, &hyper, Storage::F32)?;
    match injection {
        Injection::Targets(v) => {
            // The kernel reads offsets v − h (see target_sweep.wgsl); form them in f64.
            let dv: Vec<_> = v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect();
            ws.seq.dv.write(ctx, 0, &dv);
        }
        Injection::Top(g) => ctx.write(&ws.seq.g_top, 0, &rows_f32(g)),
    }
    ctx.submit(|pass| {
        ws.bptt.record(pass);
        ws.reductions.iter().for_each(|r| r.record(pass));
    })?;
    Ok((
        model.read_params(ctx, &model.grad)?,
        ws.error_norms.read(ctx)?,
    ))
}
