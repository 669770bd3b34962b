//! The training loop. It drives any `Backend` over any `Task` and knows nothing of
//! which device runs the iterations.

use std::time::Instant;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Eval};
use crate::config::Hyper;
use crate::cpu::inverse::CgReport;
use crate::model::{Dims, Params};
use crate::tasks::{build_task, Task, TaskSpec};

/// Everything a training run depends on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub task: TaskSpec,
    /// Hidden size d.
    pub hidden: usize,
    /// Sequences per batch B.
    pub batch_size: usize,
    /// Training iterations to run.
    pub iterations: u64,
    /// Evaluate every this many iterations (and at the end).
    pub eval_every: u64,
    /// Read the training loss back every this many iterations (GPU backends sync then).
    pub log_every: u64,
    /// Held-out sequences for synthetic tasks.
    pub eval_size: usize,
    /// Seeds the initialisation and the data.
    pub seed: u64,
    pub hyper: Hyper,
}

impl RunConfig {
    /// Rejects impossible settings, naming the value.
    pub fn validate(&self) -> Result<()> {
        self.hyper.validate()?;
        if self.hidden == 0 {
            bail!("hidden size must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch size must be at least 1");
        }
        if self.eval_every == 0 || self.log_every == 0 {
            bail!("eval_every and log_every must be at least 1");
        }
        if self.eval_size == 0 {
            bail!("eval_size must be at least 1");
        }
        Ok(())
    }
}

/// One line of the training log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Iterations completed.
    pub iteration: u64,
    /// Seconds since training started.
    pub elapsed: f64,
    /// Training loss of the last batch (before its update); `None` at iteration 0.
    pub train_loss: Option<f64>,
    /// Evaluation on the held-out set, when one ran at this iteration.
    pub eval: Option<EvalRecord>,
    /// The last CG solve, for TP.
    pub cg: Option<CgReport>,
}

/// Evaluation loss and accuracy (serializable twin of `Eval`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EvalRecord {
    pub loss: f64,
    pub accuracy: f64,
}

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub backend: String,
    pub iterations: u64,
    pub wall_seconds: f64,
    /// Median host time of `Backend::step`: the whole iteration on the CPU; on GPUs,
    /// which run asynchronously, mostly submission time (see `tpri bench` for device times).
    pub median_step_seconds: f64,
    pub last: Record,
}

/// Mean loss and accuracy over the task's held-out batches, weighted by batch size.
pub fn evaluate(backend: &mut dyn Backend, task: &dyn Task, batch_size: usize) -> Result<Eval> {
    let (mut loss, mut acc, mut n) = (0.0, 0.0, 0usize);
    for batch in task.eval_batches(batch_size) {
        let e = backend.evaluate(&batch)?;
        let b = batch.batch_size();
        loss += e.loss * b as f64;
        acc += e.accuracy * b as f64;
        n += b;
    }
    if n == 0 {
        bail!("the task has no evaluation data");
    }
    Ok(Eval {
        loss: loss / n as f64,
        accuracy: acc / n as f64,
    })
}

/// Trains from the seeded initialisation, calling `observe` at every log or eval point.
/// Stops with an error naming the iteration when the training loss becomes non-finite or
/// exceeds twice the initial loss (measured on the held-out set, which a single batch's
/// noise cannot trip).
pub fn train(
    backend: &mut dyn Backend,
    cfg: &RunConfig,
    mut observe: impl FnMut(&Record),
) -> Result<Summary> {
    cfg.validate()?;
    let task = build_task(&cfg.task, cfg.seed, cfg.eval_size)?;
    if task.loss() != cfg.hyper.loss {
        bail!(
            "task {:?} is trained with {:?}, not {:?}",
            cfg.task,
            task.loss(),
            cfg.hyper.loss
        );
    }
    let dims = Dims {
        input: task.input_size(),
        hidden: cfg.hidden,
        output: task.output_size(),
    };
    backend.load(&Params::init(dims, cfg.seed), None, &cfg.hyper)?;
    let start = Instant::now();
    let eval = evaluate(backend, task.as_ref(), cfg.batch_size)?;
    let mut last = Record {
        iteration: 0,
        elapsed: 0.0,
        train_loss: None,
        eval: Some(eval.into()),
        cg: None,
    };
    observe(&last);
    let initial = eval.loss;
    let mut step_times = Vec::with_capacity(cfg.iterations as usize);
    for i in 1..=cfg.iterations {
        let batch = task.train_batch(i - 1, cfg.batch_size);
        let t0 = Instant::now();
        backend.step(&batch)?;
        step_times.push(t0.elapsed().as_secs_f64());
        let eval_now = i % cfg.eval_every == 0 || i == cfg.iterations;
        if !(eval_now || i % cfg.log_every == 0 || i == 1) {
            continue;
        }
        let stats = backend.last_stats()?;
        if !stats.loss.is_finite() || stats.loss > 2.0 * initial {
            bail!(
                "training diverged at iteration {i}: train loss {:.4e} (initial: {initial:.4e})",
                stats.loss
            );
        }
        let eval = if eval_now {
            Some(evaluate(backend, task.as_ref(), cfg.batch_size)?.into())
        } else {
            None
        };
        last = Record {
            iteration: i,
            elapsed: start.elapsed().as_secs_f64(),
            train_loss: Some(stats.loss),
            eval,
            cg: stats.cg,
        };
        observe(&last);
    }
    step_times.sort_by(f64::total_cmp);
    Ok(Summary {
        backend: backend.name(),
        iterations: cfg.iterations,
        wall_seconds: start.elapsed().as_secs_f64(),
        median_step_seconds: step_times.get(step_times.len() / 2).copied().unwrap_or(0.0),
        last,
    })
}

impl From<Eval> for EvalRecord {
    fn from(e: Eval) -> Self {
        Self {
            loss: e.loss,
            accuracy: e.accuracy,
        }
    }
}
