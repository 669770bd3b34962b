//! `tpri batch`: one batch of a run's task, the sequences `tpri train` feeds the model,
//! written as the batch file `tpri trace` reads (and any other implementation can check).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use tpri::tasks::build_task;
use tpri::tensor_file::save_batch;

use super::train::{resolve, TrainArgs};

/// Flags of `tpri batch`.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// A run directory (its config.toml), or a config file in that layout: any subset of
    /// a run's settings over the defaults, as `tpri train --config` reads it.
    input: PathBuf,
    /// Write the training batch of this iteration (1 is the first) [default: 1].
    #[arg(long, conflicts_with = "held_out")]
    iteration: Option<u64>,
    /// Write this batch of the held-out set instead (1 is the first; the set in batches of
    /// B sequences, as evaluation takes it).
    #[arg(long)]
    held_out: Option<usize>,
    /// Where to write the batch: `x` [B,T,p] (f64) and `y` (safetensors), and for the lm
    /// task its token ids `tokens` [B,T].
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tpri batch`.
pub fn run(args: BatchArgs) -> Result<()> {
    let config = if args.input.is_dir() {
        args.input.join("config.toml")
    } else {
        args.input.clone()
    };
    let cfg = resolve(&TrainArgs {
        config: Some(config),
        ..TrainArgs::default()
    })?;
    let task = build_task(&cfg.task, cfg.seed, cfg.eval_size)?;
    let (batch, what) = match (args.held_out, args.iteration.unwrap_or(1)) {
        (Some(k), _) => {
            let mut batches = task.eval_batches(cfg.batch_size)?;
            let n = batches.len();
            if k == 0 || k > n {
                bail!("--held-out {k}: the held-out set has batches 1 to {n}");
            }
            (
                batches.swap_remove(k - 1),
                format!("held-out batch {k} of {n}"),
            )
        }
        (None, 0) => bail!("--iteration counts from 1"),
        (None, i) => (
            task.train_batch(i - 1, cfg.batch_size)?,
            format!("the training batch of iteration {i}"),
        ),
    };
    save_batch(&args.out, &batch)?;
    println!(
        "wrote {}: {what} (B = {}, T = {}, p = {})",
        args.out.display(),
        batch.batch_size(),
        batch.seq_len(),
        batch.input_size()
    );
    Ok(())
}
