//! `tpri bench`: per-iteration medians of TP-RI and BP on the GPU backend and the CPU
//! reference over grids of T, d, B, the cost model beside them, a linear fit in T·B, and
//! (`--regimes`) the map of the TP/BP time ratio over T × d.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use serde::Serialize;

use tpri::bench::{
    gpu_label, measure_cpu, measure_cpu_solver, measure_gpu_side_by_side, Case, Machine,
    Measurement, Size,
};
use tpri::config::{Hyper, Method, Solver};
use tpri::gpu::step_probe::{self, ProbeTime};
use tpri::gpu::{AdapterChoice, F16Conversions, GpuContext, GpuOptions, Storage};
use tpri::model::CellKind;
use tpri::plan::{Device, Plan, Sizes, TargetSolve, PER_STEP_PENALTY};
use tpri::tensor_file::write_atomic;

use super::bench_args::{assumed_machine, cases, check_args, check_memory, iproduct};
pub use super::bench_args::{BenchArgs, Which};
use super::bench_fits::{fit_rows, print_fits, FitRow};
use super::bench_report::{
    cell_name, method_name, ms, plot_regimes, print_iterations, print_model, print_phases,
    print_probes, print_regimes,
};

/// Every combination of the lengths, hidden sizes and batch sizes, with `--input` and
/// `--output`.
fn sizes_of(args: &BenchArgs, steps: &[usize], hidden: &[usize], batch: &[usize]) -> Vec<Size> {
    iproduct(steps, hidden, batch)
        .map(|(t, d, b)| Size {
            steps: t,
            hidden: d,
            batch: b,
            input: args.input,
            output: args.output,
        })
        .collect()
}

/// `--probes`: steps of each probe's loop, and its workgroups (the paper's batch).
const PROBE_STEPS: usize = 4096;
const PROBE_GROUPS: usize = 16;

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
    /// `--probes`: each probe's median time a step.
    probes: Vec<ProbeTime>,
    /// The error of every case that failed, naming it (the command then fails too).
    failed: Vec<String>,
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
    let machine = assumed_machine(&args);
    if args.model_only {
        print_model(
            &sizes_of(&args, &args.steps, &args.hidden, &args.batch),
            &args.cell,
            &machine,
        );
        return Ok(());
    }
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

    let sizes = sizes_of(&args, &args.steps, &args.hidden, &args.batch);
    let all_cases: Vec<Case> = args.cell.iter().flat_map(|&c| cases(&args, c)).collect();
    let (measurements, mut failed) = measure_all(&gpu_runs, cpu, &sizes, &all_cases, args.reps);
    print_iterations(&measurements);
    print_phases(&measurements, &machine);
    let fits = fit_rows(&measurements);
    print_fits(&fits);

    let regimes = if args.regimes {
        let sizes = sizes_of(
            &args,
            &args.regime_steps,
            &args.regime_hidden,
            &[args.regime_batch],
        );
        let tanh =
            [Method::Tp, Method::Bp].map(|m| Case::of(CellKind::Tanh, m).with_solve(args.solve()));
        let (m, regimes_failed) = measure_all(&gpu_runs, cpu, &sizes, &tanh, args.reps);
        failed.extend(regimes_failed);
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
        let (rows, crossover_failed) = crossover(&args);
        failed.extend(crossover_failed);
        rows
    } else {
        Vec::new()
    };

    let probes = match (&gpu, args.probes) {
        (Some(ctx), true) => {
            let probes = step_probe::probe(ctx, PROBE_STEPS, PROBE_GROUPS, args.reps)?;
            print_probes(&probes, PROBE_STEPS, PROBE_GROUPS);
            probes
        }
        _ => Vec::new(),
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
            probes,
            failed: failed.clone(),
        };
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !failed.is_empty() {
        bail!(
            "{} case(s) failed, the rest reported above:\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

/// Times forming P against per-step solves on the CPU over the crossover grid and prints
/// each median beside the cost model's choice; with the error of every size that failed,
/// naming it (the grid goes on past it, as `measure_all`'s).
fn crossover(args: &BenchArgs) -> (Vec<CrossoverRow>, Vec<String>) {
    let d = args.crossover_hidden;
    println!("\nforming P vs per-step solves (CPU TP-RI iteration, d = {d}; auto picks per-step when {PER_STEP_PENALTY}·(T-1)·B < d)");
    println!(
        "{:>6} {:>4} {:>9} {:>12} {:>12} {:>9} {:>9}",
        "T", "B", "(T-1)·B", "formed ms", "per-step ms", "faster", "auto"
    );
    let (mut rows, mut failed) = (Vec::new(), Vec::new());
    for (t, _, b) in iproduct(&args.crossover_steps, &[d], &args.crossover_batch) {
        let size = Size {
            steps: t,
            hidden: d,
            batch: b,
            input: args.input,
            output: args.output,
        };
        let time = |solver| measure_cpu_solver(size, args.reps, solver, args.solve());
        let timed = (|| -> Result<CrossoverRow> {
            Ok(CrossoverRow {
                size,
                formed_s: time(Solver::Cg)?.iteration_s,
                per_step_s: time(Solver::PerStep)?.iteration_s,
                auto: auto_solver(d, t, b)?,
            })
        })()
        .with_context(|| format!("timing the crossover at T = {t}, d = {d}, B = {b} on the CPU"));
        let row = match timed {
            Ok(row) => row,
            Err(e) => {
                failed.push(failure(e));
                continue;
            }
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
    (rows, failed)
}

/// The GPU configurations to time: each `--storage`, and f16 storage once per
/// `--f16-conversions` (on a second device for integer conversions, when the first has
/// native ones), each with every combination of the other settings (`option_grid`); they
/// are timed side by side, one repetition of each in turn. A configuration the adapter
/// cannot tell apart from one already listed (native requested, integer run) is timed once.
fn gpu_runs(
    gpu: Option<&Arc<GpuContext>>,
    args: &BenchArgs,
) -> Result<Vec<(Arc<GpuContext>, GpuOptions)>> {
    let Some(ctx) = gpu else {
        return Ok(Vec::new());
    };
    let mut runs: Vec<(Arc<GpuContext>, GpuOptions)> = Vec::new();
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
            for options in option_grid(storage, args) {
                let label = gpu_label(options, ctx.f16_conversions());
                if !runs
                    .iter()
                    .any(|(c, o)| gpu_label(*o, c.f16_conversions()) == label)
                {
                    runs.push((Arc::clone(&ctx), options));
                }
            }
        }
    }
    Ok(runs)
}

/// Every combination of the GPU settings `args` lists, with `storage`, in the order of the
/// flags: steps per dispatch outermost, TP-RI's backward pass innermost.
fn option_grid(storage: Storage, args: &BenchArgs) -> Vec<GpuOptions> {
    let mut grid = Vec::new();
    for &steps_per_dispatch in &args.steps_per_dispatch {
        for &sequences_per_workgroup in &args.sequences_per_workgroup {
            for &lanes_per_unit in &args.lanes_per_unit {
                for &steps_per_block in &args.steps_per_block {
                    grid.extend(args.backward.iter().map(|&backward| GpuOptions {
                        storage,
                        steps_per_dispatch,
                        sequences_per_workgroup,
                        lanes_per_unit,
                        steps_per_block,
                        backward,
                    }));
                }
            }
        }
    }
    grid
}

/// Each case at each size, on every GPU run side by side and on the CPU; with the error of
/// every case that failed (a solve that does not converge, a run that diverges), naming
/// it: the grid goes on past it, so that one failed case does not lose the others.
fn measure_all(
    gpu_runs: &[(Arc<GpuContext>, GpuOptions)],
    cpu: bool,
    sizes: &[Size],
    cases: &[Case],
    reps: usize,
) -> (Vec<Measurement>, Vec<String>) {
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    for &size in sizes {
        for &case in cases {
            let timing = |on: &str| {
                let reg = case.tp_solve().map_or(String::new(), |s| {
                    let tol = s
                        .cg_tol
                        .map_or(String::new(), |t| format!(", CG tolerance {t}"));
                    format!(", r = {}{tol}", s.reg)
                });
                format!(
                    "timing {} {} at T = {}, d = {}, B = {}{reg} on {on}",
                    cell_name(case.cell),
                    method_name(
                        case.cell,
                        case.method,
                        (case.inversion, case.precondition())
                    ),
                    size.steps,
                    size.hidden,
                    size.batch
                )
            };
            if !gpu_runs.is_empty() {
                match measure_gpu_side_by_side(gpu_runs, size, case, reps) {
                    Ok(m) => out.extend(m),
                    Err(e) => failed.push(failure(e.context(timing("the GPU")))),
                }
            }
            if cpu {
                match measure_cpu(size, case, reps) {
                    Ok(m) => out.push(m),
                    Err(e) => failed.push(failure(e.context(timing("the CPU")))),
                }
            }
        }
    }
    (out, failed)
}

/// A failed case's error as the report keeps it: in the command line's words (flags, not
/// API names), as the error the command ends with.
fn failure(e: anyhow::Error) -> String {
    super::errors::rewrite(&format!("{e:#}"), super::errors::BENCH)
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
