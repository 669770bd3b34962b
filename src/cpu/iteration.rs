//! One whole TP-RI or BP iteration on the CPU reference, every intermediate kept.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::backend::Trace;
use crate::config::{Hyper, Method, Solver, TpGrad, CPU_CG_TOL};
use crate::cpu::bptt::{bptt_steps, StepsInjection};
use crate::cpu::forward::forward_steps;
use crate::cpu::head::head;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky, CgReport};
use crate::cpu::steps::Steps;
use crate::cpu::target_sweep::target_sweep_steps;
use crate::model::Params;
use crate::tasks::Batch;

/// Checks that `batch` fits `params`, naming the mismatch.
pub fn check_batch(params: &Params, batch: &Batch) -> Result<()> {
    let p = params.w_ih.ncols();
    if batch.seq_len() == 0 {
        bail!("tensor x has no time steps (T = 0)");
    }
    let b = batch.batch_size();
    for x_t in &batch.x {
        if x_t.shape() != (b, p) {
            bail!("tensor x has steps of shape {:?}, expected [{b}, {p}] (B sequences, p = rnn.w_ih columns)", x_t.shape());
        }
    }
    Ok(())
}

/// A `Trace` with the hidden states and targets still in the working layout (`Steps`):
/// everything a training step needs, without converting T + 1 states twice.
#[derive(Clone, Debug)]
pub struct StepsTrace {
    /// h_0 … h_T.
    pub h: Steps,
    pub loss: f64,
    pub grads: Params,
    /// TP only: v_0 … v_T.
    pub v: Option<Steps>,
    pub p_inv: Option<DMatrix<f64>>,
    pub cg: Option<CgReport>,
    pub error_norms: Vec<f64>,
}

impl StepsTrace {
    /// In the public layout.
    pub fn into_trace(self) -> Trace {
        Trace {
            h: self.h.to_rows(),
            loss: self.loss,
            grads: self.grads,
            v: self.v.map(|v| v.to_rows()),
            p_inv: self.p_inv,
            cg: self.cg,
            error_norms: self.error_norms,
        }
    }

    /// TP: ‖v_t − h_t‖_F for t = 1 … T; BP: the backward errors ‖∂ℓ/∂h_t‖_F.
    pub fn step_norms(&self) -> Vec<f64> {
        match &self.v {
            Some(v) => (1..self.h.steps())
                .map(|t| {
                    let sq: f64 = v
                        .step(t)
                        .iter()
                        .zip(self.h.step(t))
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    sq.sqrt()
                })
                .collect(),
            None => self.error_norms.clone(),
        }
    }
}

/// Computes one iteration's quantities at `params` (nothing is updated). `warm_p` seeds CG.
pub fn iteration(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
) -> Result<Trace> {
    Ok(iteration_steps(params, batch, hyper, warm_p)?.into_trace())
}

/// `iteration`, with the states left in the working layout.
pub fn iteration_steps(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
) -> Result<StepsTrace> {
    hyper.validate()?;
    check_batch(params, batch)?;
    let x = Steps::from_rows(&batch.x, batch.batch_size(), params.w_ih.ncols());
    let h = forward_steps(params, &x);
    let t_len = batch.seq_len();
    let out = head(params, &h.rows_at(t_len), &batch.y, hyper.loss)?;
    let mut grads = Params {
        head_w: out.grad_w.clone(),
        head_b: out.grad_b.clone(),
        ..Params::zeros(params.dims())
    };
    let (rnn, v, p_inv, cg) = match hyper.method {
        Method::Bp => (
            bptt_steps(params, &x, &h, StepsInjection::Top(&out.grad_h), true),
            None,
            None,
            None,
        ),
        Method::Tp => {
            let tp = &hyper.tp;
            let (p_inv, cg) = match tp.solver {
                Solver::Cg => {
                    let (p, rep) = inverse_cg(
                        &params.w_hh,
                        tp.reg,
                        tp.cg_tol.unwrap_or(CPU_CG_TOL),
                        tp.cg_max_iter,
                        warm_p,
                    )?;
                    (p, Some(rep))
                }
                Solver::Cholesky => (inverse_cholesky(&params.w_hh, tp.reg)?, None),
            };
            let v = target_sweep_steps(
                params,
                &p_inv,
                &x,
                &h,
                &out.grad_h,
                tp.lr_target,
                tp.target_mode,
            );
            let through_time = tp.tp_grad == TpGrad::ThroughTime;
            let g = bptt_steps(params, &x, &h, StepsInjection::Targets(&v), through_time);
            (g, Some(v), Some(p_inv), cg)
        }
    };
    grads.w_hh = rnn.w_hh;
    grads.w_ih = rnn.w_ih;
    grads.b = rnn.b;
    Ok(StepsTrace {
        h,
        loss: out.loss,
        grads,
        v,
        p_inv,
        cg,
        error_norms: rnn.error_norms,
    })
}
