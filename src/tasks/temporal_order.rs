//! The temporal order task (SPEC §6): classify which two bits were shown at two
//! marked times among distractor symbols.

use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{synthetic, Batch, Targets, Task};
use crate::config::Loss;

/// Input symbols, one-hot: 0 and 1 are the bits, 2..=5 the distractors.
const SYMBOLS: usize = 6;
/// Labels `v0 + 2·v1`.
const CLASSES: usize = 4;

/// Seeded temporal order sequences of length T.
#[derive(Clone, Debug)]
pub struct TemporalOrder {
    seq_len: usize,
    seed: u64,
    eval_size: usize,
}

impl TemporalOrder {
    /// The task with sequences of length `seq_len` (at least 10), data streams keyed by
    /// `seed`, and `eval_size` held-out sequences.
    pub fn new(seq_len: usize, seed: u64, eval_size: usize) -> Result<Self> {
        synthetic::check_seq_len("temporal order", seq_len)?;
        Ok(Self {
            seq_len,
            seed,
            eval_size,
        })
    }

    /// Draws `batch_size` sequences, each completely before the next:
    /// p0, p1, v0, v1, then the distractors in time order.
    fn generate(&self, rng: &mut ChaCha8Rng, batch_size: usize) -> Batch {
        let t_len = self.seq_len;
        let k = t_len / 10; // ⌊0.1T⌋, exact in integers
        let half = t_len / 2;
        let mut x = synthetic::zero_inputs(t_len, batch_size, SYMBOLS);
        let mut labels = Vec::with_capacity(batch_size);
        for b in 0..batch_size {
            let p0 = rng.random_range(k..2 * k);
            let p1 = rng.random_range(half..half + k);
            let v0 = rng.random_range(0..2);
            let v1 = rng.random_range(0..2);
            for (t, step) in x.iter_mut().enumerate() {
                let symbol = match t {
                    _ if t == p0 => v0,
                    _ if t == p1 => v1,
                    _ => rng.random_range(2..SYMBOLS),
                };
                step[(b, symbol)] = 1.0;
            }
            labels.push(v0 + 2 * v1);
        }
        Batch {
            x,
            y: Targets::Labels(labels),
        }
    }
}

impl Task for TemporalOrder {
    fn input_size(&self) -> usize {
        SYMBOLS
    }
    fn output_size(&self) -> usize {
        CLASSES
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn loss(&self) -> Loss {
        Loss::CrossEntropy
    }
    fn train_batch(&self, index: u64, batch_size: usize) -> Batch {
        synthetic::train_batch(self.seed, index, batch_size, |rng, n| self.generate(rng, n))
    }
    fn eval_batches(&self, batch_size: usize) -> Vec<Batch> {
        synthetic::eval_batches(self.seed, self.eval_size, batch_size, |rng, n| {
            self.generate(rng, n)
        })
    }
}
