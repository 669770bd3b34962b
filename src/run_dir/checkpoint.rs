//! Checkpoints: the parameters and the optimizer's state, with a checksum over their
//! metadata and tensors, written by rotation so that the last two survive any crash.
//!
//! A new checkpoint is written to a temporary file and synced; the current one becomes
//! `checkpoint.prev.safetensors` (a hard link, so `checkpoint.safetensors` never goes
//! missing), then the new one is renamed over `checkpoint.safetensors` and the directory
//! synced; `checkpoint.json` follows. Loading verifies the checksum and falls back to
//! the previous checkpoint when the newest is missing or damaged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::tensor_file::{
    params_from_tensors, params_tensors, write_atomic, Tensor, TensorData, CHECKPOINT_PARAMS_PREFIX,
};
use crate::train::{DivergenceCheck, RunConfig, TrainState};

/// The newest checkpoint.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The one before it.
pub const PREVIOUS: &str = "checkpoint.prev.safetensors";
/// The newest checkpoint's metadata, for people (and to notice a missing checkpoint).
pub const SIDECAR: &str = "checkpoint.json";
/// Where a newest checkpoint that failed its checks is moved when a run resumes from the
/// previous one.
pub const DAMAGED: &str = "checkpoint.damaged.safetensors";

/// Header key of the metadata (JSON of `CheckpointMeta`).
const META_KEY: &str = "tpri";
/// Header key of the checksum.
const CHECKSUM_KEY: &str = "tpri_checksum";

/// What the checkpoint's header records besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Iterations completed.
    pub iteration: u64,
    /// Seconds of training so far.
    pub elapsed: f64,
    /// Held-out loss of the initial parameters, ℓ_0.
    pub initial_loss: f64,
    /// The smoothed training loss s of the divergence rule.
    pub smoothed_loss: f64,
    /// Its reference R = max(ℓ_0, ℓ_1) (absent in checkpoints of older versions: ℓ_0).
    #[serde(default)]
    pub reference_loss: Option<f64>,
    /// Consecutive log points with s above the threshold (0 in any checkpoint written).
    #[serde(default)]
    pub over_threshold: u32,
    /// The optimizer's step count (`OptState::step`).
    pub optimizer_step: u64,
    /// Index of the next training batch: batches are a pure function of (seed, index),
    /// so this is the whole state of the data stream.
    pub next_batch: u64,
    /// The run's configuration (its `config.toml`).
    pub config: RunConfig,
}

/// Why a checkpoint file cannot be resumed from.
#[derive(Debug)]
pub enum Problem {
    /// Missing, unreadable, truncated, failing its checksum: damaged; an older
    /// checkpoint may stand in.
    Damaged(anyhow::Error),
    /// Sound, but of another run (task, cell or sizes differ from the config).
    Foreign(anyhow::Error),
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// The state it holds.
    pub state: TrainState,
    /// Its metadata, as `checkpoint.json` shows it.
    pub sidecar: String,
    /// Set when it could not be verified (no checksum: written by an older version).
    pub unverified: bool,
}

/// Writes `state` as the newest checkpoint of the run in `dir`, keeping the one before.
pub fn write(dir: &Path, state: &TrainState, cfg: &RunConfig) -> Result<()> {
    let d = &state.divergence;
    let meta = CheckpointMeta {
        iteration: state.iteration,
        elapsed: state.elapsed,
        initial_loss: d.initial_loss,
        smoothed_loss: d.smoothed.unwrap_or(d.initial_loss),
        reference_loss: d.reference,
        over_threshold: d.over,
        optimizer_step: state.opt.step,
        next_batch: state.iteration,
        config: cfg.clone(),
    };
    let json = serde_json::to_string_pretty(&meta)?;
    let mut tensors = params_tensors(&state.params, CHECKPOINT_PARAMS_PREFIX);
    tensors.extend(params_tensors(&state.opt.m, "opt.m."));
    tensors.extend(params_tensors(&state.opt.v, "opt.v."));
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let bytes = match t.data {
                TensorData::Float(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                TensorData::Int(_) => unreachable!("parameters are floats"),
            };
            (name, t.shape, bytes)
        })
        .collect();
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            Ok((
                name.as_str(),
                TensorView::new(Dtype::F64, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let sum = checksum(&json, views.iter().map(|(n, v)| (*n, v)));
    let bytes = safetensors::serialize(
        views,
        Some(HashMap::from([
            (META_KEY.to_string(), json.clone()),
            (CHECKSUM_KEY.to_string(), sum.clone()),
        ])),
    )?;
    let tmp = dir.join(format!(".{CHECKPOINT}.tmp{}", std::process::id()));
    let newest = dir.join(CHECKPOINT);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        if newest.exists() {
            // A second name for the current checkpoint, renamed into place: at every
            // moment both checkpoint.safetensors and a previous one exist.
            let link = dir.join(format!(".{PREVIOUS}.tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&link);
            match std::fs::hard_link(&newest, &link) {
                Ok(()) => std::fs::rename(&link, dir.join(PREVIOUS))?,
                // No hard links here: move it, leaving a moment with only the previous.
                Err(_) => std::fs::rename(&newest, dir.join(PREVIOUS))?,
            }
        }
        std::fs::rename(&tmp, &newest)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write the checkpoint {}", newest.display()))?;
    write_atomic(&dir.join(SIDECAR), sidecar(&json, &sum)?.as_bytes())
}

/// Reads and verifies the checkpoint at `path`, checking that it belongs to `cfg`'s run.
pub fn read(path: &Path, cfg: &RunConfig) -> Result<Loaded, Problem> {
    let damaged = |e: anyhow::Error| Problem::Damaged(e.context(format!("{}", path.display())));
    let bytes = std::fs::read(path).map_err(|e| damaged(anyhow!("cannot read it: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| damaged(anyhow!("not a valid safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| damaged(anyhow!("not a valid safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let json = metadata
        .get(META_KEY)
        .ok_or_else(|| damaged(anyhow!("no tpri metadata: not a checkpoint")))?;
    let meta: CheckpointMeta =
        serde_json::from_str(json).map_err(|e| damaged(anyhow!("malformed metadata: {e}")))?;
    let mut views = file.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let stored = metadata.get(CHECKSUM_KEY);
    let computed = checksum(json, views.iter().map(|(n, v)| (n.as_str(), v)));
    if let Some(stored) = stored {
        if *stored != computed {
            return Err(damaged(anyhow!(
                "checksum mismatch (the file records {stored}, its contents give {computed}): \
                 it was damaged after it was written"
            )));
        }
    }
    let mut groups: BTreeMap<&str, HashMap<String, Tensor>> = BTreeMap::new();
    for (name, view) in &views {
        if view.dtype() != Dtype::F64 {
            return Err(damaged(anyhow!(
                "tensor {name} is {:?}, not F64",
                view.dtype()
            )));
        }
        let prefix = [CHECKPOINT_PARAMS_PREFIX, "opt.m.", "opt.v."]
            .into_iter()
            .find(|p| name.starts_with(p))
            .ok_or_else(|| damaged(anyhow!("unexpected tensor {name}")))?;
        let data = view
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect();
        groups
            .entry(prefix)
            .or_default()
            .insert(name.clone(), Tensor::float(view.shape().to_vec(), data));
    }
    let group = |prefix: &str| -> Result<Params, Problem> {
        let empty = HashMap::new();
        params_from_tensors(groups.get(prefix).unwrap_or(&empty), prefix, path).map_err(damaged)
    };
    let params = group(CHECKPOINT_PARAMS_PREFIX)?;
    let opt = OptState {
        step: meta.optimizer_step,
        m: group("opt.m.")?,
        v: group("opt.v.")?,
    };
    for (name, dims) in [("opt.m", opt.m.dims()), ("opt.v", opt.v.dims())] {
        if dims != params.dims() {
            return Err(damaged(anyhow!(
                "{name} does not match the parameters' shapes"
            )));
        }
    }
    let foreign = |why: String| {
        Problem::Foreign(anyhow!(
            "{} belongs to a different run: {why}",
            path.display()
        ))
    };
    if meta.config.task != cfg.task
        || meta.config.hidden != cfg.hidden
        || meta.config.cell != cfg.cell
    {
        return Err(foreign(
            "task, cell or hidden size differ from config.toml".into(),
        ));
    }
    if params.cell != cfg.cell || params.dims().hidden != cfg.hidden {
        return Err(foreign(format!(
            "it holds a {:?} model of hidden size {}, but the run's config says {:?} with {}",
            params.cell,
            params.dims().hidden,
            cfg.cell,
            cfg.hidden
        )));
    }
    let sidecar = sidecar(json, &computed).map_err(damaged)?;
    Ok(Loaded {
        state: TrainState {
            iteration: meta.iteration,
            elapsed: meta.elapsed,
            divergence: DivergenceCheck {
                initial_loss: meta.initial_loss,
                reference: Some(meta.reference_loss.unwrap_or(meta.initial_loss)),
                smoothed: Some(meta.smoothed_loss),
                over: meta.over_threshold,
            },
            params,
            opt,
        },
        sidecar,
        unverified: stored.is_none(),
    })
}

/// The checkpoint a run in `dir` resumes from.
#[derive(Debug, Default)]
pub struct Found {
    /// The newest usable checkpoint, if any.
    pub loaded: Option<Loaded>,
    /// Set when it is the previous checkpoint, the newest being missing or damaged.
    pub fell_back: bool,
    /// What the person resuming should know (a damaged newest checkpoint, an unverified one).
    pub notes: Vec<String>,
}

/// Finds the newest usable checkpoint of the run in `dir`: `checkpoint.safetensors`, or
/// when it is missing or damaged `checkpoint.prev.safetensors`. No checkpoint at all is
/// `Ok` with nothing loaded, unless `checkpoint.json` records one (then it was lost, and
/// restarting from iteration 0 would discard the run: an error naming the missing file).
pub fn find(dir: &Path, cfg: &RunConfig) -> Result<Found> {
    let recorded = std::fs::read_to_string(dir.join(SIDECAR))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("iteration").and_then(|i| i.as_u64()));
    let mut found = Found::default();
    let mut damaged = Vec::new();
    for (name, fallback) in [(CHECKPOINT, false), (PREVIOUS, true)] {
        let path = dir.join(name);
        if !path.exists() {
            if let (false, Some(n)) = (fallback, recorded) {
                damaged.push(format!(
                    "{} is missing ({SIDECAR} records a checkpoint at iteration {n})",
                    path.display()
                ));
            }
            continue;
        }
        match read(&path, cfg) {
            Ok(loaded) => {
                if loaded.unverified {
                    found.notes.push(format!(
                        "{} has no checksum (written by an older tpri): it cannot be verified",
                        path.display()
                    ));
                }
                if fallback && !damaged.is_empty() {
                    found.notes.push(format!(
                        "{}; resuming from the previous checkpoint, {} (iteration {})",
                        damaged.join("; "),
                        path.display(),
                        loaded.state.iteration
                    ));
                }
                found.fell_back = fallback;
                found.loaded = Some(loaded);
                return Ok(found);
            }
            Err(Problem::Foreign(e)) => return Err(e),
            Err(Problem::Damaged(e)) => damaged.push(format!("{e:#}")),
        }
    }
    if !damaged.is_empty() {
        bail!(
            "no usable checkpoint in {}: {}{}",
            dir.display(),
            damaged.join("; "),
            if dir.join(PREVIOUS).exists() {
                ""
            } else {
                ", and there is no previous checkpoint (checkpoint.prev.safetensors) to fall back to"
            }
        );
        // Restarting from iteration 0 would discard the run: the person decides.
    }
    Ok(found)
}

/// Reads and verifies the newest checkpoint at `path` (a checkpoint file), checking that
/// it fits `cfg`.
pub fn load_checkpoint(path: &Path, cfg: &RunConfig) -> Result<TrainState> {
    match read(path, cfg) {
        Ok(loaded) => Ok(loaded.state),
        Err(Problem::Damaged(e) | Problem::Foreign(e)) => Err(e),
    }
}

/// CRC-32 over the metadata JSON, then each tensor's name, dtype, shape and bytes in the
/// order given (sorted by name), as `crc32:xxxxxxxx`.
fn checksum<'a, 'b: 'a>(
    json: &str,
    tensors: impl Iterator<Item = (&'a str, &'a TensorView<'b>)>,
) -> String {
    let mut h = crc32fast::Hasher::new();
    h.update(json.as_bytes());
    for (name, view) in tensors {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(format!("{:?}", view.dtype()).as_bytes());
        h.update(&[0]);
        for d in view.shape() {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(&(view.data().len() as u64).to_le_bytes());
        h.update(view.data());
    }
    format!("crc32:{:08x}", h.finalize())
}

/// `checkpoint.json`: the metadata with its checksum.
fn sidecar(json: &str, sum: &str) -> Result<String> {
    let mut value: serde_json::Value = serde_json::from_str(json)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("checksum".into(), sum.into());
    }
    Ok(serde_json::to_string_pretty(&value)?)
}

/// Makes renames in `dir` durable (where the platform can sync a directory).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
