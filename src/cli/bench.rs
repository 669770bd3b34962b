//! `tpri bench`: per-iteration medians of TP-RI and BP on the GPU backend and the CPU
//! reference over grids of T, d, B, the cost model beside them, a linear fit in T·B, and
//! (`--regimes`) the map of the TP/BP time ratio over T × d.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use tpri::bench::{
    gpu_label, measure_cpu, measure_cpu_solver, measure_gpu, Machine, Measurement, Size,
};
use tpri::config::{Hyper, Method, Solver};
use tpri::gpu::{AdapterChoice, F16Conversions, GpuContext, Storage};
use tpri::model::CellKind;
use tpri::plan::{Device, Plan, Sizes, TargetSolve, PER_STEP_PENALTY};

use super::bench_report::{
    fit_rows, ms, plot_regimes, print_fits, print_iterations, print_phases, print_regimes, FitRow,
};

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
    backend: Which,
    /// GPU adapter: `auto`, an index, or a name substring.
    #[arg(long, default_value = "auto")]
    adapter: String,
    /// How the GPU stores the histories h and v − h; `f32,f16` times both (their rows
    /// are labelled `gpu` and `gpu-f16`).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Storage::F32])]
    storage: Vec<Storage>,
    /// How f16 storage converts; `native,integer` times both (rows `gpu-f16` and
    /// `gpu-f16-int`). `native` falls back to integer code where the adapter lacks
    /// SHADER_F16.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [F16Conversions::Native])]
    f16_conversions: Vec<F16Conversions>,
    /// Sequence lengths T.
    #[arg(long, value_delimiter = ',', default_values_t = [32, 128, 784])]
    steps: Vec<usize>,
    /// Hidden sizes d.
    #[arg(long, value_delimiter = ',', default_values_t = [100])]
    hidden: Vec<usize>,
    /// Batch sizes B.
    #[arg(long, value_delimiter = ',', default_values_t = [4, 16])]
    batch: Vec<usize>,
    /// Input size p (pixel sequences: 1).
    #[arg(long, default_value_t = 1)]
    input: usize,
    /// Number of classes q.
    #[arg(long, default_value_t = 10)]
    output: usize,
    /// Timed repetitions per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// A small grid and few repetitions: under a minute on a software rasterizer.
    #[arg(long)]
    quick: bool,
    /// Also measure the TP/BP time ratio over the T × d grid below.
    #[arg(long)]
    regimes: bool,
    /// Sequence lengths of the regime map.
    #[arg(long, value_delimiter = ',', default_values_t = [8, 32, 128])]
    regime_steps: Vec<usize>,
    /// Hidden sizes of the regime map.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 64, 128])]
    regime_hidden: Vec<usize>,
    /// Batch size of the regime map.
    #[arg(long, default_value_t = 16)]
    regime_batch: usize,
    /// With `--regimes`: also draw the TP/BP time-ratio map of each backend as
    /// `<STEM>-gpu.{svg,png}` and `<STEM>-cpu.{svg,png}` (x = T, y = d, linear
    /// colour scale, the ratio written in each cell); the table is printed as well.
    #[arg(long, value_name = "STEM", requires = "regimes")]
    plot: Option<PathBuf>,
    /// Also time CPU TP-RI iterations forming P against per-step solves over the T × B grid
    /// below at one d, next to the cost model's choice (`--solver auto`).
    #[arg(long)]
    crossover: bool,
    /// Sequence lengths of the crossover study.
    #[arg(long, value_delimiter = ',', default_values_t = [2, 5, 9, 17, 33, 65])]
    crossover_steps: Vec<usize>,
    /// Batch sizes of the crossover study.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    crossover_batch: Vec<usize>,
    /// Hidden size of the crossover study.
    #[arg(long, default_value_t = 128)]
    crossover_hidden: usize,
    /// Also write every measurement, the machine and the command line as JSON to this
    /// file [default: none].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Assumed peak f32 throughput of the device, GFLOP/s (default: a mid-range discrete GPU).
    #[arg(long, default_value_t = 10_000.0)]
    peak_gflops: f64,
    /// Assumed memory bandwidth, GB/s.
    #[arg(long, default_value_t = 500.0)]
    bandwidth_gbs: f64,
    /// Assumed cost of one kernel launch, µs.
    #[arg(long, default_value_t = 5.0)]
    dispatch_us: f64,
    /// Assumed latency of one step of a fused time loop (a dot product, two barriers), µs.
    #[arg(long, default_value_t = 2.0)]
    step_us: f64,
}

/// Everything `--json` writes.
#[derive(Serialize)]
struct Report {
    crate_version: &'static str,
    command_line: Vec<String>,
    machine: MachineInfo,
    adapter: Option<AdapterInfo>,
    assumed_device: Machine,
    measurements: Vec<Measurement>,
    /// Time ≈ intercept + slope · T·B, per backend, method and d.
    fits: Vec<FitRow>,
    regimes: Vec<Measurement>,
    crossover: Vec<CrossoverRow>,
}

/// One size of the crossover study: CPU TP-RI iteration medians both ways.
#[derive(Serialize)]
struct CrossoverRow {
    size: Size,
    formed_s: f64,
    per_step_s: f64,
    /// What `--solver auto` picks at this size.
    auto: Solver,
}

#[derive(Serialize)]
struct MachineInfo {
    cpu: String,
    cores: usize,
    os: String,
}

#[derive(Serialize)]
struct AdapterInfo {
    name: String,
    backend: String,
    device_type: String,
    driver: String,
    driver_info: String,
    timestamps: bool,
    /// How f16 storage converts on the main device (`native` where it has SHADER_F16).
    f16_conversions: F16Conversions,
}

fn machine_info() -> MachineInfo {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    MachineInfo {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
    }
}

/// Runs `tpri bench`.
pub fn run(mut args: BenchArgs) -> Result<()> {
    if args.quick {
        args.steps = vec![16, 64];
        args.hidden = vec![32];
        args.batch = vec![4, 16];
        args.reps = 3;
        args.regime_steps = vec![8, 32];
        args.regime_hidden = vec![16, 64];
    }
    check_args(&args)?;
    let machine = Machine {
        flops: args.peak_gflops * 1e9,
        bandwidth: args.bandwidth_gbs * 1e9,
        dispatch_s: args.dispatch_us * 1e-6,
        step_s: args.step_us * 1e-6,
    };
    let gpu = match args.backend {
        Which::Cpu => None,
        Which::Gpu | Which::All => Some(Arc::new(
            GpuContext::new(&args.adapter.parse::<AdapterChoice>()?)
                .context("opening the GPU (use --backend cpu to time the reference only)")?,
        )),
    };
    let gpu_runs = gpu_runs(gpu.as_ref(), &args)?;
    let cpu = args.backend != Which::Gpu;
    check_memory(&args, &gpu_runs, cpu)?;
    let info = machine_info();
    println!("machine: {} ({} cores, {})", info.cpu, info.cores, info.os);
    let adapter = gpu.as_ref().map(|ctx| AdapterInfo {
        name: ctx.info.name.clone(),
        backend: format!("{:?}", ctx.info.backend),
        device_type: format!("{:?}", ctx.info.device_type),
        driver: ctx.info.driver.clone(),
        driver_info: ctx.info.driver_info.clone(),
        timestamps: ctx
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY),
        f16_conversions: ctx.f16_conversions(),
    });
    if let Some(a) = &adapter {
        println!(
            "adapter: {} ({}, {}), driver {} {}; timestamps: {}; f16 conversions: {:?}",
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info,
            a.timestamps,
            a.f16_conversions
        );
    }

    let sizes: Vec<Size> = iproduct(&args.steps, &args.hidden, &args.batch)
        .map(|(t, d, b)| Size {
            steps: t,
            hidden: d,
            batch: b,
            input: args.input,
            output: args.output,
        })
        .collect();
    let measurements = measure_all(&gpu_runs, cpu, &sizes, args.reps)?;
    print_iterations(&measurements);
    print_phases(&measurements, &machine);
    let fits = fit_rows(&measurements);
    print_fits(&fits);

    let regimes = if args.regimes {
        let sizes: Vec<Size> = iproduct(
            &args.regime_steps,
            &args.regime_hidden,
            &[args.regime_batch],
        )
        .map(|(t, d, b)| Size {
            steps: t,
            hidden: d,
            batch: b,
            input: args.input,
            output: args.output,
        })
        .collect();
        let m = measure_all(&gpu_runs, cpu, &sizes, args.reps)?;
        print_regimes(
            &m,
            &args.regime_steps,
            &args.regime_hidden,
            args.regime_batch,
        );
        if let Some(stem) = &args.plot {
            // "llvmpipe (LLVM 15.0.6, 256 bits)" → "llvmpipe": titles stay on one line.
            let device = adapter.as_ref().and_then(|a| a.name.split(" (").next());
            plot_regimes(stem, &m, &args.regime_hidden, args.regime_batch, device)?;
        }
        m
    } else {
        Vec::new()
    };

    let crossover = if args.crossover {
        crossover(&args)?
    } else {
        Vec::new()
    };

    if let Some(path) = &args.json {
        let report = Report {
            crate_version: env!("CARGO_PKG_VERSION"),
            command_line: std::env::args().collect(),
            machine: info,
            adapter,
            assumed_device: machine,
            measurements,
            fits,
            regimes,
            crossover,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Refuses flags no measurement can run with, naming the flag: a size or count of 0,
/// an empty grid, a device figure that is not positive and finite.
fn check_args(args: &BenchArgs) -> Result<()> {
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
    for (flag, value, zero_ok) in [
        ("--peak-gflops", args.peak_gflops, false),
        ("--bandwidth-gbs", args.bandwidth_gbs, false),
        ("--dispatch-us", args.dispatch_us, true),
        ("--step-us", args.step_us, true),
    ] {
        if !(value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0))) {
            bail!(
                "{flag} must be {} and finite, got {value}",
                if zero_ok { "non-negative" } else { "positive" }
            );
        }
    }
    Ok(())
}

/// Checks every size of every grid against the memory available and the GPU's limits
/// before the first measurement (`limits::Workload`).
fn check_memory(
    args: &BenchArgs,
    gpu_runs: &[(Arc<GpuContext>, Storage)],
    cpu: bool,
) -> Result<()> {
    let mut sizes: Vec<(usize, usize, usize)> =
        iproduct(&args.steps, &args.hidden, &args.batch).collect();
    if args.regimes {
        sizes.extend(iproduct(
            &args.regime_steps,
            &args.regime_hidden,
            &[args.regime_batch],
        ));
    }
    let crossover: Vec<_> = if args.crossover {
        iproduct(
            &args.crossover_steps,
            &[args.crossover_hidden],
            &args.crossover_batch,
        )
        .collect()
    } else {
        Vec::new()
    };
    let size = |(steps, hidden, batch)| Size {
        steps,
        hidden,
        batch,
        input: args.input,
        output: args.output,
    };
    for &s in sizes.iter().chain(&crossover) {
        let w = size(s).workload(Method::Tp);
        if cpu || crossover.contains(&s) {
            w.check_cpu()?;
        }
        for (ctx, storage) in gpu_runs.iter().filter(|_| sizes.contains(&s)) {
            w.check_gpu(&tpri::gpu::gpu_limits(ctx, *storage))?;
        }
    }
    Ok(())
}

/// Times forming P against per-step solves on the CPU over the crossover grid and prints
/// each median beside the cost model's choice.
fn crossover(args: &BenchArgs) -> Result<Vec<CrossoverRow>> {
    let d = args.crossover_hidden;
    println!("\nforming P vs per-step solves (CPU TP-RI iteration, d = {d}; auto picks per-step when {PER_STEP_PENALTY}·(T-1)·B < d)");
    println!(
        "{:>6} {:>4} {:>9} {:>12} {:>12} {:>9} {:>9}",
        "T", "B", "(T-1)·B", "formed ms", "per-step ms", "faster", "auto"
    );
    let mut rows = Vec::new();
    for (t, _, b) in iproduct(&args.crossover_steps, &[d], &args.crossover_batch) {
        let size = Size {
            steps: t,
            hidden: d,
            batch: b,
            input: args.input,
            output: args.output,
        };
        let time = |solver| measure_cpu_solver(size, Method::Tp, args.reps, Some(solver));
        let (formed, per_step) = (time(Solver::Cg)?, time(Solver::PerStep)?);
        let row = CrossoverRow {
            size,
            formed_s: formed.iteration_s,
            per_step_s: per_step.iteration_s,
            auto: auto_solver(d, t, b)?,
        };
        let faster = if row.per_step_s < row.formed_s {
            "per-step"
        } else {
            "formed"
        };
        let auto = if row.auto == Solver::PerStep {
            "per-step"
        } else {
            "formed"
        };
        println!(
            "{t:>6} {b:>4} {:>9} {:>12} {:>12} {faster:>9} {auto:>9}",
            (t - 1) * b,
            ms(row.formed_s),
            ms(row.per_step_s),
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Every (T, d, B) combination, T outermost.
fn iproduct<'a>(
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

/// The GPU configurations to time: each `--storage`, and f16 storage once per
/// `--f16-conversions` (on a second device for integer conversions, when the first has
/// native ones). A configuration the adapter cannot tell apart from one already listed
/// (native requested, integer run) is timed once.
fn gpu_runs(
    gpu: Option<&Arc<GpuContext>>,
    args: &BenchArgs,
) -> Result<Vec<(Arc<GpuContext>, Storage)>> {
    let Some(ctx) = gpu else {
        return Ok(Vec::new());
    };
    let mut runs: Vec<(Arc<GpuContext>, Storage)> = Vec::new();
    for &storage in &args.storage {
        let conversions: &[F16Conversions] = match storage {
            Storage::F32 => &[F16Conversions::Native],
            Storage::F16 => &args.f16_conversions,
        };
        for &conv in conversions {
            let ctx = if conv == ctx.f16_conversions() || storage == Storage::F32 {
                Arc::clone(ctx)
            } else {
                Arc::new(GpuContext::with_f16(&args.adapter.parse()?, conv)?)
            };
            let label = gpu_label(storage, ctx.f16_conversions());
            if !runs
                .iter()
                .any(|(c, s)| gpu_label(*s, c.f16_conversions()) == label)
            {
                runs.push((ctx, storage));
            }
        }
    }
    Ok(runs)
}

fn measure_all(
    gpu_runs: &[(Arc<GpuContext>, Storage)],
    cpu: bool,
    sizes: &[Size],
    reps: usize,
) -> Result<Vec<Measurement>> {
    let mut out = Vec::new();
    for &size in sizes {
        for method in [Method::Tp, Method::Bp] {
            for (ctx, storage) in gpu_runs {
                out.push(measure_gpu(ctx, size, method, reps, *storage)?);
            }
            if cpu {
                out.push(measure_cpu(size, method, reps)?);
            }
        }
    }
    Ok(out)
}

/// What `--solver auto` picks for the CPU's tanh RNN at these sizes (`Plan::new`).
fn auto_solver(hidden: usize, steps: usize, batch: usize) -> Result<Solver> {
    let mut hyper = Hyper {
        method: Method::Tp,
        ..Hyper::default()
    };
    hyper.tp.solver = Solver::Auto;
    let sizes = Sizes {
        hidden,
        steps,
        batch,
    };
    let plan = Plan::new(CellKind::Tanh, &hyper, Device::Cpu, sizes)?;
    Ok(if plan.targets() == Some(TargetSolve::PerStep) {
        Solver::PerStep
    } else {
        Solver::Cg
    })
}
