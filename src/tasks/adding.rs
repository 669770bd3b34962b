//! The adding task (docs/ALGORITHM.md §6): regress the mean of the two values marked in channel 0.

use anyhow::Result;
use nalgebra::DMatrix;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::synthetic::{self, Generator, Synthetic};
use super::{Batch, Targets};
use crate::config::Loss;

/// Channel 0 marks, channel 1 carries the values.
const CHANNELS: usize = 2;
/// Input and output sizes (p, q).
pub(crate) const SIZES: (usize, usize) = (CHANNELS, 1);
const MARK: usize = 0;
const VALUE: usize = 1;

/// Seeded adding sequences of length T: p = 2 inputs per step (a marker and a value),
/// one real target per sequence (q = 1), scored with [`Loss::Mse`]. Batches come from the
/// [`Task`](super::Task) methods.
#[derive(Clone, Debug)]
pub struct Adding(Synthetic<AddingData>);

impl Adding {
    /// The task with sequences of length `seq_len` (at least 10), data streams keyed by
    /// `seed`, and `eval_size` held-out sequences.
    pub fn new(seq_len: usize, seed: u64, eval_size: usize) -> Result<Self> {
        Synthetic::new(seq_len, seed, eval_size).map(Self)
    }
}

synthetic::delegate_task!(Adding);

/// How adding sequences are drawn.
#[derive(Clone, Debug)]
enum AddingData {}

impl Generator for AddingData {
    const NAME: &'static str = "adding";
    const INPUTS: usize = CHANNELS;
    const OUTPUTS: usize = 1;
    const LOSS: Loss = Loss::Mse;

    /// Draws `batch_size` sequences, each completely before the next:
    /// p0, p1, then the values in time order.
    fn generate(t_len: usize, rng: &mut ChaCha8Rng, batch_size: usize) -> Batch {
        // ⌊0.1T⌋ and ⌊0.4T⌋, exact in integers.
        let first = t_len / 10;
        let second = t_len / 5 * 2 + t_len % 5 * 2 / 5; // without overflowing 2T
        let mut x = synthetic::zero_inputs(t_len, batch_size, CHANNELS);
        let mut y = DMatrix::zeros(batch_size, 1);
        for b in 0..batch_size {
            let p0 = rng.random_range(0..first);
            let p1 = rng.random_range(first..first + second);
            for step in x.iter_mut() {
                step[(b, VALUE)] = rng.random::<f64>();
            }
            x[p0][(b, MARK)] = 1.0;
            x[p1][(b, MARK)] = 1.0;
            y[(b, 0)] = (x[p0][(b, VALUE)] + x[p1][(b, VALUE)]) / 2.0;
        }
        Batch {
            tokens: None,
            x,
            y: Targets::Values(y),
        }
    }
}
