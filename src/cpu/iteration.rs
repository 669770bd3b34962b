//! One whole TP-RI or BP iteration on the CPU reference, every intermediate kept.

use anyhow::{bail, Result};

use crate::backend::Trace;
use crate::config::{Hyper, Method, Solver, TpGrad, CPU_CG_TOL};
use crate::cpu::bptt::{bptt, Injection};
use crate::cpu::forward::forward;
use crate::cpu::head::head;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky};
use crate::cpu::target_sweep::target_sweep;
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

/// Computes one iteration's quantities at `params` (nothing is updated). `warm_p` seeds CG.
pub fn iteration(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&nalgebra::DMatrix<f64>>,
) -> Result<Trace> {
    hyper.validate()?;
    check_batch(params, batch)?;
    let h = forward(params, &batch.x);
    let t_len = batch.seq_len();
    let out = head(params, &h[t_len], &batch.y, hyper.loss)?;
    let mut grads = Params {
        head_w: out.grad_w.clone(),
        head_b: out.grad_b.clone(),
        ..Params::zeros(params.dims())
    };
    let (rnn, v, p_inv, cg) = match hyper.method {
        Method::Bp => (
            bptt(params, &batch.x, &h, Injection::Top(&out.grad_h), true),
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
            let v = target_sweep(
                params,
                &p_inv,
                &batch.x,
                &h,
                &out.grad_h,
                tp.lr_target,
                tp.target_mode,
            );
            let through_time = tp.tp_grad == TpGrad::ThroughTime;
            let g = bptt(params, &batch.x, &h, Injection::Targets(&v), through_time);
            (g, Some(v), Some(p_inv), cg)
        }
    };
    grads.w_hh = rnn.w_hh;
    grads.w_ih = rnn.w_ih;
    grads.b = rnn.b;
    Ok(Trace {
        h,
        loss: out.loss,
        grads,
        v,
        p_inv,
        cg,
        error_norms: rnn.error_norms,
    })
}
