//! `tpri sweep`: a grid of `tpri train` runs from a spec, run locally or on Slurm, and
//! gathered into results.csv, evaluations.csv and .md, search.csv and figures
//! (docs/SWEEPS.md).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use tpri::gpu::Storage;
use tpri::sweep::{
    collect, run_sweep, Engine, LocalOptions, PrepareOptions, Report, SlurmOptions, SlurmSpec,
    SweepOptions,
};

use super::BackendChoice;

/// Where the runs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// `tpri train` processes on this machine, --jobs at a time.
    #[default]
    Local,
    /// One Slurm job array (sbatch --array), one task per unfinished run; gather the
    /// results later with --collect DIR.
    Slurm,
}

/// Flags of `tpri sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The sweep spec (TOML: base, [set], [axes], seeds, [search], [figures], [slurm];
    /// see docs/SWEEPS.md and docs/sweeps/).
    #[arg(required_unless_present = "collect")]
    spec: Option<PathBuf>,
    /// The sweep directory: manifest.json, configs/, runs/, logs/, results.csv, figures/.
    #[arg(long, required_unless_present = "collect")]
    out: Option<PathBuf>,
    /// Gather the results of the sweep in DIR (results.csv, evaluations.csv and .md,
    /// search.csv, figures) from
    /// its run directories, as they stand; runs nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "out", "resume", "dry_run", "engine"])]
    collect: Option<PathBuf>,
    /// Runs at once (local engine). With the CPU backend each gets its share of the
    /// cores (taskset); with --adapters, the adapters in turn.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Continue the sweep in --out: skip finished runs, resume interrupted ones, start
    /// the rest (a spec that only adds runs is accepted).
    #[arg(long)]
    resume: bool,
    /// Also run the runs that failed (resumed from their last checkpoint).
    #[arg(long)]
    retry_failed: bool,
    /// Where the runs run.
    #[arg(long, value_enum, default_value = "local")]
    engine: EngineChoice,
    /// Check the spec and every run's settings and print the plan; write and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// `tpri train --backend` of every run [default: the spec's `backend`, else auto].
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
    /// `tpri train --storage` of every run [default: the spec's `storage`, else f32].
    #[arg(long, value_enum)]
    storage: Option<Storage>,
    /// GPU adapters (indices or names from `tpri devices`) handed to the local workers
    /// in turn: `--adapters 0,1 --jobs 2` runs one run on each.
    #[arg(long, value_delimiter = ',')]
    adapters: Vec<String>,
    /// The tpri binary the runs use [default: this one]; on a cluster, a path the
    /// compute nodes see.
    #[arg(long)]
    tpri: Option<PathBuf>,
    /// Slurm: --cpus-per-task of each array task [default: the spec's [slurm]].
    #[arg(long)]
    cpus_per_task: Option<u32>,
    /// Slurm: --mem of each array task (4G).
    #[arg(long)]
    mem: Option<String>,
    /// Slurm: --time of each array task (02:00:00).
    #[arg(long)]
    time: Option<String>,
    /// Slurm: --partition.
    #[arg(long)]
    partition: Option<String>,
    /// Slurm: GPUs per array task (--gres=gpu:N).
    #[arg(long)]
    gpus: Option<u32>,
    /// Slurm: array tasks running at once (--array=…%N).
    #[arg(long)]
    max_parallel: Option<u32>,
    /// Slurm: runs per sbatch at most (the cluster's MaxArraySize) [default: 1000].
    #[arg(long)]
    max_array_size: Option<usize>,
    /// Slurm: an option passed to sbatch as given (repeatable): --sbatch-arg=--account=abc.
    #[arg(long = "sbatch-arg", allow_hyphen_values = true, value_name = "ARG")]
    sbatch_args: Vec<String>,
    /// Collect without drawing figures.
    #[arg(long)]
    no_figures: bool,
}

/// How a value enum is written on the command line.
fn name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// Runs `tpri sweep`. The process exits with the number of failed runs (at most 100)
/// when some failed.
pub fn run(args: SweepArgs) -> Result<()> {
    if let Some(dir) = &args.collect {
        let report = collect(dir, !args.no_figures)?;
        print_report(&report, dir);
        return exit_for(&report);
    }
    let (Some(spec), Some(out)) = (&args.spec, &args.out) else {
        bail!("give a spec and --out DIR, or --collect DIR");
    };
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let tpri = match &args.tpri {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find the tpri binary")?,
    };
    let opts = SweepOptions {
        out: out.clone(),
        prepare: PrepareOptions {
            resume: args.resume,
            dry_run: args.dry_run,
            backend: args.backend.map(name),
            storage: args.storage.map(name),
        },
        retry_failed: args.retry_failed,
        engine: match args.engine {
            EngineChoice::Local => Engine::Local,
            EngineChoice::Slurm => Engine::Slurm,
        },
        local: LocalOptions {
            tpri: tpri.clone(),
            jobs: args.jobs,
            adapters: args.adapters.clone(),
        },
        slurm: SlurmOptions {
            tpri,
            resources: SlurmSpec {
                cpus_per_task: args.cpus_per_task,
                mem: args.mem.clone(),
                time: args.time.clone(),
                partition: args.partition.clone(),
                gpus: args.gpus,
                max_parallel: args.max_parallel,
                max_array_size: args.max_array_size,
                sbatch_args: args.sbatch_args.clone(),
            },
            dry_run: args.dry_run,
        },
        figures: !args.no_figures,
    };
    let report = run_sweep(spec, &opts)?;
    if args.dry_run {
        println!(
            "{} runs: {} finished, {} failed, {}, {} pending; would {} {}",
            report.total,
            report.finished,
            report.failed,
            incomplete(&report),
            report.pending,
            if args.engine == EngineChoice::Slurm {
                "submit"
            } else {
                "run"
            },
            report.started
        );
        for name in report.planned.iter().take(10) {
            println!("  {name}");
        }
        if report.planned.len() > 10 {
            println!("  … and {} more", report.planned.len() - 10);
        }
        for note in &report.notes {
            println!("note: {note}");
        }
        return Ok(());
    }
    if args.engine == EngineChoice::Slurm {
        for note in &report.notes {
            println!("note: {note}");
        }
        match report.jobs.len() {
            0 => println!("nothing to submit: {} of {} runs finished, {} failed (--retry-failed runs them again)", report.finished, report.total, report.failed),
            _ => {
                for id in &report.jobs {
                    println!("submitted job {id}");
                }
                println!(
                    "{} runs submitted; when the array is done: tpri sweep --collect {}",
                    report.started,
                    out.display()
                );
            }
        }
        return Ok(());
    }
    print_report(&report, out);
    exit_for(&report)
}

fn print_report(r: &Report, dir: &std::path::Path) {
    for note in &r.notes {
        println!("note: {note}");
    }
    println!(
        "{}: {} runs: {} finished, {} failed, {}, {} pending; wrote {} file{} (results.csv, \
         evaluations.csv and .md{})",
        dir.display(),
        r.total,
        r.finished,
        r.failed,
        incomplete(r),
        r.pending,
        r.files.len(),
        if r.files.len() == 1 { "" } else { "s" },
        if r.files.iter().any(|f| f.ends_with("search.csv")) {
            ", search.csv"
        } else {
            ""
        }
    );
    if !r.progress.is_empty() {
        println!("unfinished:");
    }
    for line in r.progress.iter().chain(&r.reach) {
        println!("{line}");
    }
}

/// "2 incomplete", or "2 incomplete (1 running now)" when processes here run some.
fn incomplete(r: &Report) -> String {
    match r.running {
        0 => format!("{} incomplete", r.incomplete),
        n => format!("{} incomplete ({n} running now)", r.incomplete),
    }
}

/// Exits with the number of failed runs (at most 100) when some failed.
fn exit_for(r: &Report) -> Result<()> {
    if r.failed > 0 {
        eprintln!(
            "error: {} of {} runs failed (see results.csv and logs/)",
            r.failed, r.total
        );
        std::process::exit(r.failed.min(100) as i32);
    }
    Ok(())
}
