//! Twins of the recurrences and the heads: `cpu::forward`, `cpu::gru`, `cpu::bptt`,
//! `cpu::head`, `cpu::seq_head`.

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use super::{after_forward, read_stack, workspace};
use crate::arguments::{self, steps};
use crate::config::{Hyper, Inversion, Loss, Method, TpConfig, TpGrad};
use crate::gpu::buffers::poison;
use crate::gpu::context::GpuContext;
use crate::gpu::layout::{matrix, rows_f32, stack, Shape};
use crate::gpu::options::GpuOptions;
use crate::gpu::segments::Segmenting;
use crate::gpu::seq_head::SeqHead;
use crate::kernel_io::{GruGrads, GruStep, HeadOut, Injection, RnnGrads, StepHeadOut};
use crate::model::{CellKind, Params};
use crate::tasks::{Batch, Targets};
use crate::validate::check_targets;

/// Hidden states h_0 … h_T on the GPU (stored in f32), as `cpu::forward::forward` returns
/// them.
pub fn forward(ctx: &GpuContext, params: &Params, x: &[DMatrix<f64>]) -> Result<Vec<DMatrix<f64>>> {
    forward_with(ctx, params, x, GpuOptions::default())
}

/// `forward` with the history stored, the time loop split and the sequences grouped into
/// workgroups as `options` say (h read back from its storage).
pub fn forward_with(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    options: GpuOptions,
) -> Result<Vec<DMatrix<f64>>> {
    let (_model, ws) = after_forward(ctx, params, x, &Hyper::default(), options)?;
    ws.seq.h.read(ctx, 0, ws.shape.steps + 1)
}

/// Hidden states h_0 … h_T on the GPU, as `cpu::gru::gru_forward` returns them.
pub fn gru_forward(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
) -> Result<Vec<DMatrix<f64>>> {
    Ok(gru_forward_gates(ctx, params, x)?.0)
}

/// Hidden states h_0 … h_T and, for t = 1 … T, the gates the kernel stored (as
/// `cpu::gru::gru_gates` computes them at (h_{t−1}, x_t)).
pub fn gru_forward_gates(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
) -> Result<(Vec<DMatrix<f64>>, Vec<GruStep>)> {
    gru_forward_gates_with(ctx, params, x, GpuOptions::default())
}

/// `gru_forward_gates` with the time loop split and the lanes per unit as `options` say.
pub fn gru_forward_gates_with(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    options: GpuOptions,
) -> Result<(Vec<DMatrix<f64>>, Vec<GruStep>)> {
    let bp = Hyper {
        method: Method::Bp,
        ..Hyper::default()
    };
    ensure!(
        params.cell == CellKind::Gru,
        "gru_forward needs GRU parameters, got a {:?} cell",
        params.cell
    );
    let (_model, ws) = after_forward(ctx, params, x, &bp, options)?;
    let Shape { batch: b, steps: t } = ws.shape;
    let d = params.dims().hidden;
    let h = ws.seq.h.read(ctx, 0, t + 1)?;
    // Each step's B rows hold r | z | n | hn side by side.
    let gates = read_stack(ctx, &ws.seq.gates, 0, t, b, 4 * d)?
        .into_iter()
        .map(|m| GruStep {
            r: m.columns(0, d).into_owned(),
            z: m.columns(d, d).into_owned(),
            n: m.columns(2 * d, d).into_owned(),
            hn: m.columns(3 * d, d).into_owned(),
        })
        .collect();
    Ok((h, gates))
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
    bptt_with(
        ctx,
        params,
        x,
        h,
        injection,
        through_time,
        GpuOptions::default(),
    )
}

/// `bptt` with the histories stored, the time loops split and the sequences grouped into
/// workgroups as `options` say.
pub fn bptt_with(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
    options: GpuOptions,
) -> Result<RnnGrads> {
    let (g, error_norms) = backward_once(ctx, params, x, h, (injection, through_time), options)?;
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
/// `options` as the iteration's.
pub(crate) fn backward_once(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    (injection, through_time): (Injection, bool),
    options: GpuOptions,
) -> Result<(Params, Vec<f64>)> {
    let b = x.first().map_or(0, |x_1| x_1.nrows());
    let states = (b, params.dims().hidden);
    steps("h", h, x.len() + 1, states)?;
    arguments::injection(&injection, x.len(), states)?;
    let (method, loss) = match injection {
        Injection::Top(_) => (Method::Bp, Loss::CrossEntropy),
        Injection::Targets(_) => (Method::Tp, Loss::CrossEntropy),
        Injection::Steps(_) => (Method::Bp, Loss::CrossEntropySeq),
    };
    ensure!(
        method == Method::Tp || through_time,
        "BP's recursion runs through time: its injections reach the steps below only so"
    );
    let hyper = Hyper {
        method,
        loss,
        tp: TpConfig {
            inversion: Inversion::default_for(params.cell),
            tp_grad: if through_time {
                TpGrad::ThroughTime
            } else {
                TpGrad::Local
            },
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let (model, ws) = after_forward(ctx, params, x, &hyper, options)?;
    match injection {
        Injection::Targets(v) => {
            // The kernel reads offsets v − h (see target_sweep.wgsl); form them in f64.
            let dv: Vec<_> = v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect();
            ws.seq.dv.write(ctx, 0, &dv);
        }
        Injection::Top(g) => ctx.write(&ws.seq.g_top, 0, &rows_f32(g)),
        // g_1 … g_T, as the heads at every step leave them [T, B, d].
        Injection::Steps(g) => ctx.write(&ws.seq.g_top, 0, &stack(g.get(1..).unwrap_or(&[]))),
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

/// Gradients of w_hh, w_ih, b_ih and b_hh on the GPU, as `cpu::gru::gru_bptt` returns
/// them (see `bptt::backward_once` for which states the kernel linearizes at).
pub fn gru_bptt(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<GruGrads> {
    let options = GpuOptions::default();
    gru_bptt_with(ctx, params, x, h, (injection, through_time), options)
}

/// `gru_bptt` with the time loops split and the lanes per unit as `options` say.
pub fn gru_bptt_with(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    (injection, through_time): (Injection, bool),
    options: GpuOptions,
) -> Result<GruGrads> {
    ensure!(
        params.cell == CellKind::Gru,
        "gru_bptt needs GRU parameters, got a {:?} cell",
        params.cell
    );
    let (g, error_norms) = backward_once(ctx, params, x, h, (injection, through_time), options)?;
    Ok(GruGrads {
        rnn: RnnGrads {
            w_hh: g.w_hh,
            w_ih: g.w_ih,
            b: g.b,
            error_norms,
        },
        b_hh: g.b_hh,
    })
}

/// The head's loss and gradients at `h_last` on the GPU, as `cpu::head::head` returns them.
pub fn head(
    ctx: &GpuContext,
    params: &Params,
    h_last: &DMatrix<f64>,
    y: &Targets,
    loss: Loss,
) -> Result<HeadOut> {
    let (b, d) = h_last.shape();
    let q = params.dims().output;
    ensure!(
        !loss.every_step(),
        "loss ce-seq scores the heads at every step: `head_steps` runs them"
    );
    check_targets(y, loss, b, q)?;
    arguments::matrix("h_last", h_last, b, params.dims().hidden)?;
    // A one-step batch whose h_1 is set to h_last.
    let batch = Batch {
        tokens: None,
        x: vec![DMatrix::zeros(b, params.dims().input)],
        y: y.clone(),
    };
    let hyper = Hyper {
        loss,
        ..Hyper::default()
    };
    let (model, ws) = workspace(ctx, params, &batch, &hyper, GpuOptions::default())?;
    ws.seq.h.write(ctx, 1, std::slice::from_ref(h_last));
    ctx.submit(|pass| ws.head.record(pass))?;
    let grads = model.read_params(ctx, &model.grad)?;
    let stats = ctx.read::<f32>(&ws.seq.stats, 0, 2)?;
    Ok(HeadOut {
        loss: f64::from(stats[0]),
        accuracy: f64::from(stats[1]),
        z: matrix(&ctx.read(&ws.seq.scratch, 0, b * q)?, b, q),
        grad_h: matrix(&ctx.read(&ws.seq.g_top, 0, b * d)?, b, d),
        grad_w: grads.head_w,
        grad_b: grads.head_b,
    })
}

/// The heads at every step on the GPU at the states `h` (h_0 … h_T), as
/// `cpu::seq_head::head_steps` returns them, taking `block_steps` steps at a time (the
/// training path takes as many as fit `limits::LOGIT_BLOCK_BYTES`).
pub fn head_steps(
    ctx: &GpuContext,
    params: &Params,
    h: &[DMatrix<f64>],
    y: &Targets,
    block_steps: usize,
) -> Result<StepHeadOut> {
    let t = h.len().saturating_sub(1);
    let (b, d) = h.first().map_or((0, 0), |m| m.shape());
    check_targets(y, Loss::CrossEntropySeq, b, params.dims().output)?;
    ensure!(
        (1..=t).contains(&block_steps),
        "a block of {block_steps} steps, for T = {t}"
    );
    ensure!(
        h.iter().all(|h_t| h_t.shape() == (b, params.dims().hidden)),
        "h_0 … h_T must each be {b}×{} (B×d)",
        params.dims().hidden
    );
    let batch = Batch {
        tokens: None,
        x: vec![DMatrix::zeros(b, params.dims().input); t],
        y: y.clone(),
    };
    let hyper = Hyper {
        method: Method::Bp,
        loss: Loss::CrossEntropySeq,
        ..Hyper::default()
    };
    let (model, ws) = workspace(ctx, params, &batch, &hyper, GpuOptions::default())?;
    ws.seq.h.write(ctx, 0, h);
    let segmenting = Segmenting::new(ctx, GpuOptions::default().steps_per_dispatch, b);
    let heads = SeqHead::new(ctx, &model, &ws.seq, ws.shape, block_steps, &segmenting)?;
    for buffer in [&heads.logits, &heads.row_stats, &heads.step_stats] {
        poison(ctx, buffer, (buffer.size() / 4) as usize);
    }
    ctx.submit(|pass| heads.record(pass))?;
    let grads = model.read_params(ctx, &model.grad)?;
    let stats = ctx.read::<f32>(&ws.seq.stats, 0, 2)?;
    let steps = ctx.read::<f32>(&heads.step_stats, 0, 2 * t)?;
    let mut grad_h = vec![DMatrix::zeros(b, d)];
    grad_h.extend(read_stack(ctx, &ws.seq.g_top, 0, t, b, d)?);
    Ok(StepHeadOut {
        loss: f64::from(stats[0]),
        accuracy: f64::from(stats[1]),
        step_losses: steps.iter().step_by(2).map(|&l| f64::from(l)).collect(),
        grad_h,
        grad_w: grads.head_w,
        grad_b: grads.head_b,
    })
}
