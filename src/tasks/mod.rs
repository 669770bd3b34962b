//! The learning tasks of docs/ALGORITHM.md §6: seeded synthetic generators, pixel
//! sequences from IDX files (MNIST, Fashion-MNIST) or CIFAR-10's binary files, and a
//! word-level language model (§13).

use std::path::PathBuf;

use anyhow::Result;
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::config::Loss;

pub mod adding;
pub mod cifar;
pub mod corpus;
pub mod idx;
pub mod lm;
pub mod pixel;
mod stream;
mod synthetic;
pub mod temporal_order;

pub use adding::Adding;
pub use lm::{EvalSplit, LanguageModel, LmOptions};
pub use pixel::{PixelDataset, PixelOptions, PixelTask};
pub use temporal_order::TemporalOrder;

/// What a batch is scored against.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class index per sequence (cross-entropy).
    Labels(Vec<usize>),
    /// A B×q matrix of real targets (squared error).
    Values(DMatrix<f64>),
    /// One class index per sequence and step, B×T: entry (i, t − 1) is what the head at
    /// step t of sequence i is scored against (the next token of a language model;
    /// `Loss::CrossEntropySeq`).
    StepLabels(DMatrix<usize>),
}

impl Targets {
    /// Number of sequences the targets cover.
    pub fn len(&self) -> usize {
        match self {
            Targets::Labels(l) => l.len(),
            Targets::Values(v) => v.nrows(),
            Targets::StepLabels(l) => l.nrows(),
        }
    }

    /// True when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// B sequences of length T: `x[t]` is the B×p input at step t+1.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Inputs x_1 … x_T, each B×p (row i is sequence i).
    pub x: Vec<DMatrix<f64>>,
    /// What the final outputs are scored against.
    pub y: Targets,
    /// The language model's token ids, B×T (entry (i, t − 1) is the token of sequence i
    /// at step t, whose embedding is x_t): what a backend with a trained embedding table
    /// (`Params::embedding`) gathers its inputs from, ignoring `x`. `None` for the other
    /// tasks.
    pub tokens: Option<DMatrix<u32>>,
}

impl Batch {
    /// Sequence length T.
    pub fn seq_len(&self) -> usize {
        self.x.len()
    }

    /// Number of sequences B.
    pub fn batch_size(&self) -> usize {
        self.y.len()
    }

    /// Input size p.
    pub fn input_size(&self) -> usize {
        self.x.first().map_or(0, |m| m.ncols())
    }
}

/// Which task, as written in config files (serde) and built from CLI flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TaskSpec {
    /// Temporal order ([`TemporalOrder`]).
    TemporalOrder {
        /// Sequence length T (at least 10).
        seq_len: usize,
    },
    /// Adding ([`Adding`]).
    Adding {
        /// Sequence length T (at least 10).
        seq_len: usize,
    },
    /// Pixel sequences ([`PixelTask`]).
    Pixel {
        /// The directory of the dataset's files (MNIST layout: train-/t10k- images and
        /// labels; CIFAR-10: data_batch_1.bin … data_batch_5.bin, test_batch.bin).
        dir: PathBuf,
        /// Which layout `dir` holds (absent in config files written before CIFAR-10: MNIST).
        #[serde(default)]
        dataset: PixelDataset,
        /// Pixels per step k (T = 784 / k for MNIST, 3072 / k for CIFAR-10).
        chunk: usize,
        /// Standardize pixels per channel: with `mean_std`, else the statistics
        /// [`PixelDataset`] gives.
        standardize: bool,
        /// Apply a fixed seeded permutation to the pixels.
        permuted: bool,
        /// With `standardize`: the [mean, standard deviation] of pixels in [0, 1] to use for
        /// every channel (the published Fashion-MNIST experiment's are
        /// [`pixel::FASHION_MNIST_MEAN_STD`]); absent, the dataset's ([`PixelDataset`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean_std: Option<[f64; 2]>,
    },
    /// A word-level language model on a Penn Treebank-layout directory ([`LanguageModel`]).
    Lm {
        /// The directory holding `ptb.train.txt` and the held-out file.
        dir: PathBuf,
        /// Sequence length T: tokens per window.
        seq_len: usize,
        /// The most words the vocabulary holds, `<unk>` included; also the head's size q.
        vocab: usize,
        /// Size e of the embedding of each word (the input size p).
        embedding_dim: usize,
        /// Train on the first this many tokens of `ptb.train.txt` only (all when `None`).
        train_tokens: Option<usize>,
        /// Which file the held-out windows come from.
        eval_split: EvalSplit,
        /// Train the embedding table E as a parameter (`Params::embedding`), starting from
        /// the frozen table the task draws; frozen when false, as published
        /// (docs/ALGORITHM.md §13). Absent in configs written before it: false.
        #[serde(default)]
        train_embedding: bool,
    },
}

impl TaskSpec {
    /// The input size p, output size q and sequence length T of the task's batches, from
    /// the settings alone (nothing is read or drawn); a length the synthetic tasks cannot
    /// have (T < 10) is an error. The pixel task's are its dataset's: k values of 28×28
    /// (MNIST) or 3×32×32 (CIFAR-10) images per step, 10 classes (its files are read
    /// later, and checked then).
    pub fn sizes(&self) -> Result<(usize, usize, usize)> {
        Ok(match self {
            TaskSpec::TemporalOrder { seq_len } => {
                synthetic::check_seq_len("temporal order", *seq_len)?;
                let (p, q) = temporal_order::SIZES;
                (p, q, *seq_len)
            }
            TaskSpec::Adding { seq_len } => {
                synthetic::check_seq_len("adding", *seq_len)?;
                let (p, q) = adding::SIZES;
                (p, q, *seq_len)
            }
            TaskSpec::Pixel {
                chunk,
                dataset,
                standardize,
                mean_std,
                ..
            } => {
                pixel::check_mean_std(*standardize, *mean_std)?;
                let size = dataset.image_size();
                if *chunk == 0 {
                    return Err(crate::error::Error::setting(
                        "TaskSpec::Pixel::chunk",
                        format!("the pixel chunk k must be at least 1 (it must divide the image size, {size})"),
                    )
                    .into());
                }
                (*chunk, idx::CLASSES, size / chunk)
            }
            TaskSpec::Lm {
                seq_len,
                vocab,
                embedding_dim,
                ..
            } => {
                lm::check_sizes(*seq_len, *vocab, *embedding_dim)?;
                (*embedding_dim, *vocab, *seq_len)
            }
        })
    }

    /// The rows V of the embedding table a run of this task trains
    /// (`TaskSpec::Lm::train_embedding`): the vocabulary limit, one row for every id the
    /// head predicts. `None` when nothing is trained.
    pub fn trained_embedding_rows(&self) -> Option<usize> {
        match self {
            TaskSpec::Lm {
                vocab,
                train_embedding: true,
                ..
            } => Some(*vocab),
            _ => None,
        }
    }

    /// The loss the task is scored with.
    pub fn loss(&self) -> Loss {
        match self {
            TaskSpec::Adding { .. } => Loss::Mse,
            TaskSpec::TemporalOrder { .. } | TaskSpec::Pixel { .. } => Loss::CrossEntropy,
            TaskSpec::Lm { .. } => Loss::CrossEntropySeq,
        }
    }
}

/// A source of seeded training batches and a fixed held-out set.
///
/// `Send + Sync` so batches can be prepared on another thread.
pub trait Task: Send + Sync {
    /// Input size p.
    fn input_size(&self) -> usize;
    /// Number of classes, or q for regression.
    fn output_size(&self) -> usize;
    /// Sequence length T.
    fn seq_len(&self) -> usize;
    /// Cross-entropy for classification, squared error for regression.
    fn loss(&self) -> Loss;
    /// Training batch number `index` of the seeded stream: a pure function of (seed, index, batch_size),
    /// so a resumed run sees exactly the batches an uninterrupted one would. A batch too
    /// large to address or to fit in memory is an error, found before it is allocated.
    fn train_batch(&self, index: u64, batch_size: usize) -> Result<Batch>;
    /// The fixed held-out evaluation set, in batches of at most `batch_size`; a
    /// `batch_size` of 0 is an error, as is a batch too large (as `train_batch`).
    fn eval_batches(&self, batch_size: usize) -> Result<Vec<Batch>>;

    /// The task's own embedding table [V, p], for a run that trains it from there
    /// (`TaskSpec::Lm::train_embedding`); `None` for tasks without one.
    fn embedding_table(&self) -> Option<DMatrix<f64>> {
        None
    }

    /// Checks that the task can make training batches of `batch_size` sequences (a
    /// corpus too short for one batch cannot). Every size can by default.
    fn check_batch_size(&self, batch_size: usize) -> Result<()> {
        let _ = batch_size;
        Ok(())
    }
}

/// Checks, before a batch of `sequences` sequences of `seq_len` steps of `input` values is
/// allocated, that it (with its labels and token ids) can be addressed and fits in memory.
pub(crate) fn check_batch_alloc(seq_len: usize, sequences: usize, input: usize) -> Result<()> {
    let values = (seq_len as u64)
        .checked_mul(sequences as u64)
        .and_then(|n| n.checked_mul(input as u64 + 2))
        .and_then(|n| n.checked_mul(8));
    let Some(bytes) = values else {
        return Err(crate::error::Error::setting(
            "RunConfig::batch_size",
            format!(
                "a batch of {sequences} sequences of {seq_len} steps of {input} values cannot be addressed"
            ),
        )
        .into());
    };
    let estimate = crate::memory::MemoryEstimate {
        batch: bytes,
        ..Default::default()
    };
    crate::memory::check_fits("a batch", &estimate, crate::memory::available_memory())
}

/// Refuses an evaluation batch size of 0.
pub(crate) fn check_eval_batch_size(batch_size: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(crate::error::Error::setting(
            "RunConfig::batch_size",
            "evaluation batches need at least one sequence, got a batch size of 0".to_owned(),
        )
        .into());
    }
    Ok(())
}

/// Builds a task; `eval_size` is the number of held-out sequences for synthetic tasks
/// (pixel tasks use the test files, t10k-* or test_batch.bin, truncated to `eval_size`
/// when it is smaller; the language model the first `eval_size` windows of its held-out
/// file).
pub fn build_task(spec: &TaskSpec, seed: u64, eval_size: usize) -> Result<Box<dyn Task>> {
    Ok(match spec {
        TaskSpec::TemporalOrder { seq_len } => {
            Box::new(TemporalOrder::new(*seq_len, seed, eval_size)?)
        }
        TaskSpec::Adding { seq_len } => Box::new(Adding::new(*seq_len, seed, eval_size)?),
        TaskSpec::Pixel {
            dir,
            dataset,
            chunk,
            standardize,
            permuted,
            mean_std,
        } => {
            let options = PixelOptions {
                chunk: *chunk,
                standardize: *standardize,
                permuted: *permuted,
                dataset: *dataset,
                mean_std: *mean_std,
            };
            Box::new(PixelTask::load(dir, options, seed, eval_size)?)
        }
        TaskSpec::Lm {
            dir,
            seq_len,
            vocab,
            embedding_dim,
            train_tokens,
            eval_split,
            train_embedding: _,
        } => {
            let options = LmOptions {
                seq_len: *seq_len,
                vocab: *vocab,
                embedding_dim: *embedding_dim,
                train_tokens: *train_tokens,
                eval_split: *eval_split,
            };
            Box::new(LanguageModel::load(dir, options, seed, eval_size)?)
        }
    })
}
