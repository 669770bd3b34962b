//! Subcommands of the `tpri` binary and the flags they share.

mod batch;
mod bench;
mod bench_args;
mod bench_fits;
mod bench_report;
mod check;
mod compare;
mod errors;
mod export;
mod plot;
mod sweep;
mod trace;
mod train;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use std::sync::Arc;
use tpri::backend::Backend;

use tpri::cpu::CpuBackend;
use tpri::gpu::{
    AdapterChoice, Backward, GpuBackend, GpuContext, GpuOptions, LanesPerUnit,
    SequencesPerWorkgroup, StepsPerBlock, StepsPerDispatch, Storage,
};

use tpri::config::{
    DtpConfig, Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Preconditioner,
    Solver, TargetMode, TpConfig, TpGrad,
};
use tpri::model::CellKind;

/// Target propagation with regularized inversion for RNNs, on any GPU, checked in f64.
#[derive(Parser, Debug)]
#[command(name = "tpri", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands. Those with numeric flags read a negative number as a value, so that
/// `--reg -1` is refused by the check that names it rather than by the parser.
#[derive(Subcommand, Debug)]
enum Command {
    /// One iteration on given parameters and one batch, writing every intermediate.
    #[command(allow_negative_numbers = true)]
    Trace(trace::TraceArgs),
    /// Train an RNN on a task with TP-RI or BPTT.
    ///
    /// Settings come in layers: --preset (the paper's settings), then --config FILE.toml,
    /// then the flags. A flag's [default: …] is what it takes when neither a preset nor a
    /// config file sets it.
    #[command(allow_negative_numbers = true)]
    Train(Box<train::TrainArgs>),
    /// List the presets (the paper's published settings).
    Presets,
    /// List the GPU adapters wgpu finds, with the limits that matter here.
    Devices,
    /// Run random problems on the GPU and the f64 reference; print each quantity's error.
    #[command(allow_negative_numbers = true)]
    Check(check::CheckArgs),
    /// Run several configurations on one task and seed, then draw the paper's figures and
    /// print their last values side by side.
    #[command(allow_negative_numbers = true)]
    Compare(compare::CompareArgs),
    /// Redraw the figures of existing run directories.
    Plot(plot::PlotArgs),
    /// Time TP-RI and BP iterations on the GPU and the CPU reference, with a cost model.
    #[command(allow_negative_numbers = true)]
    Bench(Box<bench::BenchArgs>),
    /// Write one batch of a run's task (the sequences `tpri train` feeds the model) as the
    /// batch file `tpri trace` reads.
    #[command(allow_negative_numbers = true)]
    Batch(batch::BatchArgs),
    /// Write a run's parameters (or a parameter file's) under PyTorch's names, or back.
    ///
    /// The output loads into a module holding an `nn.RNN(p, d)` as `rnn` (tanh cell) or an
    /// `nn.GRU(p, d)` as `gru`, and an `nn.Linear(d, q)` as `head`, with
    /// `model.load_state_dict(safetensors.torch.load_file(OUT))`. The tanh RNN's two biases
    /// map one to one (rnn.b_ih ↔ bias_ih_l0, rnn.b_hh ↔ bias_hh_l0), as PyTorch keeps them.
    Export(export::ExportArgs),
    /// Run a grid of training runs from a spec, locally or as a Slurm job array, and
    /// gather results.csv and figures (docs/SWEEPS.md).
    #[command(allow_negative_numbers = true)]
    Sweep(Box<sweep::SweepArgs>),
}

/// Runs a parsed command line. The library's errors come back in the command line's
/// words: its API names become the flags that set them (`errors::for_cli`).
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Train(args) => train::run(*args).map_err(|e| errors::for_cli(e, errors::TRAIN)),
        Command::Compare(args) => compare::run(args).map_err(|e| errors::for_cli(e, errors::TRAIN)),
        Command::Devices => check::devices(),
        Command::Check(args) => check::check(args).map_err(|e| errors::for_cli(e, &[])),
        Command::Plot(args) => plot::plot(args),
        Command::Bench(args) => bench::run(*args).map_err(|e| errors::for_cli(e, errors::BENCH)),
        Command::Export(args) => export::run(args).map_err(|e| errors::for_cli(e, &[])),
        Command::Batch(args) => batch::run(args).map_err(|e| errors::for_cli(e, errors::TRAIN)),
        Command::Sweep(args) => sweep::run(*args).map_err(|e| errors::for_cli(e, errors::TRAIN)),
        Command::Presets => {
            for (name, about) in tpri::presets::PRESETS {
                println!("{name:28} {about}");
            }
            Ok(())
        }
    }
}

/// Flags of the target propagation, shared by every subcommand that runs TP.
#[derive(Args, Debug, Clone)]
pub struct TpArgs {
    /// Target update rule of the backward sweep (docs/ALGORITHM.md §2, step 5).
    #[arg(long, value_enum, default_value = "linearized")]
    target_mode: TargetMode,
    /// Target step γ_h of the last target v_T = h_T − γ_h ∇ℓ (docs/ALGORITHM.md §2).
    #[arg(long, default_value_t = TpConfig::default().lr_target)]
    lr_target: f64,
    /// Regularization r > 0 of the inversion (docs/ALGORITHM.md §2, §4, §5).
    #[arg(long, default_value_t = TpConfig::default().reg)]
    reg: f64,
    /// How the surrogate loss is differentiated (docs/ALGORITHM.md §2, step 6).
    #[arg(long, value_enum, default_value = "through-time")]
    tp_grad: TpGrad,
    /// How targets are carried back a step: the closed form through P (tanh RNN,
    /// docs/ALGORITHM.md §2), per-step CG on Jacobian products (any cell, §5), or the
    /// published GRU inversion through one P_g per gate (GRU, §5) [default: analytic for
    /// the tanh RNN, jacobian for the GRU].
    #[arg(long, value_enum)]
    inversion: Option<Inversion>,
    /// How P = (WᵀW + rI)⁻¹Wᵀ is applied (analytic inversion, docs/ALGORITHM.md §4):
    /// formed by CG or Cholesky, per-step CG solves, or the cheaper by the cost model; for
    /// the per-gate inversion, how its three P_g are formed (auto: CG; §5).
    #[arg(long, value_enum, default_value = "auto")]
    solver: Solver,
    #[arg(long, help = cg_tol_help())]
    cg_tol: Option<f64>,
    /// Cap on CG iterations; a solve that has not reached --cg-tol by then is an error
    /// (docs/ALGORITHM.md §4).
    #[arg(long, default_value_t = TpConfig::default().cg_max_iter)]
    cg_max_iter: usize,
    /// Preconditioner of the jacobian inversion's per-step CG: `jacobi`, 1 / (diag(JᵀJ) +
    /// r), `none`, plain CG, or `auto`, jacobi for the GRU and none for the tanh RNN; the
    /// same solution to the tolerance (docs/ALGORITHM.md §5).
    #[arg(long, value_enum, default_value = "auto")]
    precondition: Preconditioner,
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
            precondition: self.precondition,
        }
    }
}

/// Help of `--cg-tol`, with the backends' defaults.
fn cg_tol_help() -> String {
    format!(
        "CG relative-residual tolerance (docs/ALGORITHM.md §4) [default: {:e} on the CPU \
         (f64), {:e} on the GPU (f32)]",
        tpri::config::CPU_CG_TOL,
        tpri::gpu::GPU_CG_TOL
    )
}

/// Builds the settings of one iteration on a model of `cell` from the shared flags.
fn hyper(method: Method, loss: Loss, tp: &TpArgs, cell: CellKind, opt: OptimizerConfig) -> Hyper {
    Hyper {
        method,
        loss,
        tp: tp.config(cell),
        opt,
        dtp: DtpConfig::default(),
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
    /// Which device runs the iterations: a hardware GPU, else the CPU reference (auto);
    /// the GPU even if it is a software adapter (gpu); the f64 reference (cpu).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Adapter name (substring) or index from `tpri devices` [default: the best adapter:
    /// discrete, then integrated, virtual, other, CPU].
    #[arg(long)]
    adapter: Option<String>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// The GPU backend's options (`GpuOptions`) as flags, alike in every command that runs it
/// (train, compare, check, trace); the CPU reference refuses any but their defaults.
#[derive(Args, Debug, Clone, Default)]
pub struct GpuArgs {
    /// How the GPU backend stores the histories h and v − h (arithmetic is f32 either
    /// way); f16 halves their memory and traffic. The CPU reference is f64 throughout.
    #[arg(long, value_enum, default_value = "f32")]
    storage: Storage,
    /// How much of a long loop one GPU launch runs: `auto` (under llvmpipe's loop cap
    /// there, a time budget elsewhere) or at most K time steps, K CG iterations, K·B
    /// reduction rows (capped on llvmpipe); results do not depend on it.
    #[arg(long, default_value = "auto")]
    steps_per_dispatch: StepsPerDispatch,
    /// How many sequences one workgroup of the GPU's tanh time loops (forward pass,
    /// backward recursion, target sweep) carries: `auto` (1 on a GPU; on lavapipe as many
    /// as leave a workgroup per CPU thread) or a power of two from 1 to 16 with
    /// count × lanes per unit × d ≤ 2048; results do not depend on it.
    #[arg(long, default_value = "auto")]
    sequences_per_workgroup: SequencesPerWorkgroup,
    /// How many invocations of the GPU's tanh time loops (and of the GRU's forward pass and
    /// backward recursion) share each unit's dot product: `auto` (tanh: on a GPU 2 where
    /// d ≥ 64 and the batch makes at most 128 workgroups, else 1, and 1 on lavapipe;
    /// docs/PERFORMANCE.md, "Lanes per unit"; the GRU: 1, its lanes not yet timed on a GPU)
    /// or a power of two from 1 to 16 (lanes × d within the adapter's invocations, lanes ×
    /// sequences per workgroup × d ≤ 2048, for the GRU 3 × lanes × d ≤ 2048 and (3 + lanes)
    /// × d ≤ 2048); results change within f32 rounding.
    #[arg(long, default_value = "auto")]
    lanes_per_unit: LanesPerUnit,
    /// How many steps of the GPU's tanh time loops take their loads (and the forward
    /// pass's stores) at once: `auto` (as many as the loop's workgroup memory holds, up
    /// to 32) or at most a count from 1 (a step at a time) to 32 (docs/PERFORMANCE.md,
    /// "Blocks of steps"); results do not depend on it.
    #[arg(long, default_value = "auto")]
    steps_per_block: StepsPerBlock,
    /// TP-RI's backward pass on the GPU with P (or the GRU's P_g): `fused` runs the target
    /// sweep and the surrogate's BPTT in one time loop where that kernel applies (tanh:
    /// linearized or difference targets, one output, the surrogate through time, d × lanes
    /// per unit within a workgroup, either storage; GRU: the per-gate inversion, the
    /// surrogate through time, d ≤ 341), `separate` in two (docs/PERFORMANCE.md, "One
    /// backward loop for TP-RI"); the results are the same bit for bit.
    #[arg(long, value_enum, default_value_t = Backward::Fused)]
    backward: Backward,
}

impl GpuArgs {
    /// The GPU backend's options these flags name.
    fn options(&self) -> GpuOptions {
        GpuOptions {
            storage: self.storage,
            steps_per_dispatch: self.steps_per_dispatch,
            sequences_per_workgroup: self.sequences_per_workgroup,
            lanes_per_unit: self.lanes_per_unit,
            steps_per_block: self.steps_per_block,
            backward: self.backward,
        }
    }

    /// Refuses every flag set off its default, naming it: they apply to the GPU backend,
    /// and the CPU reference would silently ignore them.
    fn check_cpu(&self) -> Result<()> {
        let set: [(bool, String, &str); 6] = [
            (
                self.storage != Storage::F32,
                format!("--storage {}", self.storage),
                "computes and stores in f64",
            ),
            (
                self.steps_per_dispatch != StepsPerDispatch::Auto,
                format!("--steps-per-dispatch {}", self.steps_per_dispatch),
                "runs its loops on the host",
            ),
            (
                self.sequences_per_workgroup != SequencesPerWorkgroup::Auto,
                format!("--sequences-per-workgroup {}", self.sequences_per_workgroup),
                "runs its sequences on the host",
            ),
            (
                self.lanes_per_unit != LanesPerUnit::Auto,
                format!("--lanes-per-unit {}", self.lanes_per_unit),
                "runs its sums on the host",
            ),
            (
                self.steps_per_block != StepsPerBlock::Auto,
                format!("--steps-per-block {}", self.steps_per_block),
                "runs its loops on the host",
            ),
            (
                self.backward != Backward::Fused,
                "--backward separate".to_string(),
                "runs its loops on the host",
            ),
        ];
        match set.into_iter().find(|(off, _, _)| *off) {
            Some((_, flag, why)) => {
                bail!("{flag} applies to the GPU backend; the CPU reference {why}")
            }
            None => Ok(()),
        }
    }
}

/// Opens the chosen backend. `auto` takes a hardware GPU when there is one; software
/// adapters (lavapipe, WARP) are slower than the CPU reference, so it says so and falls
/// back to the CPU unless `--backend gpu` forces them.
pub fn open_backend(args: &BackendArgs) -> Result<Box<dyn Backend>> {
    if let Some(name) = &args.adapter {
        name.parse::<AdapterChoice>()?;
    }
    let cpu = || -> Result<Box<dyn Backend>> {
        if args.adapter.is_some() && args.backend == BackendChoice::Cpu {
            bail!("--adapter applies to the GPU backend; --backend cpu runs the f64 reference");
        }
        args.gpu.check_cpu()?;
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
                Some(a) => eprintln!("note: no hardware GPU found, only the software adapter {}; using the CPU reference (--backend gpu forces the adapter)", a.name),
                None => eprintln!("note: no GPU adapter found; using the CPU reference"),
            }
            cpu()
        }
    }
}

/// Opens the wgpu backend on the adapter the flags name (`auto` when none), with the
/// storage and launch splitting they name.
pub fn open_gpu(args: &BackendArgs) -> Result<Box<dyn Backend>> {
    let choice: AdapterChoice = args.adapter.as_deref().unwrap_or("auto").parse()?;
    let ctx = GpuContext::new(&choice)?;
    Ok(Box::new(GpuBackend::with_options(
        Arc::new(ctx),
        args.gpu.options(),
    )))
}
