//! One whole TP-RI or BP iteration on the CPU reference, every intermediate kept.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::backend::Trace;
use crate::cg::CgReport;
use crate::config::{Hyper, Loss, TpConfig, TpGrad, CPU_CG_TOL};
use crate::cpu::cell::{recurrence, Forward, Recurrence};
use crate::cpu::dtp_reverse::reverse_gradient_steps;
use crate::cpu::dtp_targets::dtp_targets_steps;
use crate::cpu::embedding::inputs;
use crate::cpu::gru_per_gate::{gate_inverses, gru_per_gate_sweep_steps};
use crate::cpu::head::head;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky, NormalOperator};
use crate::cpu::jacobian::jacobian_sweep_steps;
use crate::cpu::optimizer::reverse_layer_step;
use crate::cpu::seq_head::head_steps_layout;
use crate::cpu::steps::{core_groups, in_parallel, Pool, Steps};
use crate::cpu::target_sweep::{target_sweep_steps, Inverse};
use crate::dtp::{Noise, ReverseLayer};
use crate::error::{shape_of, Error};
use crate::kernel_io::Injection;
use crate::limits::Workload;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::plan::{Device, Plan, Sizes, TargetSolve};
use crate::tasks::{Batch, Targets};
use crate::validate::{
    check_embedding, check_param_shapes, check_reverse_layer, check_run, check_step,
};

/// A `Trace` with the hidden states and targets still in the working layout (`Steps`):
/// everything a training step needs, without converting T + 1 states twice.
#[derive(Clone, Debug)]
pub struct StepsTrace {
    /// h_0 … h_T.
    pub h: Steps,
    /// The loss ℓ.
    pub loss: f64,
    /// As `Trace::grads`.
    pub grads: Params,
    /// TP only: v_0 … v_T.
    pub v: Option<Steps>,
    /// TP, where P was formed: P = (WᵀW + rI)⁻¹Wᵀ.
    pub p_inv: Option<DMatrix<f64>>,
    /// TP with the per-gate inversion: P_r, P_z, P_n.
    pub p_gates: Option<[DMatrix<f64>; 3]>,
    /// TP: the CG report (P's, or the per-step solves' worst).
    pub cg: Option<CgReport>,
    /// ‖e_t‖_F for t = 1 … T.
    pub error_norms: Vec<f64>,
    /// With outputs at every step: ℓ_t for t = 1 … T (empty otherwise).
    pub step_losses: Vec<f64>,
}

impl StepsTrace {
    /// Hands the per-step buffers to `pool` for the next iteration.
    pub fn recycle(self, pool: &mut Pool) {
        pool.give(self.h);
        if let Some(v) = self.v {
            pool.give(v);
        }
    }

    /// In the public layout.
    pub fn into_trace(self) -> Trace {
        Trace {
            h: self.h.to_rows(),
            loss: self.loss,
            grads: self.grads,
            v: self.v.map(|v| v.to_rows()),
            p_inv: self.p_inv,
            p_gates: self.p_gates,
            cg: self.cg,
            error_norms: self.error_norms,
            step_losses: self.step_losses,
        }
    }

    /// TP: ‖v_t − h_t‖_F for t = 1 … T; BP: the backward errors ‖∂ℓ/∂h_t‖_F.
    pub fn step_norms(&self) -> Vec<f64> {
        let Some(v) = &self.v else {
            return self.error_norms.clone();
        };
        let t_len = self.h.steps() - 1;
        let mut norms = vec![0.0; t_len];
        // A pass over all of h and v: worth both cores at long T.
        let groups = core_groups(t_len, t_len * v.batch() * v.width() * v.width());
        let mut parts = Vec::with_capacity(groups.len());
        let mut rest = norms.as_mut_slice();
        for g in groups {
            let (mine, others) = rest.split_at_mut(g.len());
            parts.push((g.start, mine));
            rest = others;
        }
        in_parallel(parts, |(first, out)| {
            for (k, norm) in out.iter_mut().enumerate() {
                let t = first + k + 1;
                let sq: f64 = v
                    .step(t)
                    .iter()
                    .zip(self.h.step(t))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                *norm = sq.sqrt();
            }
        });
        norms
    }
}

/// Computes one iteration's quantities at `params` (nothing is updated). `warm_p` seeds CG.
/// Checks everything first (`validate::check_run`, and that the iteration fits the memory
/// available).
pub fn iteration(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
) -> Result<Trace> {
    check_run(params, batch, hyper, Device::Cpu)?;
    let (t, b) = (batch.seq_len(), batch.batch_size());
    Workload::new(params.cell, params.dims(), t, b, hyper)
        .with_embedding(params.vocabulary())
        .check_cpu()?;
    let mut pool = Pool::default();
    Ok(iteration_steps(params, batch, hyper, warm_p, &mut pool)?.into_trace())
}

/// `iteration`, with the states left in the working layout, in buffers from `pool`
/// (`StepsTrace::recycle` gives them back). Checks the shapes of its inputs and the
/// settings (`validate::check_param_shapes`, `validate::check_step`), not the values of
/// the parameters (a training step leaves non-finite ones to the training loop to
/// notice) nor the memory.
pub(crate) fn iteration_steps(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
    pool: &mut Pool,
) -> Result<StepsTrace> {
    if let Some(w) = warm_p.filter(|w| w.shape() != (params.w_hh.ncols(), params.w_hh.ncols())) {
        return Err(Error::shape(
            "warm_p",
            shape_of(&[w.nrows(), w.ncols()]),
            format!("[{0}, {0}], P's shape (d×d)", params.w_hh.ncols()),
        )
        .into());
    }
    let (plan, x, Forward { h, gates }, out) = forward_and_head(params, batch, hyper, pool)?;
    let kept = gates.as_ref();
    let cell = recurrence(params);
    let t_len = batch.seq_len();
    let tokens = batch.tokens.as_ref();
    let (mut grads, v, p_inv, p_gates, cg) = match (plan, plan.targets()) {
        (Plan::Dtp, _) => {
            // At fixed parameters the targets use the reverse layer as given, and the
            // noise is the first iteration's.
            let reverse = reverse_layer(params)?;
            let noise = Noise::new(hyper.dtp.noise, hyper.dtp.noise_seed, 1);
            let grad = reverse_gradient_steps(params, reverse, &x, &h, noise);
            return Ok(dtp_targets_and_gradients(
                params, reverse, grad, x, h, out, hyper, pool,
            ));
        }
        (_, None) => {
            let injection = match &out.every_step {
                Some(g) => Injection::Steps(g),
                None => Injection::Top(&out.grad_top),
            };
            let g = cell.gradients(&x, (&h, kept), injection, true, tokens, pool);
            (g, None, None, None, None)
        }
        (_, Some(solve)) => {
            let tp = &hyper.tp;
            let mut p_gates = None;
            let (v, p_inv, cg) = match solve {
                // `Plan::new` refuses the jacobian inversion with outputs at every step.
                TargetSolve::Jacobian => {
                    let mut v = pool.take(h.steps(), h.batch(), h.width());
                    let cg = jacobian_targets(&*cell, &x, (&h, kept), &out.grad_top, tp, &mut v)?;
                    (v, None, Some(cg))
                }
                TargetSolve::PerGate { cholesky } => {
                    let (p, cg) = gate_inverses(params, tp, cholesky)?;
                    let mut v = pool.take(h.steps(), h.batch(), h.width());
                    let v_top = (h.rows_at(t_len) - &out.grad_top * tp.lr_target).transpose();
                    v.step_mut(t_len).copy_from_slice(v_top.as_slice());
                    gru_per_gate_sweep_steps(params, &p, &x, (&h, kept), &mut v);
                    p_gates = Some(p);
                    (v, None, cg)
                }
                analytic => {
                    let mut v = pool.take(h.steps(), h.batch(), h.width());
                    let (p_inv, cg) =
                        analytic_targets(params, analytic, &x, &h, &out, tp, warm_p, &mut v)?;
                    (v, p_inv, cg)
                }
            };
            let through_time = tp.tp_grad == TpGrad::ThroughTime;
            let injection = Injection::Targets(&v);
            let g = cell.gradients(&x, (&h, kept), injection, through_time, tokens, pool);
            (g, Some(v), p_inv, p_gates, cg)
        }
    };
    if let Some(g) = gates {
        pool.give(g);
    }
    grads.params.head_w = out.grad_w;
    grads.params.head_b = out.grad_b;
    Ok(StepsTrace {
        h,
        loss: out.loss,
        grads: grads.params,
        v,
        p_inv,
        p_gates,
        cg,
        error_norms: grads.error_norms,
        step_losses: out.step_losses,
    })
}

/// What the head (at the last step) or the heads (at every step) give an iteration.
struct Outputs {
    loss: f64,
    /// g_T = ∇_{h_T} ℓ.
    grad_top: DMatrix<f64>,
    /// With outputs at every step: g_t = ∇_{h_t} ℓ for every t, shaped like h.
    every_step: Option<Steps>,
    step_losses: Vec<f64>,
    grad_w: DMatrix<f64>,
    grad_b: DMatrix<f64>,
}

impl Outputs {
    fn new(params: &Params, h: &Steps, y: &Targets, loss: Loss) -> Result<Self> {
        let t_len = h.steps() - 1;
        if loss.every_step() {
            let out = head_steps_layout(params, h, y)?;
            return Ok(Self {
                loss: out.loss,
                grad_top: out.grad_h[t_len].clone(),
                every_step: Some(Steps::from_rows(&out.grad_h, h.batch(), h.width())),
                step_losses: out.step_losses,
                grad_w: out.grad_w,
                grad_b: out.grad_b,
            });
        }
        let out = head(params, &h.rows_at(t_len), y, loss)?;
        Ok(Self {
            loss: out.loss,
            grad_top: out.grad_h,
            every_step: None,
            step_losses: Vec::new(),
            grad_w: out.grad_w,
            grad_b: out.grad_b,
        })
    }
}

/// A DTP training iteration up to its last update (docs/ALGORITHM.md §14): the forward
/// pass and the head, the reverse layer's gradient on this iteration's noise (the stream
/// of `opt.step + 1`), its optimizer step (`reverse_layer_step`, which counts the
/// iteration's step), then the targets through the updated reverse layer and the
/// surrogate's gradient. The caller applies `optimizer::forward_step` with the returned
/// gradients (whose reverse-layer part has been applied already). Checks as
/// `iteration_steps` does.
pub(crate) fn dtp_step(
    params: &mut Params,
    opt: &mut OptState,
    batch: &Batch,
    hyper: &Hyper,
    pool: &mut Pool,
) -> Result<StepsTrace> {
    // DTP runs the tanh RNN, which keeps no gates.
    let (_, x, Forward { h, .. }, out) = forward_and_head(params, batch, hyper, pool)?;
    let noise = Noise::new(hyper.dtp.noise, hyper.dtp.noise_seed, opt.step + 1);
    let grad = reverse_gradient_steps(params, reverse_layer(params)?, &x, &h, noise);
    let step = Params {
        dtp: Some(grad.clone()),
        ..params.zeros_like()
    };
    reverse_layer_step(&hyper.opt, hyper.dtp.lr_reverse, opt, params, &step);
    let reverse = reverse_layer(params)?;
    Ok(dtp_targets_and_gradients(
        params, reverse, grad, x, h, out, hyper, pool,
    ))
}

/// What every iteration starts with: the checks of its inputs and settings
/// (`validate::check_param_shapes`, `validate::check_step`, `validate::check_reverse_layer`),
/// its plan, the inputs in the working layout, the forward pass and the head.
fn forward_and_head(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    pool: &mut Pool,
) -> Result<(Plan, Steps, Forward, Outputs)> {
    let dims = check_param_shapes(params)?;
    check_embedding(params, hyper.method)?;
    check_step(
        params.cell,
        dims,
        params.vocabulary(),
        batch,
        hyper,
        Device::Cpu,
    )?;
    check_reverse_layer(params, hyper.method)?;
    let t_len = batch.seq_len();
    let sizes = Sizes {
        hidden: dims.hidden,
        steps: t_len,
        batch: batch.batch_size(),
    };
    let plan = Plan::new(params.cell, hyper, Device::Cpu, sizes)?;
    let x = inputs(params, batch)?;
    let forward = recurrence(params).forward(&x, pool);
    let out = Outputs::new(params, &forward.h, &batch.y, hyper.loss)?;
    Ok((plan, x, forward, out))
}

/// The reverse layer of DTP's parameters (`check_reverse_layer` has made sure of it).
fn reverse_layer(params: &Params) -> Result<&ReverseLayer> {
    params
        .dtp
        .as_ref()
        .ok_or_else(|| Error::setting("Params::dtp", "DTP needs a reverse layer").into())
}

/// DTP's targets through `reverse` and the surrogate's gradient `Σ_t ½‖h_t − v_t‖² / B`
/// (a mean over the batch, as the published code takes it), with the head's gradients
/// and the reverse layer's `reverse_grad`.
#[allow(clippy::too_many_arguments)]
fn dtp_targets_and_gradients(
    params: &Params,
    reverse: &ReverseLayer,
    reverse_grad: ReverseLayer,
    x: Steps,
    h: Steps,
    out: Outputs,
    hyper: &Hyper,
    pool: &mut Pool,
) -> StepsTrace {
    let mut v = pool.take(h.steps(), h.batch(), h.width());
    dtp_targets_steps(
        params,
        reverse,
        &x,
        &h,
        &out.grad_top,
        hyper.tp.lr_target,
        &mut v,
    );
    let through_time = hyper.tp.tp_grad == TpGrad::ThroughTime;
    let cell = recurrence(params);
    // `validate::check_embedding` keeps trained embeddings off DTP.
    let injection = Injection::Targets(&v);
    let mut grads = cell.gradients(&x, (&h, None), injection, through_time, None, pool);
    // The recursion is linear in what it is given: the mean's gradient and errors are
    // the sum's over B.
    let scale = 1.0 / h.batch() as f64;
    // The cell's four tensors (the head's and the reverse layer's come below).
    for m in grads.params.tensors_mut().into_iter().take(4) {
        *m *= scale;
    }
    grads.error_norms.iter_mut().for_each(|e| *e *= scale);
    grads.params.head_w = out.grad_w;
    grads.params.head_b = out.grad_b;
    grads.params.dtp = Some(reverse_grad);
    StepsTrace {
        h,
        loss: out.loss,
        grads: grads.params,
        v: Some(v),
        p_inv: None,
        p_gates: None,
        cg: None,
        error_norms: grads.error_norms,
        step_losses: out.step_losses,
    }
}

/// The analytic inversion's targets (docs/ALGORITHM.md §2 step 5; with outputs at every
/// step their local targets too, §13) into `v`: P formed by
/// `solve` (CG warm from `warm_p`, or Cholesky) or per-step CG solves. Returns P where it
/// was formed and the CG report (P's, or the per-step solves' worst).
#[allow(clippy::too_many_arguments)]
fn analytic_targets(
    params: &Params,
    solve: TargetSolve,
    x: &Steps,
    h: &Steps,
    out: &Outputs,
    tp: &TpConfig,
    warm_p: Option<&DMatrix<f64>>,
    v: &mut Steps,
) -> Result<(Option<DMatrix<f64>>, Option<CgReport>)> {
    let tol = tp.cg_tol.unwrap_or(CPU_CG_TOL);
    let (p_inv, cg) = match solve {
        TargetSolve::FormP { cholesky: true } => {
            (Some(inverse_cholesky(&params.w_hh, tp.reg)?), None)
        }
        TargetSolve::FormP { cholesky: false } => {
            let (p, rep) = inverse_cg(&params.w_hh, tp.reg, tol, tp.cg_max_iter, warm_p)?;
            (Some(p), Some(rep))
        }
        _ => (None, None),
    };
    let op;
    let inverse = match &p_inv {
        Some(p) => Inverse::Formed(p),
        None => {
            op = NormalOperator::new(&params.w_hh, tp.reg);
            Inverse::PerStep {
                op: &op,
                tol,
                max_iter: tp.cg_max_iter,
            }
        }
    };
    let per_step = target_sweep_steps(
        params,
        inverse,
        x,
        h,
        &out.grad_top,
        out.every_step.as_ref(),
        tp.lr_target,
        tp.target_mode,
        v,
    )?;
    Ok((p_inv, cg.or(per_step)))
}

/// docs/ALGORITHM.md §5's targets from `v_T = h_T − γ_h g_T` down into `v`, each step by
/// per-step batched CG on Jacobian products at the states h (and the GRU's kept gates).
/// The report is the steps' (`CgReport::successive`): most iterations, largest residual,
/// solved steps and their iterations summed.
fn jacobian_targets(
    cell: &dyn Recurrence,
    x: &Steps,
    h: (&Steps, Option<&Steps>),
    grad_h: &DMatrix<f64>,
    tp: &TpConfig,
    v: &mut Steps,
) -> Result<CgReport> {
    let t_len = h.0.steps() - 1;
    let v_top = h.0.rows_at(t_len) - grad_h * tp.lr_target;
    v.step_mut(t_len)
        .copy_from_slice(v_top.transpose().as_slice());
    let tol = tp.cg_tol.unwrap_or(CPU_CG_TOL);
    let linearized = cell.linearized(x, h);
    let solve = (tp.reg, tol, tp.cg_max_iter, tp.precondition);
    let reports = jacobian_sweep_steps(&*linearized, h.0, v, solve)?;
    Ok(CgReport::successive(reports))
}
