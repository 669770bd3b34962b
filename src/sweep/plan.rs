//! Preparing a sweep directory: the spec expanded and checked, reconciled with the
//! manifest of an earlier start, then every run's config and the manifest written.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::tensor_file::write_atomic;
use crate::train::RunConfig;

use super::expand::{expand, Run};
use super::manifest::{config_path, run_status, Manifest, RunEntry, MANIFEST};
use super::node::flatten;
use super::spec::Spec;
use super::value::fingerprint;

/// What `prepare` needs besides the spec.
#[derive(Clone, Debug, Default)]
pub struct PrepareOptions {
    /// Continue the sweep DIR already holds.
    pub resume: bool,
    /// Check and report only: write nothing.
    pub dry_run: bool,
    /// `tpri train --backend` of every run, over the spec's.
    pub backend: Option<String>,
    /// `tpri train --storage` of every run, over the spec's.
    pub storage: Option<String>,
}

/// A prepared sweep: the manifest with every run's status read from DIR, and notes for
/// the user.
pub struct Prepared {
    /// The manifest (written unless dry-running).
    pub manifest: Manifest,
    /// What changed since an earlier start, if anything.
    pub notes: Vec<String>,
}

/// Loads and expands the spec at `spec_path`, checks it against a sweep DIR already
/// holds, and (unless dry-running) writes DIR/spec.toml, DIR/configs/*.toml and
/// DIR/manifest.json. Nothing is written when the spec or any run's settings are invalid.
pub fn prepare(spec_path: &Path, dir: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let spec = Spec::load(spec_path)?;
    let runs = expand(&spec).with_context(|| format!("in sweep spec {}", spec_path.display()))?;
    let old = Manifest::load(dir)?;
    if !opts.resume {
        if old.is_some() {
            bail!(
                "{} already holds a sweep: continue it with --resume, gather its results with --collect {0}, or choose another --out",
                dir.display()
            );
        }
        if dir.join("runs").exists() {
            bail!(
                "{} already holds run directories but no {MANIFEST}: choose another --out",
                dir.display()
            );
        }
    }
    let mut notes = Vec::new();
    let previous: HashMap<&str, &RunEntry> = old
        .iter()
        .flat_map(|m| m.runs.iter().map(|r| (r.name.as_str(), r)))
        .collect();
    let (mut rewritten, mut extended) = (0, 0);
    for run in &runs {
        if let Some(p) = previous.get(run.name.as_str()) {
            if p.config_hash != run.config_hash {
                // Another version of tpri may write the same settings differently (a new
                // key at its default): what counts is the settings the stored file gives.
                // More iterations and nothing else extends the run from where it stopped.
                match stored_settings(&config_path(dir, &run.name)) {
                    Some(stored) if stored == run.config => {
                        rewritten += 1;
                        continue;
                    }
                    Some(stored)
                        if stored.iterations < run.config.iterations
                            && RunConfig {
                                iterations: run.config.iterations,
                                ..stored.clone()
                            } == run.config =>
                    {
                        extended += 1;
                        continue;
                    }
                    _ => {}
                }
                bail!(
                    "run {} has other settings than when the sweep in {} started (its config differs from {}): restore the spec, or start a new sweep directory",
                    run.name,
                    dir.display(),
                    config_path(dir, &run.name).display()
                );
            }
        }
    }
    if extended > 0 {
        notes.push(format!("{extended} runs get more iterations than before; finished ones continue from their last checkpoint"));
    }
    if rewritten > 0 {
        notes.push(format!("{rewritten} runs' configs were written by another version of tpri with the same settings; they are rewritten as this one writes them"));
    }
    if let Some(old) = &old {
        let names: std::collections::HashSet<&str> = runs.iter().map(|r| r.name.as_str()).collect();
        let dropped = old
            .runs
            .iter()
            .filter(|r| !names.contains(r.name.as_str()))
            .count();
        let added = runs
            .iter()
            .filter(|r| !previous.contains_key(r.name.as_str()))
            .count();
        if dropped > 0 {
            notes.push(format!("{dropped} runs of the earlier spec are no longer in it; their directories stay, and results leave them out"));
        }
        if added > 0 {
            notes.push(format!("the spec adds {added} runs"));
        }
    }
    let entries: Vec<RunEntry> = runs
        .iter()
        .map(|run| entry(&spec, dir, run, previous.get(run.name.as_str()).copied()))
        .collect();
    let mut seeds: Vec<u64> = Vec::new();
    for run in &runs {
        if !seeds.contains(&run.seed) {
            seeds.push(run.seed);
        }
    }
    let pick = |flag: &Option<String>, spec: &Option<String>, old: Option<&Option<String>>| {
        flag.clone()
            .or_else(|| spec.clone())
            .or_else(|| old.cloned().flatten())
    };
    let mut manifest = Manifest::new(
        fingerprint(spec.text.as_bytes()),
        (
            pick(
                &opts.backend,
                &spec.backend,
                old.as_ref().map(|m| &m.backend),
            ),
            pick(
                &opts.storage,
                &spec.storage,
                old.as_ref().map(|m| &m.storage),
            ),
        ),
        (spec.axes.clone(), seeds),
        (
            spec.search.clone(),
            spec.reach,
            spec.figures.clone(),
            spec.slurm.clone(),
        ),
        entries,
    );
    if let Some(old) = old {
        manifest.submissions = old.submissions;
    }
    if !opts.dry_run {
        write(dir, &spec, &runs, &manifest)?;
    }
    Ok(Prepared { manifest, notes })
}

/// The settings of the config file at `path` (a run's, as an earlier `prepare` wrote it),
/// if it reads as a run configuration.
fn stored_settings(path: &Path) -> Option<RunConfig> {
    let text = std::fs::read_to_string(path).ok()?;
    toml::from_str(&text).ok()
}

/// The manifest entry of `run`, its status read from DIR.
fn entry(spec: &Spec, dir: &Path, run: &Run, previous: Option<&RunEntry>) -> RunEntry {
    let mut overrides = BTreeMap::new();
    for (axis, &i) in spec.axes.iter().zip(&run.cell) {
        overrides.extend(flatten(axis.config_key(), &axis.values[i]));
    }
    overrides.insert("seed".into(), toml::Value::Integer(run.seed as i64));
    let iterations = run.config.iterations;
    let (status, error) = run_status(dir, &run.name, iterations);
    RunEntry {
        name: run.name.clone(),
        cell: run.cell.clone(),
        seed: run.seed,
        overrides,
        iterations,
        config_hash: run.config_hash.clone(),
        status,
        error,
        attempts: previous.map_or(0, |p| p.attempts),
    }
}

/// Writes the spec, each run's config (where it differs) and the manifest.
fn write(dir: &Path, spec: &Spec, runs: &[Run], manifest: &Manifest) -> Result<()> {
    for sub in ["configs", "runs", "logs", "status"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    write_atomic(&dir.join("spec.toml"), spec.text.as_bytes())?;
    for run in runs {
        let path = config_path(dir, &run.name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(run.config_toml.as_str()) {
            write_atomic(&path, run.config_toml.as_bytes())?;
        }
    }
    manifest.save(dir)
}
