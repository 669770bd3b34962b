//! One whole TP-RI or BP iteration on the CPU reference, every intermediate kept.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::backend::Trace;
use crate::cg::CgReport;
use crate::config::{Hyper, TpConfig, TpGrad, CPU_CG_TOL};
use crate::cpu::bptt::{bptt_steps, StepsInjection};
use crate::cpu::forward::forward_steps;
use crate::cpu::gru::{gru_bptt, gru_forward};
use crate::cpu::head::head;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky, NormalOperator};
use crate::cpu::jacobian::{jacobian_sweep, Cell, GruCell, TanhCell};
use crate::cpu::steps::{core_groups, in_parallel, Pool, Steps};
use crate::cpu::target_sweep::{target_sweep_steps, Inverse};
use crate::kernel_io::Injection;
use crate::model::{CellKind, Params};
use crate::plan::{Device, Plan, Sizes, TargetSolve};
use crate::tasks::Batch;
use crate::validate::check_batch;

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
            cg: self.cg,
            error_norms: self.error_norms,
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
pub fn iteration(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
) -> Result<Trace> {
    let mut pool = Pool::default();
    Ok(iteration_steps(params, batch, hyper, warm_p, &mut pool)?.into_trace())
}

/// Hidden states h_0 … h_T of `params`' cell on `batch` (inputs `x` in the working layout),
/// in a buffer from `pool`.
pub fn states(params: &Params, batch: &Batch, x: &Steps, pool: &mut Pool) -> Steps {
    match params.cell {
        CellKind::Tanh => {
            let mut h = pool.take(x.steps() + 1, x.batch(), params.dims().hidden);
            forward_steps(params, x, &mut h);
            h
        }
        CellKind::Gru => Steps::from_rows(
            &gru_forward(params, &batch.x),
            batch.batch_size(),
            params.dims().hidden,
        ),
    }
}

/// `iteration`, with the states left in the working layout, in buffers from `pool`
/// (`StepsTrace::recycle` gives them back).
pub fn iteration_steps(
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    warm_p: Option<&DMatrix<f64>>,
    pool: &mut Pool,
) -> Result<StepsTrace> {
    check_batch(params, batch)?;
    let t_len = batch.seq_len();
    let sizes = Sizes {
        hidden: params.dims().hidden,
        steps: t_len,
        batch: batch.batch_size(),
    };
    let plan = Plan::new(params.cell, hyper, Device::Cpu, sizes)?;
    let x = Steps::from_rows(&batch.x, batch.batch_size(), params.w_ih.ncols());
    let h = states(params, batch, &x, pool);
    let out = head(params, &h.rows_at(t_len), &batch.y, hyper.loss)?;
    let inputs = Inputs { params, batch, x };
    let (mut grads, v, p_inv, cg) = match plan.targets() {
        None => {
            let g = inputs.recurrent_grads(&h, StepsInjection::Top(&out.grad_h), true, pool);
            (g, None, None, None)
        }
        Some(solve) => {
            let tp = &hyper.tp;
            let (v, p_inv, cg) = match solve {
                TargetSolve::FormP { .. } | TargetSolve::PerStep => {
                    let tol = tp.cg_tol.unwrap_or(CPU_CG_TOL);
                    let (p_inv, cg) = match solve {
                        TargetSolve::FormP { cholesky: true } => {
                            (Some(inverse_cholesky(&params.w_hh, tp.reg)?), None)
                        }
                        TargetSolve::FormP { cholesky: false } => {
                            let (p, rep) =
                                inverse_cg(&params.w_hh, tp.reg, tol, tp.cg_max_iter, warm_p)?;
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
                    let mut v = pool.take(h.steps(), h.batch(), h.width());
                    let per_step = target_sweep_steps(
                        params,
                        inverse,
                        &inputs.x,
                        &h,
                        &out.grad_h,
                        tp.lr_target,
                        tp.target_mode,
                        &mut v,
                    )?;
                    (v, p_inv, cg.or(per_step))
                }
                TargetSolve::Jacobian => {
                    let (v, cg) = inputs.jacobian_targets(&h, &out.grad_h, &hyper.tp)?;
                    (v, None, Some(cg))
                }
            };
            let through_time = tp.tp_grad == TpGrad::ThroughTime;
            let g = inputs.recurrent_grads(&h, StepsInjection::Targets(&v), through_time, pool);
            (g, Some(v), p_inv, cg)
        }
    };
    grads.head_w = out.grad_w;
    grads.head_b = out.grad_b;
    let error_norms = std::mem::take(&mut grads.error_norms);
    Ok(StepsTrace {
        h,
        loss: out.loss,
        grads: grads.params,
        v,
        p_inv,
        cg,
        error_norms,
    })
}

/// What every phase after the forward pass reads: the parameters and the inputs in both
/// layouts (the GRU's plain code works on per-step matrices).
struct Inputs<'a> {
    params: &'a Params,
    batch: &'a Batch,
    x: Steps,
}

/// Recurrent gradients as a whole `Params` (head left at zero) with the error norms.
struct CellGrads {
    params: Params,
    error_norms: Vec<f64>,
}

impl std::ops::Deref for CellGrads {
    type Target = Params;
    fn deref(&self) -> &Params {
        &self.params
    }
}

impl std::ops::DerefMut for CellGrads {
    fn deref_mut(&mut self) -> &mut Params {
        &mut self.params
    }
}

impl Inputs<'_> {
    /// Gradients of the cell's tensors from what `injection` puts into the backward
    /// recursion (docs/ALGORITHM.md §2 step 6 and §3 for the tanh RNN; the same recursion through the
    /// GRU's step for the GRU).
    fn recurrent_grads(
        &self,
        h: &Steps,
        injection: StepsInjection,
        through_time: bool,
        pool: &mut Pool,
    ) -> CellGrads {
        let mut params = self.params.zeros_like();
        let rnn = match self.params.cell {
            CellKind::Tanh => {
                let mut delta = pool.take(self.x.steps(), h.batch(), h.width());
                let g = bptt_steps(self.params, &self.x, h, injection, through_time, &mut delta);
                pool.give(delta);
                g
            }
            CellKind::Gru => {
                let targets;
                let injection = match injection {
                    StepsInjection::Top(g) => Injection::Top(g),
                    StepsInjection::Targets(v) => {
                        targets = v.to_rows();
                        Injection::Targets(&targets)
                    }
                };
                let g = gru_bptt(
                    self.params,
                    &self.batch.x,
                    &h.to_rows(),
                    injection,
                    through_time,
                );
                params.b_hh = g.b_hh;
                g.rnn
            }
        };
        params.w_hh = rnn.w_hh;
        params.w_ih = rnn.w_ih;
        params.b = rnn.b;
        CellGrads {
            params,
            error_norms: rnn.error_norms,
        }
    }

    /// docs/ALGORITHM.md §5's targets from `v_T = h_T − γ_h g_T` down, each step by per-step batched CG
    /// on Jacobian products. The report is the worst step's: most iterations, largest
    /// residual.
    fn jacobian_targets(
        &self,
        h: &Steps,
        grad_h: &DMatrix<f64>,
        tp: &TpConfig,
    ) -> Result<(Steps, CgReport)> {
        let rows = h.to_rows();
        let t_len = rows.len() - 1;
        let v_top = &rows[t_len] - grad_h * tp.lr_target;
        let tanh;
        let gru;
        let cell: &dyn Cell = match self.params.cell {
            CellKind::Tanh => {
                tanh = TanhCell::new(self.params, &rows);
                &tanh
            }
            CellKind::Gru => {
                gru = GruCell::new(self.params, &self.batch.x, &rows);
                &gru
            }
        };
        let tol = tp.cg_tol.unwrap_or(CPU_CG_TOL);
        let (v, reports) = jacobian_sweep(cell, &rows, &v_top, tp.reg, tol, tp.cg_max_iter)?;
        let worst = CgReport::worst(reports);
        Ok((Steps::from_rows(&v, h.batch(), h.width()), worst))
    }
}
