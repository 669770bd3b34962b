//! `tpri train`: a training run on any task, with TP-RI or BP.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use tpri::config::{Loss, Method, OptimizerConfig, OptimizerKind};
use tpri::tasks::TaskSpec;
use tpri::train::{train, Record, RunConfig};

use super::{hyper, open_backend, BackendArgs, TpArgs};

/// The tasks of SPEC §6.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TaskName {
    TemporalOrder,
    Adding,
    /// Pixel-by-pixel images from an MNIST-layout directory of IDX files.
    Pixel,
}

/// Flags of `tpri train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    task: TaskName,
    /// Sequence length T (synthetic tasks).
    #[arg(long, default_value_t = 30)]
    seq_len: usize,
    /// Directory with train-/t10k- images and labels (pixel task).
    #[arg(long, default_value = "/usr/share/datasets/fashion-mnist")]
    data_dir: PathBuf,
    /// Pixels per step k (pixel task; T = 784 / k).
    #[arg(long, default_value_t = 1)]
    chunk: usize,
    /// Standardize pixels with the training set's mean and deviation (pixel task).
    #[arg(long)]
    standardize: bool,
    /// Apply a fixed seeded permutation to the pixels (pixel task).
    #[arg(long)]
    permuted: bool,
    /// Hidden size d.
    #[arg(long, default_value_t = 100)]
    hidden: usize,
    /// Sequences per batch B.
    #[arg(long, default_value_t = 20)]
    batch_size: usize,
    #[arg(long, value_enum, default_value = "tp")]
    method: Method,
    #[command(flatten)]
    tp: TpArgs,
    #[arg(long, value_enum, default_value = "sgd")]
    optimizer: OptimizerKind,
    /// Learning rate γ_θ.
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Momentum (Nesterov).
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 1000)]
    iterations: u64,
    /// Evaluate every this many iterations.
    #[arg(long, default_value_t = 100)]
    eval_every: u64,
    /// Read the training loss every this many iterations.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Held-out sequences (synthetic tasks; pixel tasks use at most this many test images).
    #[arg(long, default_value_t = 1000)]
    eval_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Runs `tpri train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let (task, loss) = match args.task {
        TaskName::TemporalOrder => (
            TaskSpec::TemporalOrder {
                seq_len: args.seq_len,
            },
            Loss::CrossEntropy,
        ),
        TaskName::Adding => (
            TaskSpec::Adding {
                seq_len: args.seq_len,
            },
            Loss::Mse,
        ),
        TaskName::Pixel => (
            TaskSpec::Pixel {
                dir: args.data_dir,
                chunk: args.chunk,
                standardize: args.standardize,
                permuted: args.permuted,
            },
            Loss::CrossEntropy,
        ),
    };
    if args.seq_len == 0 {
        bail!("sequence length T must be at least 1");
    }
    let opt = OptimizerConfig {
        kind: args.optimizer,
        lr: args.lr,
        momentum: args.momentum,
        ..OptimizerConfig::default()
    };
    let cfg = RunConfig {
        task,
        hidden: args.hidden,
        batch_size: args.batch_size,
        iterations: args.iterations,
        eval_every: args.eval_every,
        log_every: args.log_every,
        eval_size: args.eval_size,
        seed: args.seed,
        hyper: hyper(args.method, loss, &args.tp, opt),
    };
    cfg.validate()?;
    let mut backend = open_backend(&args.backend)?;
    println!(
        "training with {} on {}",
        method_name(cfg.hyper.method),
        backend.name()
    );
    let summary = train(backend.as_mut(), &cfg, print_record)?;
    println!(
        "done: {} iterations in {:.1} s, median step {:.2} ms",
        summary.iterations,
        summary.wall_seconds,
        summary.median_step_seconds * 1e3
    );
    Ok(())
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Tp => "TP-RI",
        Method::Bp => "BPTT",
    }
}

fn print_record(r: &Record) {
    let mut line = format!("iter {:>7}  {:>8.1}s", r.iteration, r.elapsed);
    if let Some(l) = r.train_loss {
        line += &format!("  train loss {l:.5}");
    }
    if let Some(e) = r.eval {
        line += &format!("  eval loss {:.5}  eval acc {:.4}", e.loss, e.accuracy);
    }
    if let Some(cg) = r.cg {
        line += &format!("  cg {} it, res {:.1e}", cg.iterations, cg.residual);
    }
    println!("{line}");
}
