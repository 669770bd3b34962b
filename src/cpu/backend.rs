//! The CPU reference as a `Backend`.

use anyhow::{Context, Result};

use crate::backend::{Backend, Diagnostics, Eval, StepStats, Trace};
use crate::config::{Hyper, Method};
use crate::cpu::cell::recurrence;
use crate::cpu::embedding::inputs;
use crate::cpu::head::head;
use crate::cpu::iteration::{dtp_step, iteration, iteration_steps};
use crate::cpu::optimizer::{forward_step, optimizer_step};
use crate::cpu::seq_head::head_steps_layout;
use crate::cpu::steps::Pool;
use crate::limits::Workload;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::plan::{Device, Plan};
use crate::tasks::Batch;
use crate::validate::{
    check_embedding, check_inputs, check_params, check_reverse_layer, check_step, check_targets,
    check_tokens,
};

/// The f64 CPU reference backend.
#[derive(Default)]
pub struct CpuBackend {
    train: Option<Training>,
}

struct Training {
    params: Params,
    opt: OptState,
    hyper: Hyper,
    last: Option<(StepStats, Diagnostics)>,
    /// The per-step buffers, reused from step to step.
    pool: Pool,
    /// Batch shapes (T, B) whose memory has been checked (`Workload::check_cpu`).
    checked: Vec<(usize, usize)>,
}

impl Training {
    /// Checks once per batch shape that its iteration fits the memory available.
    fn check_memory(&mut self, batch: &Batch) -> Result<()> {
        let shape = (batch.seq_len(), batch.batch_size());
        if !self.checked.contains(&shape) {
            let dims = self.params.dims();
            Workload::new(self.params.cell, dims, shape.0, shape.1, &self.hyper)
                .with_embedding(self.params.vocabulary())
                .check_cpu()?;
            self.checked.push(shape);
        }
        Ok(())
    }
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

    /// Checks the parameters (`validate::check_params`), the optimizer state and the
    /// settings exactly as the GPU backend does, then takes them.
    fn load(&mut self, params: &Params, opt: Option<&OptState>, hyper: &Hyper) -> Result<()> {
        check_params(params)?;
        Plan::check(params.cell, hyper, Device::Cpu)?;
        check_reverse_layer(params, hyper.method)?;
        check_embedding(params, hyper.method)?;
        let opt = OptState::for_params(opt, params)?;
        self.train = Some(Training {
            params: params.clone(),
            opt,
            hyper: hyper.clone(),
            last: None,
            pool: Pool::default(),
            checked: Vec::new(),
        });
        Ok(())
    }

    fn step(&mut self, batch: &Batch) -> Result<()> {
        let tr = self.training()?;
        let (cell, dims) = (tr.params.cell, tr.params.dims());
        check_step(
            cell,
            dims,
            tr.params.vocabulary(),
            batch,
            &tr.hyper,
            Device::Cpu,
        )?;
        tr.check_memory(batch)?;
        // Cold CG on purpose: the reference keeps no solver state beyond parameters and
        // optimizer state, so a run resumed from a checkpoint is bit-identical.
        // The states stay in the working layout: the step needs only their norms.
        let trace = if tr.hyper.method == Method::Dtp {
            // The reverse layer steps inside, before its targets are computed.
            let trace = dtp_step(&mut tr.params, &mut tr.opt, batch, &tr.hyper, &mut tr.pool)?;
            forward_step(&tr.hyper.opt, &mut tr.opt, &mut tr.params, &trace.grads);
            trace
        } else {
            let trace = iteration_steps(&tr.params, batch, &tr.hyper, None, &mut tr.pool)?;
            optimizer_step(&tr.hyper.opt, &mut tr.opt, &mut tr.params, &trace.grads)?;
            trace
        };
        let diagnostics = Diagnostics {
            step_norms: trace.step_norms(),
            grad_norm: trace.grads.norm(),
        };
        let stats = StepStats {
            loss: trace.loss,
            cg: trace.cg,
        };
        trace.recycle(&mut tr.pool);
        tr.last = Some((stats, diagnostics));
        Ok(())
    }

    fn last_stats(&mut self) -> Result<StepStats> {
        Ok(self
            .training()?
            .last
            .as_ref()
            .context("no step has run yet")?
            .0
            .clone())
    }

    fn last_diagnostics(&mut self) -> Result<Option<Diagnostics>> {
        Ok(Some(
            self.training()?
                .last
                .as_ref()
                .context("no step has run yet")?
                .1
                .clone(),
        ))
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<Eval> {
        let tr = self.training()?;
        let dims = tr.params.dims();
        check_inputs(dims, batch)?;
        check_targets(&batch.y, tr.hyper.loss, batch.batch_size(), dims.output)?;
        check_tokens(tr.params.vocabulary(), batch)?;
        tr.check_memory(batch)?;
        let x = inputs(&tr.params, batch)?;
        let forward = recurrence(&tr.params).forward(&x, &mut tr.pool);
        let h = &forward.h;
        let out = if tr.hyper.loss.every_step() {
            head_steps_layout(&tr.params, h, &batch.y).map(|o| (o.loss, o.accuracy))
        } else {
            let h_last = h.rows_at(batch.seq_len());
            head(&tr.params, &h_last, &batch.y, tr.hyper.loss).map(|o| (o.loss, o.accuracy))
        };
        forward.recycle(&mut tr.pool);
        let (loss, accuracy) = out?;
        Ok(Eval { loss, accuracy })
    }

    fn state(&mut self) -> Result<(Params, OptState)> {
        let tr = self.training()?;
        Ok((tr.params.clone(), tr.opt.clone()))
    }
}
