//! The task flags of `tpri train` (`--task`, `--seq-len`, `--data-dir`, the pixel task's
//! and the language model's) applied to a task's settings.

use anyhow::{bail, Result};

use tpri::presets::{pixel_defaults, DEFAULT_PTB_DIR};
use tpri::tasks::{EvalSplit, TaskSpec};

use super::{set, TaskName, TrainArgs};

/// Applies the task flags to `base`: `--task` of another kind starts that task from its
/// defaults; a flag that the task does not take is an error.
pub(super) fn task_from_flags(base: &TaskSpec, a: &TrainArgs) -> Result<TaskSpec> {
    let kind = match base {
        TaskSpec::TemporalOrder { .. } => TaskName::TemporalOrder,
        TaskSpec::Adding { .. } => TaskName::Adding,
        TaskSpec::Pixel { .. } => TaskName::Pixel,
        TaskSpec::Lm { .. } => TaskName::Lm,
    };
    let lm_flags = a.vocab.is_some()
        || a.embedding_dim.is_some()
        || a.train_tokens.is_some()
        || a.eval_split.is_some()
        || a.train_embedding.is_some();
    if lm_flags && !matches!(a.task.unwrap_or(kind), TaskName::Lm) {
        bail!(
            "--vocab, --embedding-dim, --train-tokens, --eval-split and --train-embedding apply \
             to the lm task only (the other tasks have no embedding table)"
        );
    }
    let mut task = match a.task {
        Some(name) if name != kind => match name {
            TaskName::TemporalOrder => TaskSpec::TemporalOrder { seq_len: 60 },
            TaskName::Adding => TaskSpec::Adding { seq_len: 30 },
            TaskName::Pixel => pixel_defaults(a.dataset.unwrap_or_default()),
            TaskName::Lm => lm_task(),
        },
        _ => base.clone(),
    };
    if let (TaskSpec::Pixel { dataset, .. }, Some(wanted)) = (&task, a.dataset) {
        if *dataset != wanted {
            task = pixel_defaults(wanted);
        }
    }
    let pixel_flags = a.dataset.is_some()
        || a.chunk.is_some()
        || a.standardize.is_some()
        || a.permuted.is_some()
        || a.mean_std.is_some();
    match &mut task {
        TaskSpec::TemporalOrder { seq_len } | TaskSpec::Adding { seq_len } => {
            set(seq_len, a.seq_len);
            if pixel_flags || a.data_dir.is_some() {
                bail!("--dataset, --data-dir, --chunk, --standardize, --mean-std and --permuted apply to the pixel task only (and --data-dir to the lm task)");
            }
        }
        TaskSpec::Lm {
            dir,
            seq_len,
            vocab,
            embedding_dim,
            train_tokens,
            eval_split,
            train_embedding,
        } => {
            if pixel_flags {
                bail!("--dataset, --chunk, --standardize, --mean-std and --permuted apply to the pixel task only");
            }
            set(dir, a.data_dir.clone());
            set(seq_len, a.seq_len);
            set(vocab, a.vocab);
            set(embedding_dim, a.embedding_dim);
            if a.train_tokens.is_some() {
                *train_tokens = a.train_tokens;
            }
            set(eval_split, a.eval_split);
            set(train_embedding, a.train_embedding);
        }
        TaskSpec::Pixel {
            dir,
            chunk,
            standardize,
            permuted,
            mean_std,
            ..
        } => {
            if a.seq_len.is_some() {
                bail!("the pixel task's length is set by --chunk (T = 784 / k, or 3072 / k for cifar10), not --seq-len");
            }
            set(dir, a.data_dir.clone());
            set(chunk, a.chunk);
            if let Some(given) = &a.mean_std {
                let [mean, std] = given[..] else {
                    bail!("--mean-std takes two numbers, MEAN,STD");
                };
                if a.standardize == Some(false) {
                    bail!(
                        "--mean-std standardizes the pixels: it cannot go with --standardize false"
                    );
                }
                *mean_std = Some([mean, std]);
                *standardize = true;
            }
            if a.standardize == Some(false) {
                // No standardization at all: a preset's constants go too.
                *mean_std = None;
            }
            set(standardize, a.standardize);
            set(permuted, a.permuted);
        }
    }
    Ok(task)
}

/// The language model's settings when `--task lm` starts it afresh: the published ones
/// (`ptb-tp`'s task), all the training file's tokens.
fn lm_task() -> TaskSpec {
    TaskSpec::Lm {
        dir: DEFAULT_PTB_DIR.into(),
        seq_len: 64,
        vocab: 10_000,
        embedding_dim: 1024,
        train_tokens: None,
        eval_split: EvalSplit::Test,
        train_embedding: false,
    }
}
