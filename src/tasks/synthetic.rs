//! Plumbing shared by the generated tasks (temporal order, adding).

use anyhow::{ensure, Result};
use nalgebra::DMatrix;
use rand_chacha::ChaCha8Rng;

use super::stream::{rng, Purpose};
use super::Batch;

/// The shortest sequence for which the position ranges of SPEC §6 are non-empty:
/// both tasks need `⌊0.1T⌋ ≥ 1`.
pub(crate) const MIN_SEQ_LEN: usize = 10;

/// Rejects a length whose position ranges would be empty.
pub(crate) fn check_seq_len(task: &str, seq_len: usize) -> Result<()> {
    ensure!(
        seq_len >= MIN_SEQ_LEN,
        "{task}: sequence length T = {seq_len} is too short; the marked positions need \
         ⌊0.1T⌋ ≥ 1, i.e. T ≥ {MIN_SEQ_LEN}"
    );
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
pub(crate) fn train_batch(
    seed: u64,
    index: u64,
    batch_size: usize,
    generate: impl FnOnce(&mut ChaCha8Rng, usize) -> Batch,
) -> Batch {
    generate(&mut rng(seed, Purpose::Train, index), batch_size)
}

/// The held-out set: `eval_size` sequences from the evaluation stream, cut into
/// batches of at most `batch_size`. Generators draw one sequence completely before
/// the next, so the sequences do not depend on `batch_size`.
///
/// # Panics
/// If `batch_size` is 0 (a configuration error the caller validates).
pub(crate) fn eval_batches(
    seed: u64,
    eval_size: usize,
    batch_size: usize,
    mut generate: impl FnMut(&mut ChaCha8Rng, usize) -> Batch,
) -> Vec<Batch> {
    assert!(batch_size > 0, "evaluation batch size must be positive");
    let mut rng = rng(seed, Purpose::Eval, 0);
    (0..eval_size)
        .step_by(batch_size)
        .map(|start| generate(&mut rng, batch_size.min(eval_size - start)))
        .collect()
}
