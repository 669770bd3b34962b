//! `tpri sweep`: grids of training runs, run locally or as Slurm job arrays, and
//! gathered into a table and figures (docs/SWEEPS.md).
//!
//! A spec (TOML) names a base configuration (a preset, a config file, or both), fixed
//! overrides (`[set]`), axes (`[axes]`: any dotted key of the run configuration, with a
//! list of values or a log or linear range), seeds, and optionally a per-cell search
//! (`[search]`). [`run_sweep`] expands it into runs — each an ordinary run directory of
//! `tpri train` under DIR/runs — validates every run's configuration before writing
//! anything, keeps DIR/manifest.json, skips finished runs, resumes interrupted ones, and
//! runs or submits the rest; [`collect()`] writes DIR/results.csv, DIR/search.csv and
//! DIR/figures from whatever the run directories hold.
//!
//! The runs are `tpri train` processes: the sweep reads their results from the files
//! they write (summary.json, log.csv), never from their checkpoints.

mod collect;
mod curves;
mod evaluations;
mod expand;
mod figures;
mod local;
mod manifest;
mod metric;
mod node;
mod plan;
mod slurm;
mod spec;
mod summary;
mod value;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::figures::read_log;
use crate::run_dir::RunDir;
use evaluations::Evaluation;

pub use collect::{curve_mean, Outcome};
pub use expand::{expand, Run};
pub use local::LocalOptions;
pub use manifest::{Manifest, RunEntry, Status};
pub use metric::Metric;
pub use plan::{prepare, PrepareOptions, Prepared};
pub use slurm::SlurmOptions;
pub use spec::{Axis, Band, FigureSpec, Search, SlurmSpec, Spec};

/// Where the runs run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// `tpri train` processes on this machine.
    #[default]
    Local,
    /// A Slurm job array, one task per run.
    Slurm,
}

/// Everything `run_sweep` needs besides the spec.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The sweep directory.
    pub out: PathBuf,
    /// How the directory is prepared (resume, dry run, backend).
    pub prepare: PrepareOptions,
    /// Run failed runs again (resuming them from their last checkpoint).
    pub retry_failed: bool,
    /// Local or Slurm.
    pub engine: Engine,
    /// How the local engine runs.
    pub local: LocalOptions,
    /// How the Slurm engine submits.
    pub slurm: SlurmOptions,
    /// Draw the figures when collecting.
    pub figures: bool,
}

/// What a sweep or a collection ended with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Runs in the sweep.
    pub total: usize,
    /// Runs finished.
    pub finished: usize,
    /// Runs whose last attempt failed.
    pub failed: usize,
    /// Runs started and not finished (running, or interrupted).
    pub incomplete: usize,
    /// Of those, the runs a process on this host is running now (`RunDir::live_owner`).
    pub running: usize,
    /// Runs not started.
    pub pending: usize,
    /// Runs this call started (local) or submitted (Slurm), or would (dry run).
    pub started: usize,
    /// Their names.
    pub planned: Vec<String>,
    /// Slurm job ids this call submitted.
    pub jobs: Vec<String>,
    /// Files written by the collection.
    pub files: Vec<PathBuf>,
    /// Things the user should know.
    pub notes: Vec<String>,
    /// With the spec's `reach`, the lines of `summary::reach`.
    pub reach: Vec<String>,
    /// The lines of `summary::progress`: where each unfinished run stands.
    pub progress: Vec<String>,
}

/// Prepares the sweep of `spec` in `opts.out`, then runs (local) or submits (Slurm) the
/// runs that are not finished — failed ones only with `retry_failed` — and, locally,
/// collects the results.
pub fn run_sweep(spec: &Path, opts: &SweepOptions) -> Result<Report> {
    let dir = &opts.out;
    // The local engine holds DIR/sweep.lock from before the manifest is rewritten (a new
    // DIR is created by `prepare`, only once the spec is known to be valid).
    let local_run = opts.engine == Engine::Local && !opts.prepare.dry_run;
    let mut lock = if local_run && dir.exists() {
        Some(local::SweepLock::take(dir)?)
    } else {
        None
    };
    let Prepared {
        mut manifest,
        notes,
    } = prepare(spec, dir, &opts.prepare)?;
    let todo: Vec<usize> = manifest
        .runs
        .iter()
        .enumerate()
        .filter(|(_, r)| match r.status {
            Status::Pending | Status::Incomplete => true,
            Status::Failed => opts.retry_failed,
            Status::Finished => false,
        })
        .map(|(i, _)| i)
        .collect();
    let mut report = counts(&manifest, &running_here(dir, &manifest));
    report.notes = notes;
    report.started = todo.len();
    report.planned = todo
        .iter()
        .map(|&i| manifest.runs[i].name.clone())
        .collect();
    if opts.prepare.dry_run {
        if opts.engine == Engine::Slurm && !todo.is_empty() {
            slurm::submit(dir, &mut manifest, &todo, &opts.slurm)?;
        }
        return Ok(report);
    }
    if !todo.is_empty() {
        slurm::ensure_idle(&manifest)?;
    }
    match opts.engine {
        Engine::Local => {
            if lock.is_none() {
                lock = Some(local::SweepLock::take(dir)?);
            }
            local::run_local(dir, &mut manifest, &todo, &opts.local)?;
            let mut collected = gather(dir, opts.figures, true)?;
            collected.started = todo.len();
            collected.planned = report.planned;
            collected.notes.splice(0..0, report.notes);
            drop(lock);
            Ok(collected)
        }
        Engine::Slurm => {
            report.jobs = if todo.is_empty() {
                Vec::new()
            } else {
                slurm::submit(dir, &mut manifest, &todo, &opts.slurm)?
            };
            manifest.save(dir)?;
            Ok(report)
        }
    }
}

/// Reads every run's status and results from DIR, updates the manifest, and writes
/// DIR/results.csv, DIR/search.csv (with a search) and (with `figures`) DIR/figures.
/// While a local `tpri sweep` runs the sweep (it holds DIR/sweep.lock), its manifest is
/// left to it: the files are written from a snapshot, with a note.
pub fn collect(dir: &Path, figures: bool) -> Result<Report> {
    // Without a manifest `gather` refuses DIR; no lock file is created in it first.
    let lock = dir
        .join(manifest::MANIFEST)
        .exists()
        .then(|| local::SweepLock::take(dir));
    let mut report = gather(dir, figures, !matches!(lock, Some(Err(_))))?;
    if let Some(Err(held)) = lock {
        report.notes.push(format!(
            "manifest.json left as it is ({held:#}); results.csv shows where the runs stand now"
        ));
    }
    Ok(report)
}

/// `collect`, saving the refreshed manifest only when `own` (the caller holds the lock,
/// or no local sweep does).
fn gather(dir: &Path, figures: bool, own: bool) -> Result<Report> {
    let mut manifest = Manifest::load(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no sweep ({} is missing)",
            dir.display(),
            manifest::MANIFEST
        )
    })?;
    manifest.refresh(dir);
    if own {
        manifest.save(dir)?;
    }
    // One log at a time: a large sweep's logs need not all be in memory at once.
    let (outcomes, evals): (Vec<Outcome>, Vec<Vec<Evaluation>>) = manifest
        .runs
        .iter()
        .map(|r| {
            let log = read_log(&manifest::run_dir(dir, &r.name)).ok();
            (
                collect::outcome(dir, r, log.as_ref(), manifest.reach),
                log.as_ref().map(evaluations::of_log).unwrap_or_default(),
            )
        })
        .unzip();
    collect::write_results(dir, &manifest, &outcomes)?;
    let here = running_here(dir, &manifest);
    let mut report = counts(&manifest, &here);
    report.files.push(dir.join("results.csv"));
    report
        .files
        .extend(evaluations::write(dir, &manifest, &evals)?);
    report.reach = summary::reach(&manifest, &outcomes);
    report.progress = summary::progress(&manifest, &outcomes, &here);
    let mut choices = None;
    if let Some(search) = &manifest.search {
        let axis = manifest
            .axes
            .iter()
            .position(|a| a.key == search.axis)
            .ok_or_else(|| anyhow::anyhow!("the searched axis {} is not an axis", search.axis))?;
        let stats = collect::cell_stats(&manifest, &outcomes, search.criterion);
        let c = collect::search(&stats, &manifest, axis, search.criterion.higher_is_better());
        collect::write_search(dir, &manifest, axis, search.criterion, &c)?;
        report.files.push(dir.join("search.csv"));
        choices = Some(c);
    }
    if figures {
        let (files, notes) = figures::draw(dir, &manifest, &outcomes, choices.as_deref())?;
        report.files.extend(files);
        report.notes.extend(notes);
    }
    Ok(report)
}

/// The runs' counts by status; `running` is `running_here`'s.
fn counts(m: &Manifest, running: &[bool]) -> Report {
    Report {
        total: m.runs.len(),
        finished: m.count(Status::Finished),
        failed: m.count(Status::Failed),
        incomplete: m.count(Status::Incomplete),
        running: running.iter().filter(|&&r| r).count(),
        pending: m.count(Status::Pending),
        ..Report::default()
    }
}

/// For each run, whether it is incomplete and a process on this host runs it now.
fn running_here(dir: &Path, m: &Manifest) -> Vec<bool> {
    m.runs
        .iter()
        .map(|r| {
            r.status == Status::Incomplete
                && RunDir::live_owner(&manifest::run_dir(dir, &r.name)).is_some()
        })
        .collect()
}
