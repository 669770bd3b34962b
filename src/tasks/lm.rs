//! The word-level language model of the published code (docs/ALGORITHM.md §13): windows of
//! T tokens of a Penn Treebank-layout corpus, each token embedded by a seeded table
//! (frozen, or the starting point of a trained one), the next token the label of every
//! step.

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use nalgebra::DMatrix;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::corpus::{read_corpus, Vocabulary};
use super::stream::{rng, Purpose};
use super::{Batch, Targets, Task};
use crate::config::Loss;
use crate::error::Error;

/// The training file of a Penn Treebank-layout directory.
pub const TRAIN_FILE: &str = "ptb.train.txt";

/// Which file of the directory the held-out windows come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// `ptb.test.txt`, what the published code evaluates on.
    #[default]
    Test,
    /// `ptb.valid.txt`.
    Valid,
}

impl EvalSplit {
    /// The file's name in the directory.
    pub fn file_name(self) -> &'static str {
        match self {
            EvalSplit::Test => "ptb.test.txt",
            EvalSplit::Valid => "ptb.valid.txt",
        }
    }
}

/// The settings of a [`LanguageModel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LmOptions {
    /// Tokens per window, T.
    pub seq_len: usize,
    /// The most words the vocabulary holds (`<unk>` included): the head's size q.
    pub vocab: usize,
    /// Size e of each word's embedding: the input size p.
    pub embedding_dim: usize,
    /// Train on the first this many tokens only (all when `None`).
    pub train_tokens: Option<usize>,
    /// The held-out file.
    pub eval_split: EvalSplit,
}

/// Checks the sizes of a language model before anything is read: T ≥ 1, a vocabulary of
/// 2 to 2³² words, an embedding of at least one value.
pub fn check_sizes(seq_len: usize, vocab: usize, embedding_dim: usize) -> Result<()> {
    let bad = |field: &str, problem: String| Err(Error::setting(field, problem).into());
    if seq_len == 0 {
        return bad(
            "TaskSpec::Lm::seq_len",
            "the sequence length T must be at least 1".into(),
        );
    }
    if !(2..=u32::MAX as usize).contains(&vocab) {
        return bad(
            "TaskSpec::Lm::vocab",
            format!(
                "the vocabulary must hold between 2 words (<unk> and one more) and 2^32, got {vocab}"
            ),
        );
    }
    if embedding_dim == 0 {
        return bad(
            "TaskSpec::Lm::embedding_dim",
            "the embedding size must be at least 1".into(),
        );
    }
    Ok(())
}

/// Next-word prediction over windows of a corpus, as the published code's `PennTreeData`
/// makes them: window i holds tokens i … i + T − 1 of a stream and is labelled with tokens
/// i + 1 … i + T, for every i < N − T − 1 (N tokens); each sequence starts from h_0 = 0.
/// Training batch k of an epoch is the B windows starting at k·B … k·B + B − 1, in order
/// and never shuffled (a PyTorch `DataLoader` without shuffling, last partial batch
/// dropped); the epochs repeat. The held-out set is the first `eval_size` windows of the
/// held-out file. Each token is embedded by row `id` of a table E [q, e] with entries
/// drawn from the standard normal law (PyTorch's `nn.Embedding` default), seeded: the same
/// seed gives the same table. Batches carry both the embedded inputs x_t and the token
/// ids, so that a run training E (`Params::embedding`, started from
/// [`Task::embedding_table`]) gathers its inputs from its own table.
pub struct LanguageModel {
    vocab: Vocabulary,
    train: Vec<u32>,
    held_out: Vec<u32>,
    /// E, row-major [q, e]: a row for every id the head can predict (the rows past the
    /// corpus's vocabulary are never read by a batch).
    embedding: Vec<f64>,
    options: LmOptions,
    /// Windows of the held-out set.
    eval_windows: usize,
    /// Where the training tokens came from, for messages.
    train_path: String,
}

/// Windows of T + 1 tokens in a stream of `n` tokens, as `PennTreeData.__len__` counts
/// them: n − T − 1.
fn windows(n: usize, seq_len: usize) -> usize {
    n.saturating_sub(seq_len + 1)
}

impl LanguageModel {
    /// Reads `ptb.train.txt` and the held-out file of `dir` (see
    /// [`super::corpus::read_corpus`]) and draws the embedding from `seed`; the held-out
    /// set is its first `eval_size` windows. A file too short for one window is an error
    /// naming it.
    pub fn load(dir: &Path, options: LmOptions, seed: u64, eval_size: usize) -> Result<Self> {
        check_sizes(options.seq_len, options.vocab, options.embedding_dim)?;
        let train_path = dir.join(TRAIN_FILE);
        let held_path = dir.join(options.eval_split.file_name());
        let corpus = read_corpus(&train_path, &held_path, options.vocab, options.train_tokens)
            .with_context(|| {
            format!(
                "the language model's corpus in {} (a Penn Treebank-layout directory with {TRAIN_FILE} \
                 and {}; README.md says where to get Penn Treebank)",
                dir.display(),
                options.eval_split.file_name()
            )
        })?;
        let t = options.seq_len;
        for (path, n, what) in [
            (&train_path, corpus.train.len(), "training"),
            (&held_path, corpus.held_out.len(), "held-out"),
        ] {
            if windows(n, t) == 0 {
                return Err(Error::format(
                    path,
                    format!(
                        "has {n} {what} tokens (<eos> included{}): no window of T = {t} steps, \
                         which takes T + 2 = {} (N tokens make N − T − 1 windows, as the \
                         published code counts them); use a shorter TaskSpec::Lm::seq_len or a longer file",
                        match (what, options.train_tokens) {
                            ("training", Some(k)) => format!(", the first {k} used"),
                            _ => String::new(),
                        },
                        t + 2
                    ),
                )
                .into());
            }
        }
        // q rows, drawn in order from one stream: the corpus's words' rows are the same
        // whatever q is.
        let values = options.vocab.checked_mul(options.embedding_dim);
        let values = values
            .filter(|&n| n <= isize::MAX as usize / 8)
            .ok_or_else(|| {
                Error::setting(
                    "TaskSpec::Lm::embedding_dim",
                    format!(
                        "an embedding table of {} × {} values cannot be addressed",
                        options.vocab, options.embedding_dim
                    ),
                )
            })?;
        let embedding = standard_normal(values, &mut rng(seed, Purpose::Embedding, 0));
        Ok(Self {
            eval_windows: windows(corpus.held_out.len(), t).min(eval_size),
            vocab: corpus.vocab,
            train: corpus.train,
            held_out: corpus.held_out,
            embedding,
            options,
            train_path: train_path.display().to_string(),
        })
    }

    /// The vocabulary read from the training file.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    /// The training tokens used.
    pub fn train_tokens(&self) -> usize {
        self.train.len()
    }

    /// The windows `starts` of `stream` as a batch: x_t the embedding of token
    /// `start + t − 1`, the label of step t token `start + t`.
    fn batch(&self, stream: &[u32], starts: Range<usize>) -> Result<Batch> {
        let (t_len, e) = (self.options.seq_len, self.options.embedding_dim);
        super::check_batch_alloc(t_len, starts.len(), e)?;
        let rows = starts.len();
        let x = (0..t_len)
            .map(|t| {
                DMatrix::from_fn(rows, e, |i, j| {
                    self.embedding[stream[starts.start + i + t] as usize * e + j]
                })
            })
            .collect();
        let y = DMatrix::from_fn(rows, t_len, |i, t| {
            stream[starts.start + i + t + 1] as usize
        });
        let tokens = DMatrix::from_fn(rows, t_len, |i, t| stream[starts.start + i + t]);
        Ok(Batch {
            x,
            y: Targets::StepLabels(y),
            tokens: Some(tokens),
        })
    }
}

/// `n` draws from the standard normal law by the Box–Muller transform, written out so
/// that the values depend only on the stream.
fn standard_normal(n: usize, rng: &mut impl Rng) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 − u lies in (0, 1]: its logarithm is finite.
        let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
        let angle = std::f64::consts::TAU * rng.random::<f64>();
        out.extend([radius * angle.cos(), radius * angle.sin()]);
    }
    out.truncate(n);
    out
}

impl Task for LanguageModel {
    fn input_size(&self) -> usize {
        self.options.embedding_dim
    }

    fn output_size(&self) -> usize {
        self.options.vocab
    }

    fn seq_len(&self) -> usize {
        self.options.seq_len
    }

    fn loss(&self) -> Loss {
        Loss::CrossEntropySeq
    }

    fn embedding_table(&self) -> Option<DMatrix<f64>> {
        let e = self.options.embedding_dim;
        Some(DMatrix::from_row_slice(
            self.embedding.len() / e.max(1),
            e,
            &self.embedding,
        ))
    }

    /// Batch `index mod (windows / B)` of the epoch. A batch size above the number of
    /// windows (refused by `check_batch_size`) gets every window once.
    fn train_batch(&self, index: u64, batch_size: usize) -> Result<Batch> {
        let n = windows(self.train.len(), self.options.seq_len);
        let per_epoch = (n / batch_size.max(1)) as u64;
        let starts = match per_epoch {
            0 => 0..n,
            k => {
                let first = (index % k) as usize * batch_size;
                first..first + batch_size
            }
        };
        self.batch(&self.train, starts)
    }

    fn eval_batches(&self, batch_size: usize) -> Result<Vec<Batch>> {
        super::check_eval_batch_size(batch_size)?;
        let size = batch_size;
        (0..self.eval_windows)
            .step_by(size)
            .map(|s| self.batch(&self.held_out, s..(s + size).min(self.eval_windows)))
            .collect()
    }

    fn check_batch_size(&self, batch_size: usize) -> Result<()> {
        let n = windows(self.train.len(), self.options.seq_len);
        if batch_size > n {
            return Err(Error::setting(
                "RunConfig::batch_size",
                format!(
                    "a batch of B = {batch_size} windows needs B + T + 1 = {} training tokens, but \
                     {} gives {} (its {n} windows of T = {} steps); use a smaller batch or \
                     sequence length",
                    batch_size + self.options.seq_len + 1,
                    self.train_path,
                    self.train.len(),
                    self.options.seq_len
                ),
            )
            .into());
        }
        Ok(())
    }
}
