//! The task flags of `tpri train` (`--task`, `--seq-len`, `--data-dir`, the pixel task's
//! and the language model's) applied to a task's settings.

use anyhow::{bail, Result};

use tpri::presets::{DEFAULT_PIXEL_DIR, DEFAULT_PTB_DIR};
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
        || a.eval_split.is_some();
    if lm_flags && !matches!(a.task.unwrap_or(kind), TaskName::Lm) {
        bail!(
            "--vocab, --embedding-dim, --train-tokens and --eval-split apply to the lm task only"
        );
    }
    let mut task = match a.task {
        Some(name) if name != kind => match name {
            TaskName::TemporalOrder => TaskSpec::TemporalOrder { seq_len: 60 },
            TaskName::Adding => TaskSpec::Adding { seq_len: 30 },
            TaskName::Pixel => TaskSpec::Pixel {
                dir: DEFAULT_PIXEL_DIR.into(),
                chunk: 1,
                standardize: false,
                permuted: false,
            },
            TaskName::Lm => lm_task(),
        },
        _ => base.clone(),
    };
    match &mut task {
        TaskSpec::TemporalOrder { seq_len } | TaskSpec::Adding { seq_len } => {
            set(seq_len, a.seq_len);
            if a.data_dir.is_some()
                || a.chunk.is_some()
                || a.standardize.is_some()
                || a.permuted.is_some()
            {
                bail!("--data-dir, --chunk, --standardize and --permuted apply to the pixel task only (and --data-dir to the lm task)");
            }
        }
        TaskSpec::Lm {
            dir,
            seq_len,
            vocab,
            embedding_dim,
            train_tokens,
            eval_split,
        } => {
            if a.chunk.is_some() || a.standardize.is_some() || a.permuted.is_some() {
                bail!("--chunk, --standardize and --permuted apply to the pixel task only");
            }
            set(dir, a.data_dir.clone());
            set(seq_len, a.seq_len);
            set(vocab, a.vocab);
            set(embedding_dim, a.embedding_dim);
            if a.train_tokens.is_some() {
                *train_tokens = a.train_tokens;
            }
            set(eval_split, a.eval_split);
        }
        TaskSpec::Pixel {
            dir,
            chunk,
            standardize,
            permuted,
        } => {
            if a.seq_len.is_some() {
                bail!("the pixel task's length is set by --chunk (T = 784 / k), not --seq-len");
            }
            set(dir, a.data_dir.clone());
            set(chunk, a.chunk);
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
    }
}
