//! A run directory: the effective config, the logs, checkpoints and the summary, owned
//! by one process at a time (docs/ALGORITHM.md §10).
//!
//! ```text
//! RUN_DIR/run.lock                      the owner: pid, host, start (while a run is live)
//! RUN_DIR/config.toml                   the effective configuration
//! RUN_DIR/log.csv                       one row per log point (see LOG_HEADER)
//! RUN_DIR/step_norms.csv                iteration, then ‖v_t − h_t‖ (TP) or ‖∂ℓ/∂h_t‖ (BP) for t = 1 … T
//! RUN_DIR/alignment.csv                 with `alignment`: the gradient against BPTT's (see alignment_header)
//! RUN_DIR/checkpoint.safetensors        parameters and optimizer state, metadata and checksum in its header
//! RUN_DIR/checkpoint.prev.safetensors   the checkpoint before it
//! RUN_DIR/checkpoint.json               the newest checkpoint's metadata, for people
//! RUN_DIR/summary.json                  written at the end
//! ```
//! Nothing is written before every check has passed and the lock is held (`create`,
//! `open`, then `resume`). Every file but the logs is replaced atomically; the logs are
//! cut back to the checkpoint when a run resumes, so they never hold rows from a lost
//! future. A run has *started* once it has a checkpoint: a directory whose run never got
//! that far may be started again from scratch.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::tensor_file::write_atomic;
use crate::train::{compared, Record, RunConfig, RunSink, Summary, TrainState};

mod checkpoint;
mod lock;

pub use checkpoint::{
    find as find_checkpoint, load_checkpoint, CheckpointMeta, Found, Loaded, Problem, CHECKPOINT,
    DAMAGED, PREVIOUS, SIDECAR,
};
pub use lock::{Owner, RunLock, LOCK_FILE};

/// Columns of `log.csv` (docs/ALGORITHM.md §10).
pub const LOG_HEADER: &str = "iteration,elapsed_s,train_loss,eval_loss,eval_accuracy,\
    cg_iterations,cg_residual,grad_norm,w_spectral_norm,cg_solves,cg_iterations_total";

/// Columns of `log.csv` as runs wrote them before `cg_solves` and `cg_iterations_total`:
/// such logs still read, and a resumed run's earlier rows get those two fields empty.
pub const LOG_HEADER_BEFORE_SOLVES: &str = "iteration,elapsed_s,train_loss,eval_loss,\
    eval_accuracy,cg_iterations,cg_residual,grad_norm,w_spectral_norm";

/// Whether `line` is the header of a `log.csv` tpri writes or wrote.
pub fn is_log_header(line: &str) -> bool {
    line == LOG_HEADER || line == LOG_HEADER_BEFORE_SOLVES
}

/// Columns of `alignment.csv` for a run of `cfg` (`train::Alignment`): the iteration,
/// the cosine and length ratio over the compared tensors, then the cosine of each.
fn alignment_header(cfg: &RunConfig) -> String {
    let names = compared(cfg.cell, cfg.task.trained_embedding_rows().is_some());
    format!("iteration,cosine,norm_ratio,{}", names.join(","))
}

/// An open run directory, owned by this process while the value lives (its `RunLock`).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// The run's configuration, as `config.toml` holds it (checkpoints record it).
    cfg: RunConfig,
    /// What the person running it should know: a stale lock taken over, a damaged
    /// checkpoint, a run started again.
    notes: Vec<String>,
    /// The checkpoint `open` found (its `checkpoint.json` text), and whether it is the
    /// previous one standing in for a missing or damaged newest.
    found: Option<(String, bool)>,
    _lock: RunLock,
}

impl RunDir {
    /// Checks, without writing anything, whether a new run may start in `path`: yes when
    /// it does not exist or holds none of a run's files; yes, with a note, when it holds
    /// a run that never reached a checkpoint (which the new run replaces); no when it
    /// holds a run with a checkpoint, is in use, or holds a run's files without its
    /// `config.toml`.
    pub fn check_new(path: &Path) -> Result<Option<String>> {
        inspect_new(path, false)
    }

    /// The process on this host that owns the run in `path` now, if one does (its
    /// `run.lock` names a live process); `None` for a run nobody runs, or one whose owner
    /// this host cannot see.
    pub fn live_owner(path: &Path) -> Option<Owner> {
        std::fs::read_to_string(path.join(LOCK_FILE))
            .ok()
            .and_then(|t| toml::from_str::<Owner>(&t).ok())
            .filter(|o| o.running_here() == Some(true))
    }

    /// Starts a new run in `path`: takes the lock, checks again under it, removes stale
    /// temporary files, then writes `config.toml` and empty logs. Call it only once
    /// everything else about the run has been checked (`Session::prepare`), so that a
    /// refused run leaves nothing behind.
    pub fn create(path: &Path, cfg: &RunConfig) -> Result<Self> {
        inspect_new(path, false)?;
        let created = !path.exists();
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        let result = (|| {
            let (lock, stale) = RunLock::acquire(path)?;
            // Another process may have started a run here since the check above.
            let replaced = inspect_new(path, true)?;
            let mut dir = Self {
                path: path.to_path_buf(),
                cfg: cfg.clone(),
                notes: stale.into_iter().chain(replaced).collect(),
                found: None,
                _lock: lock,
            };
            dir.remove_temporaries();
            let _ = std::fs::remove_file(dir.file("summary.json"));
            write_atomic(&dir.file("config.toml"), toml::to_string(cfg)?.as_bytes())?;
            write_atomic(&dir.file("log.csv"), format!("{LOG_HEADER}\n").as_bytes())?;
            write_atomic(&dir.file("step_norms.csv"), b"")?;
            if cfg.measures_alignment() {
                let header = alignment_header(cfg);
                write_atomic(&dir.file("alignment.csv"), format!("{header}\n").as_bytes())?;
            } else {
                // A replaced run's, which this one would not continue.
                let _ = std::fs::remove_file(dir.file("alignment.csv"));
            }
            Ok(dir)
        })();
        if result.is_err() && created {
            // Only removes it while it is still empty.
            let _ = std::fs::remove_dir(path);
        }
        result
    }

    /// Takes the lock of the run in `path` and reads its config and its newest usable
    /// checkpoint (falling back to the previous one, with a note). Writes nothing but the
    /// lock: `resume` changes the directory, once the caller's own checks have passed.
    pub fn open(path: &Path) -> Result<(Self, RunConfig, Option<TrainState>)> {
        let cfg_path = path.join("config.toml");
        if !cfg_path.is_file() {
            bail!(
                "{} is not a run directory: it has no {}",
                path.display(),
                cfg_path.display()
            );
        }
        let (lock, stale) = RunLock::acquire(path)?;
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "{} is not a run directory: cannot read {}",
                path.display(),
                cfg_path.display()
            )
        })?;
        let cfg: RunConfig =
            toml::from_str(&text).with_context(|| format!("malformed {}", cfg_path.display()))?;
        let found = checkpoint::find(path, &cfg)?;
        let mut notes: Vec<String> = stale.into_iter().collect();
        notes.extend(found.notes);
        let fell_back = found.fell_back;
        let (state, found) = match found.loaded {
            Some(l) => (Some(l.state), Some((l.sidecar, fell_back))),
            None => (None, None),
        };
        let dir = Self {
            path: path.to_path_buf(),
            cfg: cfg.clone(),
            notes,
            found,
            _lock: lock,
        };
        Ok((dir, cfg, state))
    }

    /// Continues the run `open` read, with `cfg` (its config, perhaps with a new
    /// iteration count, which is saved): removes stale temporary files, sets a damaged
    /// newest checkpoint aside as `checkpoint.damaged.safetensors`, removes the summary of
    /// an earlier end, and cuts the logs back to `from`, the checkpoint's iteration (all
    /// rows when there is none).
    pub fn resume(&mut self, cfg: &RunConfig, from: Option<u64>) -> Result<()> {
        self.remove_temporaries();
        if let Some((sidecar, fell_back)) = &self.found {
            if *fell_back {
                let newest = self.file(CHECKPOINT);
                if newest.exists() {
                    std::fs::rename(&newest, self.file(DAMAGED)).with_context(|| {
                        format!("cannot set the damaged {} aside", newest.display())
                    })?;
                    self.notes.push(format!(
                        "the damaged {} was moved to {DAMAGED}",
                        newest.display()
                    ));
                }
                write_atomic(&self.file(SIDECAR), sidecar.as_bytes())?;
            }
        }
        // The summary of an earlier end no longer describes the run; the new end writes one.
        let _ = std::fs::remove_file(self.file("summary.json"));
        let keep = from.unwrap_or(0);
        for (name, header) in [("log.csv", Some(LOG_HEADER)), ("step_norms.csv", None)] {
            cut_log(&self.file(name), header, keep, from.is_none())?;
        }
        if cfg.measures_alignment() {
            let header = alignment_header(cfg);
            cut_log(
                &self.file("alignment.csv"),
                Some(&header),
                keep,
                from.is_none(),
            )?;
        }
        if *cfg != self.cfg {
            write_atomic(&self.file("config.toml"), toml::to_string(cfg)?.as_bytes())?;
            self.cfg = cfg.clone();
        }
        Ok(())
    }

    /// Notes gathered so far (a stale lock taken over, a damaged checkpoint, a run
    /// started again, temporary files removed), emptied by the call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Removes temporary files left by writes that were killed (`.NAME.tmpPID`): safe
    /// only under the lock, when no other process writes here.
    fn remove_temporaries(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let temporary = name.starts_with('.')
                && name.rsplit_once(".tmp").is_some_and(|(_, pid)| {
                    !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
                });
            if temporary && std::fs::remove_file(entry.path()).is_ok() {
                self.notes.push(format!(
                    "removed the stale temporary file {}",
                    entry.path().display()
                ));
            }
        }
    }

    /// The run directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the run directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        write_atomic(
            &self.file("summary.json"),
            serde_json::to_string_pretty(summary)?.as_bytes(),
        )
    }

    fn append(&self, name: &str, line: &str) -> Result<()> {
        let path = self.file(name);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot append to {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot append to {}", path.display()))
    }
}

impl RunSink for RunDir {
    fn record(&mut self, r: &Record) -> Result<()> {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:e}")).unwrap_or_default();
        let line = [
            r.iteration.to_string(),
            format!("{:.3}", r.elapsed),
            opt(r.train_loss),
            opt(r.eval.map(|e| e.loss)),
            opt(r.eval.map(|e| e.accuracy)),
            r.cg.map(|c| c.iterations.to_string()).unwrap_or_default(),
            opt(r.cg.map(|c| c.residual)),
            opt(r.diagnostics.as_ref().map(|d| d.grad_norm)),
            opt(r.w_spectral_norm),
            r.cg.map(|c| c.solves.to_string()).unwrap_or_default(),
            r.cg.map(|c| c.total_iterations.to_string())
                .unwrap_or_default(),
        ]
        .join(",");
        self.append("log.csv", &line)?;
        if let Some(d) = &r.diagnostics {
            let norms: Vec<String> = d.step_norms.iter().map(|v| format!("{v:e}")).collect();
            self.append(
                "step_norms.csv",
                &format!("{},{}", r.iteration, norms.join(",")),
            )?;
        }
        if let Some(a) = &r.alignment {
            // `Alignment::tensors` come in `compared` order, the header's.
            let mut fields = vec![r.iteration.to_string(), opt(a.cosine), opt(a.norm_ratio)];
            fields.extend(a.tensors.iter().map(|(_, c)| opt(*c)));
            self.append("alignment.csv", &fields.join(","))?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, s: &TrainState) -> Result<()> {
        checkpoint::write(&self.path, s, &self.cfg)
    }
}

/// Keeps the header and the rows whose iteration is at most `keep` (all but the header
/// when `none` — no checkpoint, the run restarts). The header is written as `header`
/// says; rows written under an earlier, shorter one (`LOG_HEADER_BEFORE_SOLVES`) get
/// empty fields for the columns added since.
fn cut_log(path: &Path, header: Option<&str>, keep: u64, none: bool) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::new();
    let columns = header.map_or(0, |h| h.split(',').count());
    if let Some(h) = header {
        out.push_str(h);
        out.push('\n');
    }
    for line in text.lines().filter(|l| Some(*l) != header && !l.is_empty()) {
        let it: Option<u64> = line.split(',').next().and_then(|f| f.parse().ok());
        if !none && it.is_some_and(|it| it <= keep) {
            out.push_str(line);
            let fields = line.split(',').count();
            out.push_str(&",".repeat(columns.saturating_sub(fields)));
            out.push('\n');
        }
    }
    write_atomic(path, out.as_bytes())
}

/// What `RunDir::check_new` decides; `locked` when this process holds the lock already.
fn inspect_new(path: &Path, locked: bool) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    if !path.is_dir() {
        bail!("{} exists and is not a directory", path.display());
    }
    if !locked {
        if let Some(owner) = RunDir::live_owner(path) {
            bail!(lock::busy(path, &owner));
        }
    }
    let present = |names: &[&'static str]| -> Vec<&'static str> {
        names
            .iter()
            .copied()
            .filter(|n| path.join(n).exists())
            .collect()
    };
    let checkpoints = present(&[CHECKPOINT, PREVIOUS, SIDECAR, DAMAGED]);
    let logs = present(&["log.csv", "step_norms.csv", "alignment.csv", "summary.json"]);
    let log_end = last_logged(&path.join("log.csv"));
    if !path.join("config.toml").exists() {
        if checkpoints.is_empty() && logs.is_empty() {
            return Ok(None);
        }
        let mut files: Vec<&str> = checkpoints.clone();
        files.extend(&logs);
        bail!(
            "{} holds {} but no config.toml: another run's files, or a damaged run \
             directory{}; refusing to overwrite them (move them away, or choose another \
             --run-dir)",
            path.display(),
            files.join(", "),
            describe_run(path, log_end)
        );
    }
    let text = std::fs::read_to_string(path.join("config.toml")).unwrap_or_default();
    if let Err(e) = toml::from_str::<RunConfig>(&text) {
        bail!(
            "{} holds a config.toml that is not a tpri run's ({}); choose another --run-dir",
            path.display(),
            e.message()
        );
    }
    if !checkpoints.is_empty() {
        bail!(
            "{} already holds a run{}; continue it with --resume {0} or choose another --run-dir",
            path.display(),
            describe_run(path, log_end)
        );
    }
    Ok(Some(format!(
        "{} holds a run that never reached a checkpoint{}: starting it again from iteration 0",
        path.display(),
        match log_end {
            Some(i) => format!(" (its log ends at iteration {i})"),
            None => String::new(),
        }
    )))
}

/// " (checkpoint at iteration N, log up to iteration M)", as far as known.
fn describe_run(path: &Path, log_end: Option<u64>) -> String {
    let checkpoint = std::fs::read_to_string(path.join(SIDECAR))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("iteration").and_then(|i| i.as_u64()));
    let mut parts = Vec::new();
    if let Some(i) = checkpoint {
        parts.push(format!("checkpoint at iteration {i}"));
    }
    if let Some(i) = log_end {
        parts.push(format!("log.csv up to iteration {i}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The iteration of the last row of a log, if it has one.
fn last_logged(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.split(',').next().and_then(|f| f.parse().ok()))
}
