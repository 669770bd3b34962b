//! The training loop. It drives any `Backend` over any `Task` and knows nothing of
//! which device runs the iterations, nor where its records and checkpoints go.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::backend::{Backend, Diagnostics, Eval};
use crate::cg::CgReport;
use crate::config::Method;
use crate::model::{Dims, Params};
use crate::optimizer_state::OptState;
use crate::tasks::{build_task, Batch, Task};

mod alignment;
mod divergence;
mod run_config;

pub use alignment::{compared, measure as measure_alignment, Alignment};
pub use divergence::{DivergenceCheck, Verdict, CHECKPOINT_FACTOR, FACTOR, PATIENCE, SMOOTHING};
pub use run_config::{check_run, RunConfig};

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
    /// With `RunConfig::alignment`, at evaluations: the method's gradient against BPTT's
    /// on the first held-out batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<Alignment>,
}

/// Where a run's records and checkpoints go (a run directory, a test's memory, …).
pub trait RunSink {
    /// Called at every log or evaluation point.
    fn record(&mut self, record: &Record) -> Result<()>;
    /// Called every `checkpoint_every` iterations and at the end, with parameters that are
    /// finite and healthy (`Session::run`).
    fn checkpoint(&mut self, state: &TrainState) -> Result<()>;
    /// Something the person running the training should know (a checkpoint skipped);
    /// ignored unless the sink shows it.
    fn note(&mut self, message: &str) {
        let _ = message;
    }
}

/// Everything needed to continue a run exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Iterations completed; the next batch has this index.
    pub iteration: u64,
    /// Seconds of training so far.
    pub elapsed: f64,
    /// The divergence rule after `iteration` iterations (ℓ_0, the reference and the
    /// smoothed training loss).
    pub divergence: DivergenceCheck,
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
    /// With outputs at every step (the language model, docs/ALGORITHM.md §13): the
    /// perplexities of the last record's losses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<Perplexity>,
}

/// Perplexities `exp(ℓ)` of a language model's mean cross-entropy per token ℓ.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Perplexity {
    /// Of the training loss (the last batch's, before its update).
    pub train: Option<f64>,
    /// Of the held-out loss, when the record has one.
    pub eval: Option<f64>,
}

impl Perplexity {
    /// The perplexities of `record`'s losses.
    pub fn of(record: &Record) -> Self {
        Self {
            train: record.train_loss.map(f64::exp),
            eval: record.eval.map(|e| e.loss.exp()),
        }
    }
}

/// Checks that `params` hold a trained embedding table exactly when `task` trains one,
/// with one row per word of its vocabulary (`TaskSpec::trained_embedding_rows`).
fn check_embedding_rows(params: &Params, task: &crate::tasks::TaskSpec) -> Result<()> {
    let (have, want) = (params.vocabulary(), task.trained_embedding_rows());
    if have == want {
        return Ok(());
    }
    let rows = |r: Option<usize>| match r {
        Some(v) => format!("a trained embedding table of V = {v} rows"),
        None => "no trained embedding table (a frozen one)".to_string(),
    };
    Err(crate::error::Error::setting(
        "Params::embedding",
        format!(
            "the parameters hold {}, but the run's task (TaskSpec::Lm::train_embedding, \
             TaskSpec::Lm::vocab) has {}",
            rows(have),
            rows(want)
        ),
    )
    .into())
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

/// Trains from the seeded initialisation, or from `resume`, to `cfg.iterations`:
/// `Session::prepare`, then `Session::run`.
pub fn train(
    backend: &mut dyn Backend,
    cfg: &RunConfig,
    resume: Option<TrainState>,
    sink: &mut dyn RunSink,
) -> Result<Summary> {
    Session::prepare(backend, cfg, resume)?.run(sink)
}

/// A run checked and loaded onto its backend. Everything that can fail before the first
/// iteration (the settings, the data, the backend's own checks of parameters and sizes,
/// the initial evaluation) has been tried by `prepare`, and nothing has been written to
/// any sink yet: a caller that creates files for the run does so after `prepare`
/// succeeds, so a refused run leaves nothing behind.
pub struct Session<'a> {
    backend: &'a mut dyn Backend,
    cfg: RunConfig,
    task: Box<dyn Task>,
    eval_set: Vec<Batch>,
    /// The first iteration to run.
    first: u64,
    /// Seconds of training before this session.
    offset: f64,
    divergence: DivergenceCheck,
    /// Iteration 0's record and parameters, for a fresh run.
    initial: Option<(Record, Params)>,
    /// The iteration of the last checkpoint known good: the one resumed from, then each
    /// one written.
    last_checkpoint: Option<u64>,
}

impl<'a> Session<'a> {
    /// Checks `cfg`, builds the task (reading its data), loads the initial parameters or
    /// `resume`'s onto `backend` and, for a fresh run, evaluates them.
    pub fn prepare(
        backend: &'a mut dyn Backend,
        cfg: &RunConfig,
        resume: Option<TrainState>,
    ) -> Result<Self> {
        cfg.validate()?;
        // The backend's own limits (the GPU's buffer sizes, its largest d) before the task,
        // the weights or anything else is built.
        backend.check_workload(&cfg.workload()?)?;
        if let Some(s) = &resume {
            if s.iteration >= cfg.iterations {
                bail!(
                    "the run has completed {} iterations already, and its iteration count is {}: \
                     nothing to run (give a larger total to continue it)",
                    s.iteration,
                    cfg.iterations
                );
            }
        }
        let task = build_task(&cfg.task, cfg.seed, cfg.eval_size)?;
        task.check_batch_size(cfg.batch_size)?;
        let dims = model_dims(task.as_ref(), cfg.hidden);
        // Drawn (or converted from pixels) once: every evaluation scores the same set.
        let eval_set = task.eval_batches(cfg.batch_size)?;
        let session = match resume {
            Some(state) => {
                state
                    .params
                    .check_dims(dims)
                    .and_then(|()| check_embedding_rows(&state.params, &cfg.task))
                    .context("the checkpoint does not fit the run's configuration")?;
                backend.load(&state.params, Some(&state.opt), &cfg.backend_hyper())?;
                Self {
                    backend,
                    cfg: cfg.clone(),
                    task,
                    eval_set,
                    first: state.iteration + 1,
                    offset: state.elapsed,
                    divergence: state.divergence,
                    initial: None,
                    last_checkpoint: Some(state.iteration),
                }
            }
            None => {
                let init = cfg.initialisation();
                let mut params = match cfg.hyper.method {
                    Method::Dtp => Params::init_dtp_with(init, dims, cfg.seed),
                    Method::Tp | Method::Bp => Params::init_with(cfg.cell, init, dims, cfg.seed),
                }?;
                if cfg.task.trained_embedding_rows().is_some() {
                    // The table the frozen runs use: both start from the same inputs.
                    params.embedding = task.embedding_table();
                    check_embedding_rows(&params, &cfg.task)?;
                }
                backend.load(&params, None, &cfg.backend_hyper())?;
                let eval = evaluate(backend, &eval_set)?;
                if !eval.loss.is_finite() {
                    bail!(
                        "the initial parameters' held-out loss is {}: the data or the settings \
                         give non-finite values before any training",
                        eval.loss
                    );
                }
                let params = backend.state()?.0;
                let w_norm = spectral_norm(&params);
                let initial = Record {
                    iteration: 0,
                    elapsed: 0.0,
                    train_loss: None,
                    eval: Some(eval),
                    cg: None,
                    diagnostics: None,
                    w_spectral_norm: Some(w_norm),
                    alignment: None,
                };
                Self {
                    backend,
                    cfg: cfg.clone(),
                    task,
                    eval_set,
                    first: 1,
                    offset: 0.0,
                    divergence: DivergenceCheck::new(eval.loss),
                    initial: Some((initial, params)),
                    last_checkpoint: None,
                }
            }
        };
        Ok(session)
    }

    /// `Backend::name` of the backend it trains on.
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// The first iteration `run` will train (1 for a fresh run).
    pub fn first_iteration(&self) -> u64 {
        self.first
    }

    /// Trains to the configured iteration count, recording at log points and
    /// checkpointing healthy parameters (docs/ALGORITHM.md §10).
    ///
    /// Stops with an error naming the iteration when the run diverges: a non-finite loss
    /// or parameter, or the smoothed training loss above `FACTOR` times its start for
    /// `PATIENCE` log points in a row (`DivergenceCheck`). A checkpoint is written only
    /// for parameters whose own held-out loss has been computed, is finite and at most
    /// `CHECKPOINT_FACTOR` times the start, while the smoothed loss is below the
    /// threshold: the last checkpoint before a divergence is a good one.
    pub fn run(mut self, sink: &mut dyn RunSink) -> Result<Summary> {
        let cfg = self.cfg.clone();
        let start = Instant::now();
        alignment::announce(&cfg, sink);
        if let Some((mut record, params)) = self.initial.take() {
            record.alignment =
                alignment::at_evaluation(&cfg, self.backend, &self.eval_set, (0, &params), sink);
            sink.record(&record)?;
        }
        let mut last = None;
        let mut step_times = Vec::new();
        for i in self.first..=cfg.iterations {
            let batch = self.task.train_batch(i - 1, cfg.batch_size)?;
            let t0 = Instant::now();
            if let Err(e) = self.backend.step(&batch) {
                return Err(self.failed(i, e));
            }
            step_times.push(t0.elapsed().as_secs_f64());
            let end = i == cfg.iterations;
            let eval_now = i % cfg.eval_every == 0 || end;
            let checkpoint_now = i % cfg.checkpoint_every == 0 || end;
            if !(eval_now || checkpoint_now || i % cfg.log_every == 0 || i == 1) {
                continue;
            }
            // A GPU backend learns here, reading the step's statistics back, whether its
            // solves converged.
            let point = match self.backend.log_point(eval_now || checkpoint_now) {
                Ok(point) => point,
                Err(e) => return Err(self.failed(i, e)),
            };
            let stats = point.stats;
            if let Verdict::Diverged(why) = self.divergence.observe(stats.loss) {
                bail!(self.diverged(i, &why));
            }
            let elapsed = self.offset + start.elapsed().as_secs_f64();
            let mut record = Record {
                iteration: i,
                elapsed,
                train_loss: Some(stats.loss),
                eval: None,
                cg: stats.cg,
                diagnostics: point.diagnostics,
                w_spectral_norm: None,
                alignment: None,
            };
            if let Some((params, opt)) = point.state {
                if !params
                    .tensors()
                    .iter()
                    .all(|(_, m)| m.iter().all(|v| v.is_finite()))
                {
                    bail!(self.diverged(i, "the parameters are no longer finite"));
                }
                // The held-out loss of these parameters: recorded at evaluation points, and
                // what decides whether they are healthy enough to checkpoint.
                let eval = evaluate(self.backend, &self.eval_set)?;
                if !eval.loss.is_finite() {
                    bail!(self.diverged(i, &format!("the held-out loss is {}", eval.loss)));
                }
                if eval_now {
                    record.eval = Some(eval);
                    record.w_spectral_norm = Some(spectral_norm(&params));
                    record.alignment = alignment::at_evaluation(
                        &cfg,
                        self.backend,
                        &self.eval_set,
                        (i, &params),
                        sink,
                    );
                }
                sink.record(&record)?;
                if checkpoint_now {
                    self.checkpoint(i, elapsed, eval.loss, params, opt, sink)?;
                }
            } else {
                sink.record(&record)?;
            }
            last = Some(record);
        }
        step_times.sort_by(f64::total_cmp);
        let last = last.context("no iteration was run")?;
        Ok(Summary {
            backend: self.backend.name(),
            iterations: cfg.iterations,
            wall_seconds: self.offset + start.elapsed().as_secs_f64(),
            median_step_seconds: step_times.get(step_times.len() / 2).copied().unwrap_or(0.0),
            perplexity: cfg.hyper.loss.every_step().then(|| Perplexity::of(&last)),
            last,
        })
    }

    /// Writes a checkpoint of the parameters after iteration `i` if they are healthy
    /// (`DivergenceCheck::healthy_with` their held-out loss); says so when they are not.
    fn checkpoint(
        &mut self,
        i: u64,
        elapsed: f64,
        held_out: f64,
        params: Params,
        opt: OptState,
        sink: &mut dyn RunSink,
    ) -> Result<()> {
        if !self.divergence.healthy_with(held_out) {
            sink.note(&format!(
                "iteration {i}: no checkpoint written, the run is not healthy: its held-out loss \
                 ({held_out:.4e}) is above {CHECKPOINT_FACTOR} × the start ({:.4e}), or the \
                 smoothed training loss ({:.4e}) above {FACTOR} × it; {}",
                self.divergence.reference.unwrap_or(f64::NAN),
                self.divergence.smoothed.unwrap_or(f64::NAN),
                match self.last_checkpoint {
                    Some(n) => format!("the last good checkpoint stays the one of iteration {n}"),
                    None => "there is no good checkpoint yet".to_string(),
                },
            ));
            return Ok(());
        }
        sink.checkpoint(&TrainState {
            iteration: i,
            elapsed,
            divergence: self.divergence,
            params,
            opt,
        })?;
        self.last_checkpoint = Some(i);
        Ok(())
    }

    /// The message of a divergence at iteration `i`, saying which checkpoint exists.
    fn diverged(&self, i: u64, why: &str) -> String {
        format!(
            "training diverged at iteration {i}: {why}; {}",
            self.last_good()
        )
    }

    /// The error of iteration `i`, saying which checkpoint exists and, when the recurrent
    /// matrix W has blown up (not finite, or ‖W‖_F above `BLOWN_UP`·√d, far beyond any
    /// trained W), that the update before it did: a failed solve is then a symptom, and
    /// its own advice (more CG iterations) would not help.
    fn failed(&mut self, i: u64, e: anyhow::Error) -> anyhow::Error {
        let e = e.context(format!("iteration {i} failed ({})", self.last_good()));
        let Ok((params, _)) = self.backend.state() else {
            return e;
        };
        let w = &params.w_hh;
        let norm = w.norm();
        let bound = BLOWN_UP * (w.ncols() as f64).sqrt();
        if norm.is_finite() && norm <= bound {
            return e;
        }
        e.context(format!(
            "the parameters blew up before iteration {i} (‖W‖_F = {norm:.3e}, where an \
             orthogonal W has {:.3e}); with TP-RI the usual cause is targets growing step after \
             step back through saturated states (step_norms.csv holds ‖v_t − h_t‖ of each \
             logged iteration); lower --lr or --lr-target, or raise --reg",
            (w.ncols() as f64).sqrt()
        ))
    }

    /// Which checkpoint a run stopped now could resume from.
    fn last_good(&self) -> String {
        match self.last_checkpoint {
            Some(n) if n + 1 == self.first => {
                format!("the last good checkpoint is the one this run resumed from, iteration {n}")
            }
            Some(n) => format!("the last good checkpoint is from iteration {n}"),
            None => "no checkpoint was written before it".to_string(),
        }
    }
}

/// ‖W‖_F beyond which a failed step's W counts as blown up, in units of √d (an
/// orthogonal W's).
const BLOWN_UP: f64 = 1e3;

/// Largest singular value of the recurrent matrix W.
pub fn spectral_norm(params: &Params) -> f64 {
    params.w_hh.singular_values().max()
}
