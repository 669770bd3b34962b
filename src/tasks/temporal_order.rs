//! The temporal order task (docs/ALGORITHM.md §6): classify which two bits were shown at two
//! marked times among distractor symbols.

use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::synthetic::{self, Generator, Synthetic};
use super::{Batch, Targets};
use crate::config::Loss;

/// Input symbols, one-hot: 0 and 1 are the bits, 2..=5 the distractors.
const SYMBOLS: usize = 6;
/// Labels `v0 + 2·v1`.
const CLASSES: usize = 4;
/// Input and output sizes (p, q).
pub(crate) const SIZES: (usize, usize) = (SYMBOLS, CLASSES);

/// Seeded temporal order sequences of length T: p = 6 one-hot symbols per step, 4
/// classes (q = 4), scored with [`Loss::CrossEntropy`]. Batches come from the
/// [`Task`](super::Task) methods.
#[derive(Clone, Debug)]
pub struct TemporalOrder(Synthetic<TemporalOrderData>);

impl TemporalOrder {
    /// The task with sequences of length `seq_len` (at least 10), data streams keyed by
    /// `seed`, and `eval_size` held-out sequences.
    pub fn new(seq_len: usize, seed: u64, eval_size: usize) -> Result<Self> {
        Synthetic::new(seq_len, seed, eval_size).map(Self)
    }
}

synthetic::delegate_task!(TemporalOrder);

/// How temporal order sequences are drawn.
#[derive(Clone, Debug)]
enum TemporalOrderData {}

impl Generator for TemporalOrderData {
    const NAME: &'static str = "temporal order";
    const INPUTS: usize = SYMBOLS;
    const OUTPUTS: usize = CLASSES;
    const LOSS: Loss = Loss::CrossEntropy;

    /// Draws `batch_size` sequences, each completely before the next:
    /// p0, p1, v0, v1, then the distractors in time order.
    fn generate(t_len: usize, rng: &mut ChaCha8Rng, batch_size: usize) -> Batch {
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
            tokens: None,
            x,
            y: Targets::Labels(labels),
        }
    }
}
