//! From a spec to runs: the base configuration as a TOML tree, each run's overrides
//! applied on it, and the result deserialized and validated, before anything is written.

use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};

use crate::config::Inversion;
use crate::model::CellKind;
use crate::presets::preset;
use crate::train::RunConfig;

use super::node::flatten;
use super::spec::{Axis, Spec};
use super::value::{file_safe, fingerprint, label_of};

/// The most runs one sweep may hold.
const MAX_RUNS: usize = 200_000;

/// One run of the grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// Its directory name under DIR/runs: the axis values and the seed.
    pub name: String,
    /// The index of its value on each axis.
    pub cell: Vec<usize>,
    /// Its seed.
    pub seed: u64,
    /// Its effective configuration.
    pub config: RunConfig,
    /// The configuration as `tpri train --config` reads it.
    pub config_toml: String,
    /// `fingerprint` of `config_toml`.
    pub config_hash: String,
}

/// Every run of `spec`: the product of its axes (the first axis varying slowest), each
/// with every seed. Fails, naming the key, on a key or value the configuration does not
/// take, and on a combination `RunConfig::validate` rejects.
pub fn expand(spec: &Spec) -> Result<Vec<Run>> {
    let base = base_tree(spec)?;
    check_set(spec, &base)?;
    for axis in &spec.axes {
        for (value, label) in axis.values.iter().zip(&axis.labels) {
            let mut overrides = spec.set.clone();
            overrides.extend(flatten(axis.config_key(), value));
            // A value that only leaves a field missing may be completed by another axis:
            // the whole run's check below reports it if not.
            if let Err(e) = deserialize(apply(&base, &overrides)?) {
                if !format!("{e:#}").contains("missing field") {
                    return Err(e.context(format!(
                        "bad key or value on axis {}: {} = {label}",
                        axis.key, axis.key
                    )));
                }
            }
        }
    }
    let base_cfg =
        deserialize(apply(&base, &spec.set)?).context("the base configuration with [set]")?;
    let seed_axis = spec.axis_index("seed").is_some();
    let seeds: Vec<Option<u64>> = match (&spec.seeds, seed_axis) {
        (_, true) => vec![None],
        (Some(seeds), false) => seeds.iter().copied().map(Some).collect(),
        (None, false) => vec![Some(base_cfg.seed)],
    };
    let count = spec.axes.iter().map(|a| a.values.len()).product::<usize>() * seeds.len();
    ensure!(
        count <= MAX_RUNS,
        "the sweep has {count} runs, more than {MAX_RUNS}: split it"
    );
    let keys = short_keys(&spec.axes);
    let mut runs = Vec::with_capacity(count);
    let mut names: HashMap<String, usize> = HashMap::new();
    for cell in cells(&spec.axes) {
        for &seed in &seeds {
            let run = make_run(spec, &base, &keys, &cell, seed)?;
            if let Some(&other) = names.get(&run.name) {
                bail!(
                    "runs {} and {} get the same directory name {}: give the axes labels",
                    describe(spec, &runs[other]),
                    describe(spec, &run),
                    run.name
                );
            }
            names.insert(run.name.clone(), runs.len());
            runs.push(run);
        }
    }
    Ok(runs)
}

fn make_run(
    spec: &Spec,
    base: &toml::Table,
    keys: &[String],
    cell: &[usize],
    seed: Option<u64>,
) -> Result<Run> {
    let mut overrides = spec.set.clone();
    let mut parts = Vec::new();
    for ((axis, &i), key) in spec.axes.iter().zip(cell).zip(keys) {
        overrides.extend(flatten(axis.config_key(), &axis.values[i]));
        parts.push(format!("{}={}", file_safe(key), file_safe(&axis.labels[i])));
    }
    if let Some(seed) = seed {
        overrides.push(("seed".into(), toml::Value::Integer(seed as i64)));
        parts.push(format!("seed={seed}"));
    }
    let mut name = parts.join("_");
    if name.len() > 150 {
        let hash = fingerprint(name.as_bytes());
        name = format!("{}-{}", &name[..140], &hash[..8]);
    }
    let what = || {
        let values: Vec<String> = spec
            .axes
            .iter()
            .zip(cell)
            .map(|(a, &i)| format!("{} = {}", a.key, a.labels[i]))
            .chain(seed.map(|s| format!("seed = {s}")))
            .collect();
        format!("invalid settings for run {name} ({})", values.join(", "))
    };
    let config = deserialize(apply(base, &overrides)?).with_context(what)?;
    config.validate().with_context(what)?;
    let config_toml = toml::to_string(&config)?;
    Ok(Run {
        config_hash: fingerprint(config_toml.as_bytes()),
        name,
        cell: cell.to_vec(),
        seed: config.seed,
        config,
        config_toml,
    })
}

/// Checks `[set]` on the base, naming the first key whose value the configuration does
/// not take.
fn check_set(spec: &Spec, base: &toml::Table) -> Result<()> {
    let Err(all) = deserialize(apply(base, &spec.set)?) else {
        return Ok(());
    };
    for (key, value) in &spec.set {
        if let Err(e) = deserialize(apply(base, &[(key.clone(), value.clone())])?) {
            if !format!("{e:#}").contains("missing field") {
                return Err(e.context(format!("bad key or value in [set]: {key} = {value}")));
            }
        }
    }
    Err(all.context("bad settings in [set]"))
}

/// A run as `key = value` pairs, for messages.
fn describe(spec: &Spec, run: &Run) -> String {
    let values: Vec<String> = spec
        .axes
        .iter()
        .zip(&run.cell)
        .map(|(a, &i)| format!("{} = {}", a.key, label_of(&a.values[i])))
        .collect();
    format!("({}, seed {})", values.join(", "), run.seed)
}

/// Every combination of value indices, the first axis varying slowest.
pub fn cells(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|c| {
                (0..axis.values.len()).map(move |i| {
                    let mut c = c.clone();
                    c.push(i);
                    c
                })
            })
            .collect();
    }
    out
}

/// The base of every run as a TOML tree: the preset (or the defaults), then the config
/// file merged over it.
pub fn base_tree(spec: &Spec) -> Result<toml::Table> {
    let cfg = match &spec.preset {
        Some(name) => preset(name)?,
        None => RunConfig::default(),
    };
    let tree = toml::Table::try_from(&cfg)?;
    let Some(path) = &spec.config else {
        return Ok(tree);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: toml::Table = toml::from_str(&text)
        .with_context(|| format!("malformed config file {}", path.display()))?;
    let tree = apply(&tree, &flatten("", &toml::Value::Table(file)))?;
    deserialize(tree.clone())
        .with_context(|| format!("invalid settings in config file {}", path.display()))?;
    Ok(tree)
}

/// `base` with `overrides` (dotted key, value) set, as `tpri train` layers a config file:
/// a `task.name` of another kind starts the task afresh (the other `task.*` keys given
/// complete it), and a new `cell` takes its default inversion and initialisation unless
/// `hyper.tp.inversion` or `init` is set too.
pub fn apply(base: &toml::Table, overrides: &[(String, toml::Value)]) -> Result<toml::Table> {
    let mut tree = base.clone();
    let get = |key: &str| overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let base_task = tree.get("task").and_then(|t| t.get("name")).cloned();
    if get("task.name").is_some_and(|n| Some(n) != base_task.as_ref()) {
        tree.insert("task".into(), toml::Value::Table(toml::Table::new()));
    }
    let base_cell = tree.get("cell").cloned();
    for (key, value) in overrides {
        set_path(&mut tree, key, value.clone())?;
    }
    if let Some(cell) = get("cell").filter(|c| Some(*c) != base_cell.as_ref()) {
        if get("init").is_none() {
            // No `init`: the new cell's default (`RunConfig::initialisation`).
            tree.remove("init");
        }
        if get("hyper.tp.inversion").is_none() {
            if let Ok(cell) = cell.clone().try_into::<CellKind>() {
                let inversion = toml::Value::try_from(Inversion::default_for(cell))?;
                set_path(&mut tree, "hyper.tp.inversion", inversion)?;
            }
        }
    }
    Ok(tree)
}

/// Sets the dotted `key` of `tree` to `value`, creating tables on the way.
fn set_path(tree: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    ensure!(
        parts.iter().all(|p| !p.is_empty()),
        "{key:?} is not a dotted key"
    );
    let (last, path) = parts.split_last().expect("split gives at least one part");
    let mut table = tree;
    for (i, part) in path.iter().enumerate() {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!(
                "{key}: {} is a value, not a table of settings",
                parts[..=i].join(".")
            ),
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

/// The configuration a tree describes, with the loss the task implies (as `tpri train`
/// sets it).
pub fn deserialize(tree: toml::Table) -> Result<RunConfig> {
    let mut cfg: RunConfig =
        toml::Value::Table(tree)
            .try_into()
            .map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{}", e.to_string().trim().replace('\n', " "))
            })?;
    cfg.hyper.loss = cfg.task.loss();
    Ok(cfg)
}

/// For each axis, the shortest dotted suffix of its key that no other axis key ends with
/// (`hyper.opt.lr` → `lr`), for run names.
pub fn short_keys(axes: &[Axis]) -> Vec<String> {
    let suffix = |key: &str, n: usize| -> String {
        let parts: Vec<&str> = key.split('.').collect();
        parts[parts.len().saturating_sub(n)..].join(".")
    };
    axes.iter()
        .map(|a| {
            let depth = a.key.split('.').count();
            (1..=depth)
                .map(|n| suffix(&a.key, n))
                .find(|s| {
                    axes.iter()
                        .filter(|b| b.key != a.key)
                        .all(|b| b.key != *s && !b.key.ends_with(&format!(".{s}")))
                })
                .unwrap_or_else(|| a.key.clone())
        })
        .collect()
}
