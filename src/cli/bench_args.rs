//! `tpri bench`'s flags and their checks, before any device is timed: sizes and counts of
//! at least 1, positive device figures, and every size of every grid within the memory
//! available and the GPU's limits (`limits::Workload`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use tpri::bench::{Case, Machine, Size, Solve, BENCH_REG};
use tpri::config::{Inversion, Method, Preconditioner, TpConfig};
use tpri::gpu::{
    Backward, F16Conversions, GpuContext, GpuOptions, LanesPerUnit, SequencesPerWorkgroup,
    StepsPerBlock, StepsPerDispatch, Storage,
};
use tpri::model::CellKind;

/// Which backends to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// The wgpu backend.
    Gpu,
    /// The f64 CPU reference.
    Cpu,
    /// Both.
    All,
}

/// Flags of `tpri bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Backends to time.
    #[arg(long, value_enum, default_value = "all")]
    pub(super) backend: Which,
    /// GPU adapter: `auto`, an index, or a name substring.
    #[arg(long, default_value = "auto")]
    pub(super) adapter: String,
    /// How the GPU stores the histories h and v − h; `f32,f16` times both (their rows
    /// are labelled `gpu` and `gpu-f16`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Storage::F32])]
    pub(super) storage: Vec<Storage>,
    /// How f16 storage converts; `native,integer` times both (rows `gpu-f16` and
    /// `gpu-f16-int`). `native` falls back to integer code where the adapter lacks
    /// SHADER_F16.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [F16Conversions::Native])]
    pub(super) f16_conversions: Vec<F16Conversions>,
    /// How much of a long loop one GPU launch runs: `auto` (the adapter's choice) or K
    /// steps (docs/PERFORMANCE.md); `auto,100000` times the adapter's segments against
    /// one launch per loop (rows labelled `gpu` and `gpu-k100000`).
    #[arg(long, value_delimiter = ',', default_values_t = [StepsPerDispatch::Auto])]
    pub(super) steps_per_dispatch: Vec<StepsPerDispatch>,
    /// Sequences per workgroup of the tanh time loops: `auto` (the adapter's choice) or
    /// a power of two (docs/PERFORMANCE.md); `1,auto` times one sequence per workgroup
    /// against the adapter's choice (rows labelled `gpu-s1` and `gpu`).
    #[arg(long, value_delimiter = ',', default_values_t = [SequencesPerWorkgroup::Auto])]
    pub(super) sequences_per_workgroup: Vec<SequencesPerWorkgroup>,
    /// Lanes per unit of the tanh time loops and the GRU's forward and backward loops: `auto` (the
    /// adapter's choice) or a power of two; `1,auto` times one lane per unit against the
    /// adapter's choice (rows labelled `gpu-l1` and `gpu`).
    #[arg(long, value_delimiter = ',', default_values_t = [LanesPerUnit::Auto])]
    pub(super) lanes_per_unit: Vec<LanesPerUnit>,
    /// Most steps per block of the tanh time loops: `auto` (as many as fit) or 1 to 32;
    /// `1,8,auto` times a step at a time, blocks of at most 8 and the adapter's blocks
    /// (rows labelled `gpu-b1`, `gpu-b8` and `gpu`; docs/PERFORMANCE.md, "Blocks of
    /// steps").
    #[arg(long, value_delimiter = ',', default_values_t = [StepsPerBlock::Auto])]
    pub(super) steps_per_block: Vec<StepsPerBlock>,
    /// TP-RI's backward pass with P (or the GRU's P_g): `fused` (one loop for the target
    /// sweep and the surrogate's BPTT where it applies) or `separate`; `fused,separate` times both (rows
    /// labelled `gpu` and `gpu-separate`; docs/PERFORMANCE.md, "One backward loop for
    /// TP-RI"). With `fused` the sweep phase holds both loops and the bptt phase is empty.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backward::Fused])]
    pub(super) backward: Vec<Backward>,
    /// Recurrent cells: `tanh`, `gru` (TP-RI with the published per-gate inversion), or
    /// `tanh,gru` for both. The cost model covers both (`--model-only` prints each cell's);
    /// the regime map and the crossover study are the tanh RNN's.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [CellKind::Tanh])]
    pub(super) cell: Vec<CellKind>,
    /// TP-RI's inversions to time, each with the cells it applies to: `analytic` (the
    /// tanh RNN), `per-gate` (the GRU), `jacobian` (both: the generalized inversion, per-step
    /// CG on Jacobian products, the GRU's training default). Unset: `analytic` for the tanh
    /// RNN and `per-gate` for the GRU. TP rows with another inversion than those are
    /// labelled `tp-jacobian` and so on; the jacobian rows' floors follow the CG iterations
    /// they ran in all (`bench::cost_model_per_step`).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(super) inversion: Vec<Inversion>,
    /// TP-RI's regularization r in every TP-RI case (the presets' r by default). The
    /// jacobian inversion's time depends on it: at r = 1 the targets of the synthetic
    /// problem move only the last few dozen steps, at a training run's r = 0.25 all of
    /// them (docs/PERFORMANCE.md, "What the jacobian inversion costs in training").
    #[arg(long, default_value_t = BENCH_REG)]
    pub(super) reg: f64,
    /// CG's relative-residual tolerance in every TP-RI case: unset, each backend's default
    /// (1e-12 on the f64 CPU reference, 1e-5 on the GPU; docs/ALGORITHM.md §4). The per-step
    /// solves' time follows it: set the GPU's 1e-5 to time the CPU reference at the
    /// tolerance the GPU solves to.
    #[arg(long)]
    pub(super) cg_tol: Option<f64>,
    /// CG's cap on iterations in every TP-RI case, as in training; a solve that reaches it
    /// without meeting the tolerance fails the case, naming it.
    #[arg(long, default_value_t = TpConfig::default().cg_max_iter)]
    pub(super) cg_max_iter: usize,
    /// The jacobian inversion's preconditioners to time, each a row of its own: `auto`,
    /// training's default (jacobi for the GRU, none for the tanh RNN), `jacobi` and `none`
    /// (plain CG); a row whose preconditioner is not its cell's default is labelled
    /// `tp-jacobian-jacobi` or `tp-jacobian-plain` (docs/ALGORITHM.md §5). The other
    /// inversions ignore it.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Preconditioner::Auto])]
    pub(super) precondition: Vec<Preconditioner>,
    /// Sequence lengths T.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 128, 784])]
    pub(super) steps: Vec<usize>,
    /// Hidden sizes d.
    #[arg(long, value_delimiter = ',', default_values_t = [100])]
    pub(super) hidden: Vec<usize>,
    /// Batch sizes B.
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16])]
    pub(super) batch: Vec<usize>,
    /// Input size p (pixel sequences: 1).
    #[arg(long, default_value_t = 1)]
    pub(super) input: usize,
    /// Number of classes q.
    #[arg(long, default_value_t = 10)]
    pub(super) output: usize,
    /// Timed repetitions per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub(super) reps: usize,
    /// A small grid and few repetitions: under a minute on a software rasterizer.
    #[arg(long)]
    pub(super) quick: bool,
    /// Also measure the TP/BP time ratio over the T × d grid below.
    #[arg(long)]
    pub(super) regimes: bool,
    /// Also time the step probes on the GPU (`shaders/step_probe.wgsl`): what one step of
    /// a time loop costs besides its arithmetic (the barrier and the chain through
    /// workgroup memory, a global load on the chain or a step ahead, a store, a block's
    /// staged loads, a second barrier), over 4 096 steps in 16 workgroups,
    /// `--reps` times each (docs/PERFORMANCE.md, "Step probes").
    #[arg(long)]
    pub(super) probes: bool,
    /// Sequence lengths of the regime map.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32, 128])]
    pub(super) regime_steps: Vec<usize>,
    /// Hidden sizes of the regime map.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 128])]
    pub(super) regime_hidden: Vec<usize>,
    /// Batch size of the regime map.
    #[arg(long, default_value_t = 16)]
    pub(super) regime_batch: usize,
    /// With `--regimes`: also draw the TP/BP time-ratio map of each backend as
    /// `<STEM>-gpu.{svg,png}` and `<STEM>-cpu.{svg,png}` (x = T, y = d, linear
    /// colour scale, the ratio written in each cell); the table is printed as well.
    #[arg(long, value_name = "STEM", requires = "regimes")]
    pub(super) plot: Option<PathBuf>,
    /// Also time CPU TP-RI iterations forming P against per-step solves over the T × B grid
    /// below at one d, next to the cost model's choice (`--solver auto`).
    #[arg(long)]
    pub(super) crossover: bool,
    /// Sequence lengths of the crossover study.
    #[arg(long, value_delimiter = ',', default_values_t = [2, 5, 9, 17, 33, 65])]
    pub(super) crossover_steps: Vec<usize>,
    /// Batch sizes of the crossover study.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    pub(super) crossover_batch: Vec<usize>,
    /// Hidden size of the crossover study.
    #[arg(long, default_value_t = 128)]
    pub(super) crossover_hidden: usize,
    /// Also write every measurement, the machine and the command line as JSON to this
    /// file [default: none].
    #[arg(long)]
    pub(super) json: Option<PathBuf>,
    /// The device the cost model's floors assume: `midrange` (10 TFLOP/s, 500 GB/s) or
    /// `h100` (an H100 SXM's datasheet rate and bandwidth with assumed launch and step
    /// costs; docs/PERFORMANCE.md lists every figure). The flags below override single
    /// figures.
    #[arg(long, value_enum, default_value = "midrange")]
    pub(super) assume: AssumedDevice,
    /// Print the cost model's phases, floors and binding terms for every size and method,
    /// without measuring anything (no GPU needed).
    #[arg(long)]
    pub(super) model_only: bool,
    /// Assumed peak f32 throughput of the device, GFLOP/s.
    #[arg(long)]
    pub(super) peak_gflops: Option<f64>,
    /// Assumed memory bandwidth, GB/s.
    #[arg(long)]
    pub(super) bandwidth_gbs: Option<f64>,
    /// Assumed bandwidth of the cache the time loops read their matrix from, GB/s.
    #[arg(long)]
    pub(super) cache_gbs: Option<f64>,
    /// Assumed workgroups of a time loop that run at once.
    #[arg(long)]
    pub(super) concurrent_workgroups: Option<usize>,
    /// Assumed cost of one kernel launch, µs.
    #[arg(long)]
    pub(super) dispatch_us: Option<f64>,
    /// Assumed latency of one step of a fused time loop (a dot product, two barriers), µs.
    #[arg(long)]
    pub(super) step_us: Option<f64>,
}

impl BenchArgs {
    /// How every TP-RI case solves: `--reg`, `--cg-tol`, `--cg-max-iter`, and the first
    /// `--precondition` (`cases` gives the jacobian inversion one case per preconditioner).
    pub(super) fn solve(&self) -> Solve {
        Solve {
            reg: self.reg,
            cg_tol: self.cg_tol,
            cg_max_iter: self.cg_max_iter,
            precondition: self
                .precondition
                .first()
                .copied()
                .unwrap_or(TpConfig::default().precondition),
        }
    }
}

/// The devices `--assume` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AssumedDevice {
    /// [`Machine::MIDRANGE`].
    Midrange,
    /// [`Machine::H100`].
    H100,
}

/// The device the cost model assumes: `--assume`, then each figure a flag overrides.
pub fn assumed_machine(args: &BenchArgs) -> Machine {
    let base = match args.assume {
        AssumedDevice::Midrange => Machine::MIDRANGE,
        AssumedDevice::H100 => Machine::H100,
    };
    Machine {
        flops: args.peak_gflops.map_or(base.flops, |g| g * 1e9),
        bandwidth: args.bandwidth_gbs.map_or(base.bandwidth, |g| g * 1e9),
        cache_bandwidth: args.cache_gbs.map_or(base.cache_bandwidth, |g| g * 1e9),
        concurrent_workgroups: args
            .concurrent_workgroups
            .unwrap_or(base.concurrent_workgroups),
        dispatch_s: args.dispatch_us.map_or(base.dispatch_s, |u| u * 1e-6),
        step_s: args.step_us.map_or(base.step_s, |u| u * 1e-6),
    }
}

/// Refuses flags no measurement can run with, naming the flag: a size or count of 0,
/// an empty grid, a device figure that is not positive and finite.
pub fn check_args(args: &BenchArgs) -> Result<()> {
    let mut grids: Vec<(&str, &[usize])> = vec![
        ("--steps", &args.steps),
        ("--hidden", &args.hidden),
        ("--batch", &args.batch),
    ];
    if args.regimes {
        grids.extend([
            ("--regime-steps", &args.regime_steps[..]),
            ("--regime-hidden", &args.regime_hidden[..]),
        ]);
    }
    if args.crossover {
        grids.extend([
            ("--crossover-steps", &args.crossover_steps[..]),
            ("--crossover-batch", &args.crossover_batch[..]),
        ]);
    }
    for &inversion in &args.inversion {
        if !args.cell.iter().any(|&cell| Case::applies(cell, inversion)) {
            bail!(
                "--inversion {} applies to none of the cells timed (--cell): analytic to the \
                 tanh RNN, per-gate to the GRU, jacobian to both",
                inversion.name()
            );
        }
    }
    for &cell in &args.cell {
        if cases(args, cell).len() < 2 {
            bail!(
                "--inversion lists none of the {cell:?} cell's inversions (analytic or jacobian \
                 for the tanh RNN, per-gate or jacobian for the GRU)"
            );
        }
    }
    if args.probes && args.backend == Which::Cpu {
        bail!("--probes times GPU kernels: use --backend gpu or --backend all");
    }
    for (flag, values) in grids {
        if values.is_empty() {
            bail!("{flag} needs at least one value");
        }
        if values.contains(&0) {
            bail!("{flag} must be at least 1, got 0");
        }
    }
    for (flag, value) in [
        ("--input", args.input),
        ("--output", args.output),
        ("--reps", args.reps),
        ("--regime-batch", args.regime_batch),
        ("--crossover-hidden", args.crossover_hidden),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1, got 0");
        }
    }
    args.solve().check()?;
    if args.concurrent_workgroups == Some(0) {
        bail!("--concurrent-workgroups must be at least 1, got 0");
    }
    for (flag, value, zero_ok) in [
        ("--peak-gflops", args.peak_gflops, false),
        ("--bandwidth-gbs", args.bandwidth_gbs, false),
        ("--cache-gbs", args.cache_gbs, false),
        ("--dispatch-us", args.dispatch_us, true),
        ("--step-us", args.step_us, true),
    ] {
        let Some(value) = value else { continue };
        if !(value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0))) {
            bail!(
                "{flag} must be {} and finite, got {value}",
                if zero_ok { "non-negative" } else { "positive" }
            );
        }
    }
    Ok(())
}

/// What `tpri bench` times of `cell`: TP-RI with each `--inversion` that applies to it (with
/// the cell's bench inversion when none is given), the jacobian one with each
/// `--precondition`, then BPTT.
pub(super) fn cases(args: &BenchArgs, cell: CellKind) -> Vec<Case> {
    let mut out: Vec<Case> = if args.inversion.is_empty() {
        vec![Case::of(cell, Method::Tp).with_solve(args.solve())]
    } else {
        let solve = args.solve();
        let preconditioned = |inversion: Inversion| -> Vec<Case> {
            let one = |precondition| {
                Case::tp(cell, inversion).with_solve(Solve {
                    precondition,
                    ..solve
                })
            };
            if inversion == Inversion::Jacobian {
                args.precondition.iter().map(|&p| one(p)).collect()
            } else {
                vec![one(solve.precondition)]
            }
        };
        args.inversion
            .iter()
            .filter(|&&inversion| Case::applies(cell, inversion))
            .flat_map(|&inversion| preconditioned(inversion))
            .collect()
    };
    out.push(Case::of(cell, Method::Bp));
    out
}

/// Checks every size of every grid, for each cell it times, against the memory available
/// and the GPU's limits before the first measurement (`limits::Workload`).
pub fn check_memory(
    args: &BenchArgs,
    gpu_runs: &[(Arc<GpuContext>, GpuOptions)],
    cpu: bool,
) -> Result<()> {
    let size = |(steps, hidden, batch)| Size {
        steps,
        hidden,
        batch,
        input: args.input,
        output: args.output,
    };
    // (size, case, on the GPU runs, on the CPU): the grid in every case asked for; the
    // regime map and the crossover study (CPU only) in the tanh RNN's TP-RI.
    let mut checks: Vec<(Size, Case, bool, bool)> = Vec::new();
    for case in args.cell.iter().flat_map(|&cell| cases(args, cell)) {
        let grid = iproduct(&args.steps, &args.hidden, &args.batch);
        checks.extend(grid.map(|s| (size(s), case, true, cpu)));
    }
    let tanh_tp = Case::of(CellKind::Tanh, Method::Tp).with_solve(args.solve());
    if args.regimes {
        let batch = [args.regime_batch];
        let grid = iproduct(&args.regime_steps, &args.regime_hidden, &batch);
        checks.extend(grid.map(|s| (size(s), tanh_tp, true, cpu)));
    }
    if args.crossover {
        let hidden = [args.crossover_hidden];
        let grid = iproduct(&args.crossover_steps, &hidden, &args.crossover_batch);
        checks.extend(grid.map(|s| (size(s), tanh_tp, false, true)));
    }
    for (s, case, on_gpu, on_cpu) in checks {
        let w = s.workload(case);
        if on_cpu {
            w.check_cpu()?;
        }
        for (ctx, options) in gpu_runs.iter().filter(|_| on_gpu) {
            w.check_gpu(&tpri::gpu::gpu_limits(ctx, options.storage))?;
        }
    }
    Ok(())
}

/// Every (T, d, B) combination, T outermost.
pub(super) fn iproduct<'a>(
    steps: &'a [usize],
    hidden: &'a [usize],
    batch: &'a [usize],
) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
    steps.iter().flat_map(move |&t| {
        hidden
            .iter()
            .flat_map(move |&d| batch.iter().map(move |&b| (t, d, b)))
    })
}
