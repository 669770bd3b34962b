//! A run directory: the effective config, the logs, checkpoints and the summary.
//!
//! ```text
//! RUN_DIR/config.toml              the effective configuration
//! RUN_DIR/log.csv                  one row per log point (see LOG_HEADER)
//! RUN_DIR/step_norms.csv           iteration, then ‖v_t − h_t‖ (TP) or ‖∂ℓ/∂h_t‖ (BP) for t = 1 … T
//! RUN_DIR/checkpoint.safetensors   parameters and optimizer state, metadata in its header
//! RUN_DIR/checkpoint.json          the same metadata, for people
//! RUN_DIR/summary.json             written at the end
//! ```
//! Every file but the logs is replaced atomically; the logs are cut back to the
//! checkpoint when a run resumes, so they never hold rows from a lost future.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::optimizer_state::OptState;
use crate::tensor_file::{
    params_from_tensors, params_tensors, read_tensors, write_atomic, write_tensors,
    CHECKPOINT_PARAMS_PREFIX,
};
use crate::train::{Record, RunConfig, RunSink, Summary, TrainState};

/// Columns of `log.csv`.
pub const LOG_HEADER: &str =
    "iteration,elapsed_s,train_loss,eval_loss,eval_accuracy,cg_iterations,cg_residual,grad_norm,w_spectral_norm";

/// What the checkpoint's header records besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Iterations completed.
    pub iteration: u64,
    /// Seconds of training so far.
    pub elapsed: f64,
    /// Held-out loss of the initial parameters (`TrainState::initial_loss`).
    pub initial_loss: f64,
    /// The smoothed training loss (`TrainState::smoothed_loss`).
    pub smoothed_loss: f64,
    /// The optimizer's step count (`OptState::step`).
    pub optimizer_step: u64,
    /// Index of the next training batch: batches are a pure function of (seed, index),
    /// so this is the whole state of the data stream.
    pub next_batch: u64,
    /// The run's configuration (its `config.toml`).
    pub config: RunConfig,
}

/// An open run directory.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Starts a new run in `path`, which must not hold one already.
    pub fn create(path: &Path, cfg: &RunConfig) -> Result<Self> {
        if path.join("config.toml").exists() {
            bail!(
                "{} already holds a run; continue it with --resume {0} or choose another --run-dir",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        let dir = Self {
            path: path.to_path_buf(),
        };
        write_atomic(&dir.file("config.toml"), toml::to_string(cfg)?.as_bytes())?;
        write_atomic(&dir.file("log.csv"), format!("{LOG_HEADER}\n").as_bytes())?;
        write_atomic(&dir.file("step_norms.csv"), b"")?;
        Ok(dir)
    }

    /// Reopens a run for resumption: its config, and its checkpoint state when one exists.
    /// The logs are cut back to the checkpoint.
    pub fn open(path: &Path) -> Result<(Self, RunConfig, Option<TrainState>)> {
        let dir = Self {
            path: path.to_path_buf(),
        };
        let cfg_path = dir.file("config.toml");
        let text = std::fs::read_to_string(&cfg_path).with_context(|| {
            format!(
                "{} is not a run directory: cannot read {}",
                path.display(),
                cfg_path.display()
            )
        })?;
        let cfg: RunConfig =
            toml::from_str(&text).with_context(|| format!("malformed {}", cfg_path.display()))?;
        let state = if dir.file("checkpoint.safetensors").exists() {
            Some(load_checkpoint(&dir.file("checkpoint.safetensors"), &cfg)?)
        } else {
            None
        };
        let keep = state.as_ref().map_or(0, |s| s.iteration);
        for (name, header) in [("log.csv", Some(LOG_HEADER)), ("step_norms.csv", None)] {
            cut_log(&dir.file(name), header, keep, state.is_none())?;
        }
        Ok((dir, cfg, state))
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
        Ok(())
    }

    fn checkpoint(&mut self, s: &TrainState) -> Result<()> {
        let cfg_text = std::fs::read_to_string(self.file("config.toml"))?;
        let meta = CheckpointMeta {
            iteration: s.iteration,
            elapsed: s.elapsed,
            initial_loss: s.initial_loss,
            smoothed_loss: s.smoothed_loss,
            optimizer_step: s.opt.step,
            next_batch: s.iteration,
            config: toml::from_str(&cfg_text)?,
        };
        let json = serde_json::to_string_pretty(&meta)?;
        let mut tensors = params_tensors(&s.params, CHECKPOINT_PARAMS_PREFIX);
        tensors.extend(params_tensors(&s.opt.m, "opt.m."));
        tensors.extend(params_tensors(&s.opt.v, "opt.v."));
        write_tensors(
            &self.file("checkpoint.safetensors"),
            &tensors,
            Some(HashMap::from([("tpri".to_string(), json.clone())])),
        )?;
        write_atomic(&self.file("checkpoint.json"), json.as_bytes())
    }
}

/// Reads a checkpoint written by `RunDir`, checking it fits `cfg`.
pub fn load_checkpoint(path: &Path, cfg: &RunConfig) -> Result<TrainState> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid checkpoint: {e}", path.display()))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("tpri"))
        .with_context(|| format!("{} has no tpri metadata: not a checkpoint", path.display()))?;
    let meta: CheckpointMeta = serde_json::from_str(json)
        .with_context(|| format!("malformed metadata in {}", path.display()))?;
    let tensors = read_tensors(path)?;
    let group = |prefix: &str| params_from_tensors(&tensors, prefix, path);
    let params = group(CHECKPOINT_PARAMS_PREFIX)?;
    let opt = OptState {
        step: meta.optimizer_step,
        m: group("opt.m.")?,
        v: group("opt.v.")?,
    };
    if meta.config.task != cfg.task
        || meta.config.hidden != cfg.hidden
        || meta.config.cell != cfg.cell
        || params.cell != cfg.cell
    {
        bail!(
            "{} belongs to a different run (task, cell or hidden size differ from config.toml)",
            path.display()
        );
    }
    for (name, dims) in [("opt.m", opt.m.dims()), ("opt.v", opt.v.dims())] {
        if dims != params.dims() {
            bail!(
                "{name} in {} does not match the parameters' shapes",
                path.display()
            );
        }
    }
    if params.dims().hidden != cfg.hidden {
        bail!(
            "{} holds a model of hidden size {}, but the run's config says {}",
            path.display(),
            params.dims().hidden,
            cfg.hidden
        );
    }
    Ok(TrainState {
        iteration: meta.iteration,
        elapsed: meta.elapsed,
        initial_loss: meta.initial_loss,
        smoothed_loss: meta.smoothed_loss,
        params,
        opt,
    })
}

/// Keeps the header and the rows whose iteration is at most `keep` (all but the header
/// when `none` — no checkpoint, the run restarts).
fn cut_log(path: &Path, header: Option<&str>, keep: u64, none: bool) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::new();
    if let Some(h) = header {
        out.push_str(h);
        out.push('\n');
    }
    for line in text.lines().filter(|l| Some(*l) != header && !l.is_empty()) {
        let it: Option<u64> = line.split(',').next().and_then(|f| f.parse().ok());
        if !none && it.is_some_and(|it| it <= keep) {
            out.push_str(line);
            out.push('\n');
        }
    }
    write_atomic(path, out.as_bytes())
}
