//! The training loop. It drives any `Backend` over any `Task` and knows nothing of
//! which device runs the iterations, nor where its records and checkpoints go.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Diagnostics, Eval};
use crate::cg::CgReport;
use crate::config::Hyper;
use crate::model::{CellKind, Dims, Params};
use crate::optimizer_state::OptState;
use crate::plan::{Device, Plan};
use crate::tasks::{build_task, Batch, Task, TaskSpec};

/// Everything a training run depends on; saved as `config.toml` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The task and its sizes.
    pub task: TaskSpec,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Hidden size d.
    pub hidden: usize,
    /// Sequences per batch B.
    pub batch_size: usize,
    /// Training iterations to run in all.
    pub iterations: u64,
    /// Evaluate every this many iterations (and at the end).
    pub eval_every: u64,
    /// Read the training loss and diagnostics every this many iterations (GPUs sync then).
    pub log_every: u64,
    /// Checkpoint every this many iterations (and at the end).
    pub checkpoint_every: u64,
    /// Held-out sequences (synthetic tasks; pixel tasks use at most this many test images).
    pub eval_size: usize,
    /// Seeds the initialisation and the data.
    pub seed: u64,
    /// The settings of every iteration; `hyper.loss` must be the task's.
    pub hyper: Hyper,
}

impl Default for RunConfig {
    fn default() -> Self {
        let task = TaskSpec::Adding { seq_len: 30 };
        Self {
            hyper: Hyper {
                loss: task.loss(),
                ..Hyper::default()
            },
            task,
            cell: CellKind::Tanh,
            hidden: 100,
            batch_size: 20,
            iterations: 1000,
            eval_every: 100,
            log_every: 10,
            checkpoint_every: 500,
            eval_size: 1000,
            seed: 0,
        }
    }
}

impl RunConfig {
    /// Rejects impossible settings, naming the value.
    pub fn validate(&self) -> Result<()> {
        Plan::check(self.cell, &self.hyper, Device::Cpu)?;
        if self.hyper.loss != self.task.loss() {
            bail!(
                "the task is scored with {:?}, but the config says loss {:?}",
                self.task.loss(),
                self.hyper.loss
            );
        }
        for (name, value) in [
            ("hidden", self.hidden),
            ("batch_size", self.batch_size),
            ("eval_size", self.eval_size),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        for (name, value) in [
            ("eval_every", self.eval_every),
            ("log_every", self.log_every),
            ("checkpoint_every", self.checkpoint_every),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1");
            }
        }
        crate::limits::check_run_config(self)?;
        Ok(())
    }
}

/// One line of the training log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Iterations completed.
    pub iteration: u64,
    /// Seconds of training so far (across resumptions).
    pub elapsed: f64,
    /// Training loss of the last batch (before its update); `None` at iteration 0.
    pub train_loss: Option<f64>,
    /// Evaluation on the held-out set, when one ran at this iteration.
    pub eval: Option<Eval>,
    /// The last CG solve, for TP.
    pub cg: Option<CgReport>,
    /// Per-step norms and gradient norm of the last step, where the backend has them.
    pub diagnostics: Option<Diagnostics>,
    /// Spectral norm of W, at evaluations.
    pub w_spectral_norm: Option<f64>,
}

/// Where a run's records and checkpoints go (a run directory, a test's memory, …).
pub trait RunSink {
    /// Called at every log or evaluation point.
    fn record(&mut self, record: &Record) -> Result<()>;
    /// Called every `checkpoint_every` iterations and at the end, with finite parameters.
    fn checkpoint(&mut self, state: &TrainState) -> Result<()>;
}

/// Everything needed to continue a run exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Iterations completed; the next batch has this index.
    pub iteration: u64,
    /// Seconds of training so far.
    pub elapsed: f64,
    /// Held-out loss of the initial parameters: the divergence threshold is twice it.
    pub initial_loss: f64,
    /// The training loss smoothed over log points (what the threshold is compared with).
    pub smoothed_loss: f64,
    /// The parameters after `iteration` iterations.
    pub params: Params,
    /// The optimizer's state after `iteration` iterations.
    pub opt: OptState,
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// `Backend::name` of the backend that ran it.
    pub backend: String,
    /// Iterations completed in all.
    pub iterations: u64,
    /// Seconds of training, across resumptions.
    pub wall_seconds: f64,
    /// Median host time of `Backend::step`: the whole iteration on the CPU; on GPUs,
    /// which run asynchronously, mostly submission time (see `tpri bench` for device times).
    pub median_step_seconds: f64,
    /// The record of the last iteration.
    pub last: Record,
}

/// Mean loss and accuracy over held-out batches, weighted by batch size.
pub fn evaluate(backend: &mut dyn Backend, eval_set: &[Batch]) -> Result<Eval> {
    backend
        .evaluate_all(eval_set)
        .context("evaluating on the held-out set")
}

/// The input and output sizes the task implies, with the configured hidden size.
pub fn model_dims(task: &dyn Task, hidden: usize) -> Dims {
    Dims {
        input: task.input_size(),
        hidden,
        output: task.output_size(),
    }
}

/// Trains from the seeded initialisation, or from `resume`, to `cfg.iterations`.
///
/// Stops with an error naming the iteration when the training loss becomes non-finite or
/// exceeds twice the initial loss (measured on the held-out set, which a single batch's
/// noise cannot trip); no checkpoint is written then, so the last good one stays.
pub fn train(
    backend: &mut dyn Backend,
    cfg: &RunConfig,
    resume: Option<TrainState>,
    sink: &mut dyn RunSink,
) -> Result<Summary> {
    cfg.validate()?;
    let task = build_task(&cfg.task, cfg.seed, cfg.eval_size)?;
    let dims = model_dims(task.as_ref(), cfg.hidden);
    // Drawn (or converted from pixels) once: every evaluation scores the same set.
    let eval_set = task.eval_batches(cfg.batch_size);
    let start = Instant::now();
    let (first, offset, initial_loss, mut smoothed) = match resume {
        Some(state) => {
            state
                .params
                .check_dims(dims)
                .context("the checkpoint does not fit the run's configuration")?;
            backend.load(&state.params, Some(&state.opt), &cfg.hyper)?;
            (
                state.iteration + 1,
                state.elapsed,
                state.initial_loss,
                state.smoothed_loss,
            )
        }
        None => {
            backend.load(&Params::init_of(cfg.cell, dims, cfg.seed), None, &cfg.hyper)?;
            let eval = evaluate(backend, &eval_set)?;
            let w_norm = spectral_norm(&backend.state()?.0);
            let record = Record {
                iteration: 0,
                elapsed: 0.0,
                train_loss: None,
                eval: Some(eval),
                cg: None,
                diagnostics: None,
                w_spectral_norm: Some(w_norm),
            };
            sink.record(&record)?;
            (1, 0.0, eval.loss, eval.loss)
        }
    };
    let mut last = None;
    let mut step_times = Vec::new();
    for i in first..=cfg.iterations {
        let batch = task.train_batch(i - 1, cfg.batch_size);
        let t0 = Instant::now();
        backend
            .step(&batch)
            .with_context(|| format!("iteration {i} failed"))?;
        step_times.push(t0.elapsed().as_secs_f64());
        let end = i == cfg.iterations;
        let eval_now = i % cfg.eval_every == 0 || end;
        let checkpoint_now = i % cfg.checkpoint_every == 0 || end;
        if !(eval_now || checkpoint_now || i % cfg.log_every == 0 || i == 1) {
            continue;
        }
        let point = backend.log_point(eval_now || checkpoint_now)?;
        let stats = point.stats;
        // One batch can score far above the held-out mean: smooth before comparing.
        smoothed = if i == 1 {
            stats.loss
        } else {
            0.5 * smoothed + 0.5 * stats.loss
        };
        if !stats.loss.is_finite() || smoothed > 2.0 * initial_loss {
            bail!(
                "training diverged at iteration {i}: train loss {:.4e} (smoothed {smoothed:.4e}, \
                 initial {initial_loss:.4e}); the last checkpoint is from before it",
                stats.loss
            );
        }
        let elapsed = offset + start.elapsed().as_secs_f64();
        let mut record = Record {
            iteration: i,
            elapsed,
            train_loss: Some(stats.loss),
            eval: None,
            cg: stats.cg,
            diagnostics: point.diagnostics,
            w_spectral_norm: None,
        };
        if let Some((params, opt)) = point.state {
            if !params
                .tensors()
                .iter()
                .all(|(_, m)| m.iter().all(|v| v.is_finite()))
            {
                bail!("training diverged at iteration {i}: the parameters are no longer finite; the last checkpoint is from before it");
            }
            if eval_now {
                record.eval = Some(evaluate(backend, &eval_set)?);
                record.w_spectral_norm = Some(spectral_norm(&params));
            }
            sink.record(&record)?;
            if checkpoint_now {
                sink.checkpoint(&TrainState {
                    iteration: i,
                    elapsed,
                    initial_loss,
                    smoothed_loss: smoothed,
                    params,
                    opt,
                })?;
            }
        } else {
            sink.record(&record)?;
        }
        last = Some(record);
    }
    step_times.sort_by(f64::total_cmp);
    Ok(Summary {
        backend: backend.name(),
        iterations: cfg.iterations,
        wall_seconds: offset + start.elapsed().as_secs_f64(),
        median_step_seconds: step_times.get(step_times.len() / 2).copied().unwrap_or(0.0),
        last: last
            .context("no iteration left to run: the run had already reached its iteration count")?,
    })
}

/// Largest singular value of the recurrent matrix W.
pub fn spectral_norm(params: &Params) -> f64 {
    params.w_hh.singular_values().max()
}
