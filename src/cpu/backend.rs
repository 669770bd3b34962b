//! The CPU reference as a `Backend`.

use anyhow::{Context, Result};
use nalgebra::DMatrix;

use crate::backend::{Backend, Eval, StepStats, Trace};
use crate::config::Hyper;
use crate::cpu::forward::forward;
use crate::cpu::head::head;
use crate::cpu::iteration::{check_batch, iteration};
use crate::cpu::optimizer::{optimizer_step, OptState};
use crate::model::Params;
use crate::tasks::Batch;

/// The f64 CPU reference backend. Keeps the last P to warm-start the next CG solve.
#[derive(Default)]
pub struct CpuBackend {
    train: Option<Training>,
}

struct Training {
    params: Params,
    opt: OptState,
    hyper: Hyper,
    last_p: Option<DMatrix<f64>>,
    last: Option<StepStats>,
}

impl CpuBackend {
    /// A backend with nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    fn training(&mut self) -> Result<&mut Training> {
        self.train
            .as_mut()
            .context("no parameters loaded: call load() first")
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu (f64 reference)".into()
    }

    fn trace(&mut self, params: &Params, batch: &Batch, hyper: &Hyper) -> Result<Trace> {
        iteration(params, batch, hyper, None)
    }

    fn load(&mut self, params: &Params, opt: Option<&OptState>, hyper: &Hyper) -> Result<()> {
        hyper.validate()?;
        let opt = opt.cloned().unwrap_or_else(|| OptState::new(params.dims()));
        for slot in [&opt.m, &opt.v] {
            slot.check_dims(params.dims())
                .context("optimizer state does not match the parameters")?;
        }
        self.train = Some(Training {
            params: params.clone(),
            opt,
            hyper: hyper.clone(),
            last_p: None,
            last: None,
        });
        Ok(())
    }

    fn step(&mut self, batch: &Batch) -> Result<()> {
        let tr = self.training()?;
        let trace = iteration(&tr.params, batch, &tr.hyper, tr.last_p.as_ref())?;
        optimizer_step(&tr.hyper.opt, &mut tr.opt, &mut tr.params, &trace.grads);
        tr.last_p = trace.p_inv;
        tr.last = Some(StepStats {
            loss: trace.loss,
            cg: trace.cg,
        });
        Ok(())
    }

    fn last_stats(&mut self) -> Result<StepStats> {
        self.training()?.last.clone().context("no step has run yet")
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<Eval> {
        let tr = self.training()?;
        check_batch(&tr.params, batch)?;
        let h = forward(&tr.params, &batch.x);
        let out = head(&tr.params, &h[batch.seq_len()], &batch.y, tr.hyper.loss)?;
        Ok(Eval {
            loss: out.loss,
            accuracy: out.accuracy,
        })
    }

    fn state(&mut self) -> Result<(Params, OptState)> {
        let tr = self.training()?;
        Ok((tr.params.clone(), tr.opt.clone()))
    }
}
