//! A training run's settings (`RunConfig`): what `config.toml` in a run directory holds,
//! and their checks before anything is written.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::config::Hyper;
use crate::init::Init;
use crate::limits::{check_host, Workload, RUN_CONFIG_NAMES};
use crate::memory::MemoryEstimate;
use crate::model::{CellKind, Dims};
use crate::plan::{Device, Plan};
use crate::tasks::TaskSpec;

/// Everything a training run depends on; saved as `config.toml` in the run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The task and its sizes.
    pub task: TaskSpec,
    /// The recurrent cell.
    pub cell: CellKind,
    /// How the parameters start (`--init`); `None` takes the cell's default,
    /// [`Init::default_for`] (orthogonal for the tanh RNN, PyTorch's for the GRU).
    pub init: Option<Init>,
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
    /// At each evaluation, compare the method's gradient with BPTT's on the first held-out
    /// batch ([`crate::train::Alignment`], `alignment.csv`); TP and DTP runs (a BPTT run,
    /// in a sweep over methods say, has nothing to compare: [`RunConfig::measures_alignment`]).
    pub alignment: bool,
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
            init: None,
            hidden: 100,
            batch_size: 20,
            iterations: 1000,
            eval_every: 100,
            log_every: 10,
            checkpoint_every: 500,
            eval_size: 1000,
            seed: 0,
            alignment: false,
        }
    }
}

impl RunConfig {
    /// The initialisation this run starts from: `init`, or the cell's default.
    pub fn initialisation(&self) -> Init {
        self.init.unwrap_or(Init::default_for(self.cell))
    }

    /// The sizes this run holds (named as its settings name them): what the host's memory
    /// and a backend's [`Backend::check_workload`](crate::backend::Backend::check_workload) are checked against before anything is
    /// built.
    pub fn workload(&self) -> Result<Workload> {
        run_workload(
            &self.task,
            self.cell,
            self.hidden,
            self.batch_size,
            self.eval_size,
            &self.hyper,
        )
    }

    /// The settings the backend runs with: `hyper`, with DTP's noise stream seeded by the
    /// run's seed (`DtpConfig::noise_seed`, which config files do not hold).
    pub fn backend_hyper(&self) -> Hyper {
        let mut hyper = self.hyper.clone();
        hyper.dtp.noise_seed = self.seed;
        hyper
    }

    /// Whether the run measures its alignment with BPTT's gradient: `alignment` is set and
    /// the method is not BPTT itself.
    pub fn measures_alignment(&self) -> bool {
        self.alignment && self.hyper.method != crate::config::Method::Bp
    }

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
        for (name, zero) in [
            ("hidden", self.hidden == 0),
            ("batch_size", self.batch_size == 0),
            ("eval_size", self.eval_size == 0),
            ("iterations", self.iterations == 0),
            ("eval_every", self.eval_every == 0),
            ("log_every", self.log_every == 0),
            ("checkpoint_every", self.checkpoint_every == 0),
        ] {
            if zero {
                bail!("{name} must be at least 1");
            }
        }
        check_host(&self.workload()?)?;
        Ok(())
    }
}

/// The sizes of a training run, named as its settings (`train::RunConfig`) name them.
///
/// The pixel task's sizes are its dataset's (28×28 images for MNIST, 3×32×32 for
/// CIFAR-10; 10 classes): its files are read later, and a task of other images is checked
/// again when its batches are made.
fn run_workload(
    task: &TaskSpec,
    cell: CellKind,
    hidden: usize,
    batch_size: usize,
    eval_size: usize,
    hyper: &Hyper,
) -> Result<Workload> {
    let (input, output, steps) = task.sizes()?;
    let dims = Dims {
        input,
        hidden,
        output,
    };
    Ok(Workload {
        names: &RUN_CONFIG_NAMES,
        ..Workload::new(cell, dims, steps, batch_size, hyper)
            .with_eval_size(eval_size)
            .with_embedding(task.trained_embedding_rows())
    })
}

/// What a training run holds on the host whichever backend runs it, checked before
/// anything is allocated: every size at least 1, no product overflowing, and the
/// parameters, optimizer state, a batch and the held-out set within the memory available.
/// ([`RunConfig::validate`] calls it; the backend's own share is
/// [`crate::backend::Backend::check_workload`].)
pub fn check_run(
    task: &TaskSpec,
    cell: CellKind,
    hidden: usize,
    batch_size: usize,
    eval_size: usize,
    hyper: &Hyper,
) -> Result<MemoryEstimate> {
    check_host(&run_workload(
        task, cell, hidden, batch_size, eval_size, hyper,
    )?)
}
