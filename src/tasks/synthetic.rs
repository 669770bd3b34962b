//! Plumbing shared by the generated tasks (temporal order, adding).

use std::marker::PhantomData;

use anyhow::Result;
use nalgebra::DMatrix;
use rand_chacha::ChaCha8Rng;

use super::stream::{rng, Purpose};
use super::{check_batch_alloc, check_eval_batch_size, Batch, Task};
use crate::config::Loss;

/// What sets one generated task apart: its sizes, its loss and how it draws sequences.
pub trait Generator {
    /// The task's name in error messages.
    const NAME: &'static str;
    /// Input size p.
    const INPUTS: usize;
    /// Classes, or q for regression.
    const OUTPUTS: usize;
    /// The loss the task is scored with.
    const LOSS: Loss;
    /// Draws `batch_size` sequences of length `seq_len`, each completely before the next
    /// (so the held-out set does not depend on the evaluation batch size).
    fn generate(seq_len: usize, rng: &mut ChaCha8Rng, batch_size: usize) -> Batch;
}

/// A generated task: seeded training batches and a fixed held-out set drawn by `G`.
#[derive(Clone, Debug)]
pub struct Synthetic<G> {
    seq_len: usize,
    seed: u64,
    eval_size: usize,
    generator: PhantomData<fn() -> G>,
}

impl<G: Generator> Synthetic<G> {
    /// The task with sequences of length `seq_len` (at least 10), data streams keyed by
    /// `seed`, and `eval_size` held-out sequences.
    pub fn new(seq_len: usize, seed: u64, eval_size: usize) -> Result<Self> {
        check_seq_len(G::NAME, seq_len)?;
        Ok(Self {
            seq_len,
            seed,
            eval_size,
            generator: PhantomData,
        })
    }
}

impl<G: Generator> Task for Synthetic<G> {
    fn input_size(&self) -> usize {
        G::INPUTS
    }
    fn output_size(&self) -> usize {
        G::OUTPUTS
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn loss(&self) -> Loss {
        G::LOSS
    }
    fn train_batch(&self, index: u64, batch_size: usize) -> Result<Batch> {
        check_batch_alloc(self.seq_len, batch_size, G::INPUTS)?;
        Ok(train_batch(self.seed, index, batch_size, |rng, n| {
            G::generate(self.seq_len, rng, n)
        }))
    }
    fn eval_batches(&self, batch_size: usize) -> Result<Vec<Batch>> {
        check_eval_batch_size(batch_size)?;
        check_batch_alloc(self.seq_len, batch_size.min(self.eval_size), G::INPUTS)?;
        Ok(eval_batches(
            self.seed,
            self.eval_size,
            batch_size,
            |rng, n| G::generate(self.seq_len, rng, n),
        ))
    }
}

/// Implements `Task` for a newtype around a `Synthetic`, forwarding every method.
macro_rules! delegate_task {
    ($name:ident) => {
        impl $crate::tasks::Task for $name {
            fn input_size(&self) -> usize {
                $crate::tasks::Task::input_size(&self.0)
            }
            fn output_size(&self) -> usize {
                $crate::tasks::Task::output_size(&self.0)
            }
            fn seq_len(&self) -> usize {
                $crate::tasks::Task::seq_len(&self.0)
            }
            fn loss(&self) -> $crate::config::Loss {
                $crate::tasks::Task::loss(&self.0)
            }
            fn train_batch(
                &self,
                index: u64,
                batch_size: usize,
            ) -> anyhow::Result<$crate::tasks::Batch> {
                $crate::tasks::Task::train_batch(&self.0, index, batch_size)
            }
            fn eval_batches(&self, batch_size: usize) -> anyhow::Result<Vec<$crate::tasks::Batch>> {
                $crate::tasks::Task::eval_batches(&self.0, batch_size)
            }
        }
    };
}
pub(crate) use delegate_task;

/// The shortest sequence for which the position ranges of docs/ALGORITHM.md §6 are non-empty:
/// both tasks need `⌊0.1T⌋ ≥ 1`.
pub(crate) const MIN_SEQ_LEN: usize = 10;

/// Rejects a length whose position ranges would be empty (`TaskSpec::seq_len`).
pub(crate) fn check_seq_len(task: &str, seq_len: usize) -> Result<()> {
    if seq_len < MIN_SEQ_LEN {
        return Err(crate::error::Error::setting(
            "TaskSpec::seq_len",
            format!(
                "{task}: sequence length T = {seq_len} is too short; the marked positions \
                 need ⌊0.1T⌋ ≥ 1, i.e. T ≥ {MIN_SEQ_LEN}"
            ),
        )
        .into());
    }
    Ok(())
}

/// T zero matrices of size B×p, to be filled in by a generator.
pub(crate) fn zero_inputs(
    seq_len: usize,
    batch_size: usize,
    input_size: usize,
) -> Vec<DMatrix<f64>> {
    vec![DMatrix::zeros(batch_size, input_size); seq_len]
}

/// Training batch `index`, drawn from its own stream.
fn train_batch(
    seed: u64,
    index: u64,
    batch_size: usize,
    generate: impl FnOnce(&mut ChaCha8Rng, usize) -> Batch,
) -> Batch {
    generate(&mut rng(seed, Purpose::Train, index), batch_size)
}

/// The held-out set: `eval_size` sequences from the evaluation stream, cut into
/// batches of at most `batch_size` (at least 1: the caller checks). Generators draw one
/// sequence completely before the next, so the sequences do not depend on `batch_size`.
fn eval_batches(
    seed: u64,
    eval_size: usize,
    batch_size: usize,
    mut generate: impl FnMut(&mut ChaCha8Rng, usize) -> Batch,
) -> Vec<Batch> {
    let mut rng = rng(seed, Purpose::Eval, 0);
    (0..eval_size)
        .step_by(batch_size)
        .map(|start| generate(&mut rng, batch_size.min(eval_size - start)))
        .collect()
}
