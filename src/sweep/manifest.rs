//! DIR/manifest.json: the sweep's axes and runs with their status, and where each run
//! keeps its files. The status of a run is always read back from those files, so the
//! local engine, Slurm array tasks and `--collect` agree on it.
//!
//! ```text
//! DIR/spec.toml            the spec, as given
//! DIR/manifest.json        spec hash, axes, runs (overrides, seed, status), submissions
//! DIR/configs/NAME.toml    each run's effective configuration (tpri train --config)
//! DIR/runs/NAME/           each run's directory (tpri train --run-dir)
//! DIR/logs/NAME.log        tpri train's output, every attempt after a "=== attempt" line
//! DIR/status/NAME.exit     the exit status of the last attempt that ended: 0, 1, …
//! DIR/slurm/               job script, task lists and Slurm's output (--engine slurm)
//! DIR/sweep.lock           held by the local engine while it runs (PID HOST)
//! DIR/results.csv, DIR/evaluations.csv, DIR/evaluations.md, DIR/search.csv, DIR/figures/
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::tensor_file::write_atomic;

use super::spec::{Axis, FigureSpec, Search, SlurmSpec};

/// The manifest's file name in DIR.
pub const MANIFEST: &str = "manifest.json";
/// The manifest layout's version.
const FORMAT: u32 = 1;
/// Marks the start of an attempt in a run's log.
pub const ATTEMPT_MARK: &str = "=== attempt";

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Not started: no run directory yet.
    Pending,
    /// Started, not finished, and no failure recorded: running now, or interrupted
    /// (resumed with `tpri train --resume`).
    Incomplete,
    /// Its last attempt exited with an error (the first line is kept).
    Failed,
    /// summary.json reports every iteration.
    Finished,
}

impl Status {
    /// The name in results.csv and messages.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
            Status::Finished => "finished",
        }
    }
}

/// One run in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// Directory name under DIR/runs.
    pub name: String,
    /// Index of its value on each axis.
    pub cell: Vec<usize>,
    /// Its seed.
    pub seed: u64,
    /// The axis values it takes (dotted key → value), for people.
    pub overrides: BTreeMap<String, toml::Value>,
    /// Iterations it runs in all.
    pub iterations: u64,
    /// `fingerprint` of its configs/NAME.toml.
    pub config_hash: String,
    /// Where it stands (as of the last time the sweep looked).
    pub status: Status,
    /// The first line of the error of a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many times the sweep started it (locally, or in a Slurm submission).
    pub attempts: u32,
}

/// One `sbatch` of an array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Slurm's job id.
    pub job_id: String,
    /// The task list, relative to DIR (line i + 1 is array task i).
    pub tasks: String,
    /// How many runs it holds.
    pub runs: usize,
    /// Seconds since the Unix epoch.
    pub submitted: u64,
}

/// DIR/manifest.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub format: u32,
    /// `fingerprint` of the spec's text.
    pub spec_hash: String,
    /// tpri train --backend of every run, if the spec or flags name one.
    pub backend: Option<String>,
    /// tpri train --storage of every run, if named.
    pub storage: Option<String>,
    /// The axes.
    pub axes: Vec<Axis>,
    /// The seeds of every cell.
    pub seeds: Vec<u64>,
    /// The per-cell search.
    pub search: Option<Search>,
    /// The spec's `reach`: the held-out accuracy whose first evaluation results.csv
    /// reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<f64>,
    /// Figure settings.
    pub figures: FigureSpec,
    /// Slurm resources of the spec.
    pub slurm: SlurmSpec,
    /// Every run, in grid order.
    pub runs: Vec<RunEntry>,
    /// Slurm submissions, oldest first.
    #[serde(default)]
    pub submissions: Vec<Submission>,
}

impl Manifest {
    /// A manifest for `runs` with nothing submitted.
    pub fn new(
        spec_hash: String,
        (backend, storage): (Option<String>, Option<String>),
        (axes, seeds): (Vec<Axis>, Vec<u64>),
        (search, reach, figures, slurm): (Option<Search>, Option<f64>, FigureSpec, SlurmSpec),
        runs: Vec<RunEntry>,
    ) -> Self {
        Self {
            format: FORMAT,
            spec_hash,
            backend,
            storage,
            axes,
            seeds,
            search,
            reach,
            figures,
            slurm,
            runs,
            submissions: Vec::new(),
        }
    }

    /// Reads DIR/manifest.json, or `None` when DIR holds none.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(MANIFEST);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let m: Self = serde_json::from_str(&text)
            .with_context(|| format!("malformed sweep manifest {}", path.display()))?;
        anyhow::ensure!(
            m.format == FORMAT,
            "{} has layout {}, this tpri reads {FORMAT}",
            path.display(),
            m.format
        );
        Ok(Some(m))
    }

    /// Writes DIR/manifest.json (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_atomic(
            &dir.join(MANIFEST),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// Reads every run's status back from its files.
    pub fn refresh(&mut self, dir: &Path) {
        for run in &mut self.runs {
            let (status, error) = run_status(dir, &run.name, run.iterations);
            run.status = status;
            run.error = error;
        }
    }

    /// How many runs have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.runs.iter().filter(|r| r.status == status).count()
    }
}

/// DIR/runs/NAME.
pub fn run_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join("runs").join(name)
}

/// DIR/configs/NAME.toml.
pub fn config_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("configs").join(format!("{name}.toml"))
}

/// DIR/logs/NAME.log.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

/// DIR/status/NAME.exit.
pub fn exit_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("status").join(format!("{name}.exit"))
}

/// Whether DIR/runs/NAME/summary.json reports `iterations` iterations.
pub fn finished(dir: &Path, name: &str, iterations: u64) -> bool {
    let path = run_dir(dir, name).join("summary.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(summary) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    summary["iterations"].as_u64() == Some(iterations)
        && summary["last"]["iteration"].as_u64() == Some(iterations)
}

/// A run's status from its files, with the error of a failed one.
pub fn run_status(dir: &Path, name: &str, iterations: u64) -> (Status, Option<String>) {
    if finished(dir, name, iterations) {
        return (Status::Finished, None);
    }
    let exit = std::fs::read_to_string(exit_path(dir, name)).unwrap_or_default();
    let exit = exit.trim();
    if !exit.is_empty() && exit != "0" {
        return (Status::Failed, Some(first_error(dir, name, exit)));
    }
    // An exit status of 0 with no complete summary is stale: the run directory changed
    // since (removed, or cut back); what it holds now decides.
    if run_dir(dir, name).join("config.toml").exists() {
        (Status::Incomplete, None)
    } else {
        (Status::Pending, None)
    }
}

/// The first `error:` line of the last attempt in the run's log; else what the exit
/// status says.
fn first_error(dir: &Path, name: &str, exit: &str) -> String {
    let text = std::fs::read_to_string(log_path(dir, name)).unwrap_or_default();
    let last = text
        .rfind(ATTEMPT_MARK)
        .map_or(text.as_str(), |i| &text[i..]);
    if let Some(line) = last
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
    {
        return line.to_owned();
    }
    match exit.parse::<i32>() {
        Ok(code) if code > 128 => format!("tpri train was killed by signal {}", code - 128),
        Ok(code) => format!("tpri train exited with status {code}"),
        Err(_) => format!("tpri train ended: {exit}"),
    }
}

#[cfg(test)]
mod tests {
    /// Manifests, summaries and checkpoint metadata are JSON: their floats (axis values,
    /// learning rates) must read back to the same bits, or every `--collect` rewrites a
    /// kept manifest an ulp away (serde_json parses exactly only with `float_roundtrip`).
    #[test]
    fn json_floats_read_back_to_the_same_bits() {
        let mut bits: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![1e-30, 9.999999999999999e-31, 0.1, 1e-4, 3e-3, 2.5e8];
        for _ in 0..10_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            values.push(f64::from_bits(bits));
        }
        for x in values.into_iter().filter(|x| x.is_finite()) {
            let text = serde_json::to_string(&serde_json::json!({ "lr": x })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                back["lr"].as_f64().map(f64::to_bits),
                Some(x.to_bits()),
                "{text}"
            );
        }
    }
}
