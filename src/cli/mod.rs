//! Subcommands of the `tpri` binary and the flags they share.

mod bench;
mod check;
mod compare;
mod trace;
mod train;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use std::sync::Arc;
use tpri::backend::Backend;

use tpri::cpu::CpuBackend;
use tpri::gpu::{AdapterChoice, GpuBackend, GpuContext, Storage};

use tpri::config::{
    Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode, TpConfig,
    TpGrad,
};
use tpri::model::CellKind;

/// Target propagation with regularized inversion for RNNs, on any GPU, checked in f64.
#[derive(Parser, Debug)]
#[command(name = "tpri", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One iteration on given parameters and one batch, writing every intermediate.
    Trace(trace::TraceArgs),
    /// Train an RNN on a task with TP-RI or BPTT.
    Train(Box<train::TrainArgs>),
    /// List the presets (the paper's published settings).
    Presets,
    /// List the GPU adapters wgpu finds, with the limits that matter here.
    Devices,
    /// Run random problems on the GPU and the f64 reference; print each quantity's error.
    Check(check::CheckArgs),
    /// Run several configurations on one task and seed, then draw the paper's figures.
    Compare(compare::CompareArgs),
    /// Redraw the figures of existing run directories.
    Plot(PlotArgs),
    /// Time TP-RI and BP iterations on the GPU and the CPU reference, with a cost model.
    Bench(Box<bench::BenchArgs>),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Train(args) => train::run(*args),
        Command::Compare(args) => compare::run(args),
        Command::Devices => check::devices(),
        Command::Check(args) => check::check(args),
        Command::Plot(args) => plot(args),
        Command::Bench(args) => bench::run(*args),
        Command::Presets => {
            for (name, about) in tpri::presets::PRESETS {
                println!("{name:28} {about}");
            }
            Ok(())
        }
    }
}

/// Flags of `tpri plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directories, each with its log.csv and step_norms.csv.
    #[arg(required = true)]
    runs: Vec<std::path::PathBuf>,
    /// Where the figures go.
    #[arg(long)]
    out: std::path::PathBuf,
    /// Label the evaluation figure as MSE (regression tasks).
    #[arg(long)]
    regression: bool,
}

fn plot(args: PlotArgs) -> Result<()> {
    let runs: Vec<_> = args
        .runs
        .iter()
        .map(|d| {
            (
                d.file_name().map_or_else(
                    || d.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                ),
                d.clone(),
            )
        })
        .collect();
    for f in tpri::figures::draw(&runs, &args.out, args.regression)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// Flags of the target propagation, shared by every subcommand that runs TP.
#[derive(Args, Debug, Clone)]
pub struct TpArgs {
    /// Target update rule for the backward sweep.
    #[arg(long, value_enum, default_value = "linearized")]
    target_mode: TargetMode,
    /// Target step γ_h.
    #[arg(long, default_value_t = TpConfig::default().lr_target)]
    lr_target: f64,
    /// Regularization r of the inversion (> 0).
    #[arg(long, default_value_t = TpConfig::default().reg)]
    reg: f64,
    /// How the surrogate is differentiated.
    #[arg(long, value_enum, default_value = "through-time")]
    tp_grad: TpGrad,
    /// How targets are carried back a step: the closed form through P (tanh RNN), or
    /// per-step CG on Jacobian products (any cell). Default: analytic for the tanh RNN,
    /// jacobian for the GRU.
    #[arg(long, value_enum)]
    inversion: Option<Inversion>,
    /// How P = (WᵀW + rI)⁻¹Wᵀ is applied (analytic inversion): formed by CG or Cholesky,
    /// per-step CG solves, or the cheaper by the cost model.
    #[arg(long, value_enum, default_value = "auto")]
    solver: Solver,
    /// CG relative-residual tolerance (default: 1e-12 on the CPU, looser on f32 GPUs).
    #[arg(long)]
    cg_tol: Option<f64>,
    /// Cap on CG iterations.
    #[arg(long, default_value_t = TpConfig::default().cg_max_iter)]
    cg_max_iter: usize,
}

impl TpArgs {
    /// The settings for a model of `cell`.
    fn config(&self, cell: CellKind) -> TpConfig {
        TpConfig {
            inversion: self.inversion.unwrap_or(Inversion::default_for(cell)),
            lr_target: self.lr_target,
            reg: self.reg,
            target_mode: self.target_mode,
            tp_grad: self.tp_grad,
            solver: self.solver,
            cg_tol: self.cg_tol,
            cg_max_iter: self.cg_max_iter,
        }
    }
}

/// Builds the settings of one iteration on a model of `cell` from the shared flags.
fn hyper(method: Method, loss: Loss, tp: &TpArgs, cell: CellKind, opt: OptimizerConfig) -> Hyper {
    Hyper {
        method,
        loss,
        tp: tp.config(cell),
        opt,
    }
}

/// Optimizer settings used where a command never updates (tracing).
fn no_optimizer() -> OptimizerConfig {
    OptimizerConfig {
        kind: OptimizerKind::Sgd,
        ..OptimizerConfig::default()
    }
}

/// Which device runs the iterations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The GPU when an adapter exists, else the CPU reference (with a notice).
    #[default]
    Auto,
    /// The wgpu backend; an error when no adapter exists.
    Gpu,
    /// The f64 CPU reference.
    Cpu,
}

/// Flags choosing the backend.
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Adapter name (substring) or index from `tpri devices`.
    #[arg(long)]
    adapter: Option<String>,
    /// How the GPU backend stores the histories h and v − h (arithmetic is f32 either
    /// way); f16 halves their memory and traffic. The CPU reference is f64 throughout.
    #[arg(long, value_enum, default_value = "f32")]
    storage: Storage,
}

/// Opens the chosen backend. `auto` takes a hardware GPU when there is one; software
/// adapters (lavapipe, WARP) are slower than the CPU reference, so it says so and falls
/// back to the CPU unless `--backend gpu` forces them.
pub fn open_backend(args: &BackendArgs) -> Result<Box<dyn Backend>> {
    let cpu = || -> Result<Box<dyn Backend>> {
        if args.storage != Storage::F32 {
            bail!(
                "--storage {} applies to the GPU backend; the CPU reference computes and stores in f64",
                args.storage
            );
        }
        Ok(Box::new(CpuBackend::new()))
    };
    match args.backend {
        BackendChoice::Cpu => cpu(),
        BackendChoice::Gpu => open_gpu(args),
        BackendChoice::Auto if args.adapter.is_some() => open_gpu(args),
        BackendChoice::Auto => {
            let adapters = tpri::gpu::list_adapters();
            if adapters.iter().any(|a| a.compute && a.device_type != "Cpu") {
                return open_gpu(args);
            }
            match adapters.iter().find(|a| a.compute) {
                Some(a) => println!("note: no hardware GPU found, only the software adapter {}; using the CPU reference (--backend gpu forces the adapter)", a.name),
                None => println!("note: no GPU adapter found; using the CPU reference"),
            }
            cpu()
        }
    }
}

/// Opens the wgpu backend on the adapter the flags name (`auto` when none), with the
/// storage they name.
pub fn open_gpu(args: &BackendArgs) -> Result<Box<dyn Backend>> {
    let choice: AdapterChoice = args.adapter.as_deref().unwrap_or("auto").parse()?;
    let ctx = GpuContext::new(&choice)?;
    Ok(Box::new(GpuBackend::with_storage(
        Arc::new(ctx),
        args.storage,
    )))
}
