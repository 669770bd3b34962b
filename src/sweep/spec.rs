//! The sweep spec: a TOML file naming a base configuration, fixed overrides, axes, seeds,
//! an optional per-cell search, figures and Slurm resources (docs/SWEEPS.md).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::node::{axis_leaves, flatten, Node};
use super::value::label_of;

use super::metric::Metric;

/// One axis of the grid: a config key and the values it takes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// The axis' name in the spec: the dotted config key (`hyper.opt.lr`), unless `into`
    /// names the key.
    pub key: String,
    /// The dotted config key the values are merged into, when the axis' name is not one
    /// (`step = { key = "hyper", values = [...] }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub into: Option<String>,
    /// The values, in order; a table value is merged into the config at `key`.
    pub values: Vec<toml::Value>,
    /// One label per value: run names, results.csv and figures show these.
    pub labels: Vec<String>,
    /// Whether the values were given as a log range (figures use a log10 axis).
    pub log: bool,
}

impl Axis {
    /// The dotted config key its values are merged into.
    pub fn config_key(&self) -> &str {
        self.into.as_deref().unwrap_or(&self.key)
    }
}

/// For each cell of the other axes, keep the best value of one axis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The inner axis searched over (`hyper.opt.lr`).
    pub axis: String,
    /// What "best" means, averaged over seeds.
    pub criterion: Metric,
}

/// How band figures summarize the seeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Band {
    /// From the smallest to the largest value over seeds, around their mean.
    #[default]
    MinMax,
    /// Mean ± one standard deviation over seeds.
    Std,
}

/// What `[figures]` asks for; every field has a default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FigureSpec {
    /// The two axes of heat maps (x, y) [default: the first two axes that are neither
    /// searched nor the winner axis].
    pub heatmap: Option<Vec<String>>,
    /// Metrics drawn as heat maps [default: the search criterion, else the final train
    /// loss].
    pub metrics: Option<Vec<Metric>>,
    /// The axis whose values compete in winner maps [default: `hyper.method` when it is
    /// an axis].
    pub winner: Option<String>,
    /// The axis whose values become the curves of one figure [default: the winner axis,
    /// else the first axis].
    pub curves: Option<String>,
    /// The band over seeds.
    pub band: Band,
    /// At most this many figures of each kind [default: 60].
    pub max_figures: Option<usize>,
}

/// Resources of the Slurm job array (`[slurm]`); flags of `tpri sweep` override them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSpec {
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--mem` (`4G`).
    pub mem: Option<String>,
    /// `--time` (`02:00:00`).
    pub time: Option<String>,
    /// `--partition`.
    pub partition: Option<String>,
    /// GPUs per run (`--gres=gpu:N`).
    pub gpus: Option<u32>,
    /// Array tasks running at once (`--array=…%N`).
    pub max_parallel: Option<u32>,
    /// Runs per `sbatch` at most (Slurm's MaxArraySize is 1001 by default) [default: 1000].
    pub max_array_size: Option<usize>,
    /// Further `sbatch` options, passed as given (`["--account=abc", "--qos=long"]`).
    pub sbatch_args: Vec<String>,
}

/// A parsed sweep spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// The spec file's text (hashed into the manifest, copied to DIR/spec.toml).
    pub text: String,
    /// The base preset (`tpri presets`), if any.
    pub preset: Option<String>,
    /// The base config file, resolved against the spec's directory; applied over the
    /// preset.
    pub config: Option<PathBuf>,
    /// `tpri train --backend` of every run (auto, gpu, cpu) [default: tpri's, auto].
    pub backend: Option<String>,
    /// `tpri train --storage` of every run [default: tpri's, f32].
    pub storage: Option<String>,
    /// The seeds every cell runs with [default: the base config's seed alone].
    pub seeds: Option<Vec<u64>>,
    /// Fixed overrides: dotted key → value (tables flattened to their leaves).
    pub set: Vec<(String, toml::Value)>,
    /// The axes, in the order the spec gives them.
    pub axes: Vec<Axis>,
    /// The per-cell search, if any.
    pub search: Option<Search>,
    /// The held-out accuracy whose first evaluation results.csv reports
    /// (`reach_iteration`, the `reach-iteration` metric), in (0, 1].
    pub reach: Option<f64>,
    /// Figure settings.
    pub figures: FigureSpec,
    /// Slurm resources.
    pub slurm: SlurmSpec,
}

/// The spec file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    preset: Option<String>,
    config: Option<PathBuf>,
    backend: Option<String>,
    storage: Option<String>,
    seeds: Option<Vec<u64>>,
    #[serde(default)]
    set: toml::Table,
    axes: Option<toml::Spanned<Node>>,
    search: Option<Search>,
    reach: Option<f64>,
    #[serde(default)]
    figures: FigureSpec,
    #[serde(default)]
    slurm: SlurmSpec,
}

/// `{ log = [a, b], points = n }`, `{ linear = [a, b], points = n }` or
/// `{ values = [...], labels = [...] }`, each with an optional `key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeSpec {
    key: Option<String>,
    log: Option<[toml::Value; 2]>,
    linear: Option<[toml::Value; 2]>,
    points: Option<usize>,
    values: Option<Vec<toml::Value>>,
    labels: Option<Vec<String>>,
}

impl Spec {
    /// Reads and checks a spec file (not yet against the config: see `expand`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sweep spec {}", path.display()))?;
        let mut spec =
            Self::parse(&text).with_context(|| format!("invalid sweep spec {}", path.display()))?;
        if let Some(config) = &spec.config {
            let base = path.parent().unwrap_or(Path::new("."));
            spec.config = Some(base.join(config));
        }
        Ok(spec)
    }

    /// Parses a spec's text; a relative `config` stays relative.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawSpec = toml::from_str(text)?;
        let mut axes = Vec::new();
        if let Some(node) = raw.axes {
            for (key, value) in axis_leaves(node)? {
                axes.push(axis(&key, value).with_context(|| format!("axis {key}"))?);
            }
        }
        let set = flatten("", &toml::Value::Table(raw.set));
        let spec = Self {
            text: text.to_owned(),
            preset: raw.preset,
            config: raw.config,
            backend: raw.backend,
            storage: raw.storage,
            seeds: raw.seeds,
            set,
            axes,
            search: raw.search,
            reach: raw.reach,
            figures: raw.figures,
            slurm: raw.slurm,
        };
        spec.check()?;
        Ok(spec)
    }

    /// The index of the axis with `key`.
    pub fn axis_index(&self, key: &str) -> Option<usize> {
        self.axes.iter().position(|a| a.key == key)
    }

    fn check(&self) -> Result<()> {
        if let Some(b) = &self.backend {
            ensure!(
                ["auto", "gpu", "cpu"].contains(&b.as_str()),
                "backend must be auto, gpu or cpu, not {b:?}"
            );
        }
        if let Some(s) = &self.storage {
            ensure!(
                ["f32", "f16"].contains(&s.as_str()),
                "storage must be f32 or f16, not {s:?}"
            );
        }
        if let Some(seeds) = &self.seeds {
            ensure!(!seeds.is_empty(), "seeds is empty: give at least one");
            let mut sorted = seeds.clone();
            sorted.sort_unstable();
            sorted.dedup();
            ensure!(sorted.len() == seeds.len(), "seeds lists a seed twice");
        }
        let overlap = |a: &str, b: &str| {
            a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
        };
        let mut keys: Vec<&str> = Vec::new();
        for (i, axis) in self.axes.iter().enumerate() {
            ensure!(
                axis.config_key() != "seed" || self.seeds.is_none(),
                "seed is both an axis and `seeds`: give the seeds in `seeds` only"
            );
            ensure!(
                !keys.contains(&axis.key.as_str()),
                "two axes are named {}",
                axis.key
            );
            // Axes that both name their key may write into the same part of the
            // configuration, the later winning where both set a value (a per-method step:
            // the method axis after the step axis); otherwise an overlap is a mistake.
            for other in &self.axes[..i] {
                ensure!(
                    !overlap(axis.config_key(), other.config_key())
                        || (axis.into.is_some() && other.into.is_some()),
                    "axes {} and {} overlap (give both a `key` to let the later one override the earlier)",
                    other.key,
                    axis.key
                );
            }
            keys.push(&axis.key);
            // A keyed axis writes only the settings its values hold; another axis, the
            // whole of its key.
            let written: Vec<String> = match axis.into {
                Some(_) => axis
                    .values
                    .iter()
                    .flat_map(|v| flatten(axis.config_key(), v))
                    .map(|(k, _)| k)
                    .collect(),
                None => vec![axis.config_key().to_owned()],
            };
            if let Some((key, _)) = self
                .set
                .iter()
                .find(|(k, _)| written.iter().any(|w| overlap(k, w)))
            {
                bail!(
                    "{key} is set in [set] and varied by axis {}: keep one",
                    axis.key
                );
            }
        }
        let named = |what: &str, key: &str| -> Result<()> {
            ensure!(
                self.axis_index(key).is_some(),
                "{what} names {key}, which is not an axis (the axes: {})",
                keys.join(", ")
            );
            Ok(())
        };
        if let Some(search) = &self.search {
            named("[search] axis", &search.axis)?;
        }
        if let Some(reach) = self.reach {
            ensure!(
                reach > 0.0 && reach <= 1.0,
                "reach is a held-out accuracy in (0, 1], not {reach}"
            );
        }
        let f = &self.figures;
        let asked = self
            .search
            .iter()
            .map(|s| (s.criterion, "[search] criterion"));
        let drawn = f
            .metrics
            .iter()
            .flatten()
            .map(|&m| (m, "[figures] metrics"));
        if let Some((_, what)) = asked
            .chain(drawn)
            .find(|(m, _)| *m == Metric::ReachIteration)
        {
            ensure!(
                self.reach.is_some(),
                "{what} names reach-iteration, but the spec sets no reach (reach = 0.99: the held-out accuracy to reach)"
            );
        }
        for key in f.heatmap.iter().flatten() {
            named("[figures] heatmap", key)?;
        }
        if let Some(h) = &f.heatmap {
            ensure!(
                h.len() == 2 && h[0] != h[1],
                "[figures] heatmap takes two different axes, x then y"
            );
        }
        for (what, key) in [("winner", &f.winner), ("curves", &f.curves)] {
            if let Some(key) = key {
                named(&format!("[figures] {what}"), key)?;
            }
        }
        Ok(())
    }
}

/// An axis from its spec: a list of values, or a range table.
fn axis(key: &str, value: toml::Value) -> Result<Axis> {
    let mut into = None;
    let (values, labels, log) = match value {
        toml::Value::Array(values) => (values, None, false),
        toml::Value::Table(t) => {
            let r: RangeSpec = toml::Value::Table(t)
                .try_into()
                .context("expected a list of values, or a table with log = [a, b] and points, linear = [a, b] and points, or values (and labels)")?;
            if let Some(k) = &r.key {
                ensure!(
                    !k.is_empty() && k.split('.').all(|part| !part.is_empty()),
                    "key {k:?} is not a dotted config key"
                );
            }
            into = r.key;
            match (r.log, r.linear, r.values) {
                (Some(ends), None, None) => (range(&ends, r.points, true)?, r.labels, true),
                (None, Some(ends), None) => (range(&ends, r.points, false)?, r.labels, false),
                (None, None, Some(values)) => {
                    ensure!(r.points.is_none(), "points goes with log or linear ranges");
                    (values, r.labels, false)
                }
                _ => bail!("give exactly one of log, linear and values"),
            }
        }
        other => bail!("expected a list of values or a range table, not {other}"),
    };
    ensure!(!values.is_empty(), "no values");
    let labels = match labels {
        Some(l) => {
            ensure!(
                l.len() == values.len(),
                "{} labels for {} values",
                l.len(),
                values.len()
            );
            l
        }
        None => values.iter().map(label_of).collect(),
    };
    for (i, a) in labels.iter().enumerate() {
        ensure!(!a.is_empty(), "value {} has an empty label", values[i]);
        if let Some(j) = labels[..i].iter().position(|b| b == a) {
            bail!(
                "values {} and {} have the same label {a:?}",
                values[j],
                values[i]
            );
        }
    }
    Ok(Axis {
        key: key.to_owned(),
        into,
        values,
        labels,
        log,
    })
}

/// `points` values from `ends[0]` to `ends[1]`, evenly spaced on a log or linear scale.
/// With integer ends the values are integers (rounded); floats keep 6 significant digits
/// on a log scale (so 10^-3 is 0.001, not 0.0010000000000000002), 12 on a linear one.
fn range(ends: &[toml::Value; 2], points: Option<usize>, log: bool) -> Result<Vec<toml::Value>> {
    let points = points.context("a range needs points = N (how many values)")?;
    ensure!(points >= 1, "points must be at least 1");
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Ok(*f),
        other => bail!("range ends must be finite numbers, not {other}"),
    };
    let (a, b) = (number(&ends[0])?, number(&ends[1])?);
    if log {
        ensure!(a > 0.0 && b > 0.0, "log range ends must be positive");
    }
    let integers = ends.iter().all(|v| v.is_integer());
    let at = |i: usize| {
        let u = if points == 1 {
            0.0
        } else {
            i as f64 / (points - 1) as f64
        };
        if log {
            (a.ln() + u * (b.ln() - a.ln())).exp()
        } else {
            a + u * (b - a)
        }
    };
    let mut out: Vec<toml::Value> = Vec::new();
    for i in 0..points {
        let v = at(i);
        let value = if integers {
            toml::Value::Integer(v.round() as i64)
        } else {
            let digits = if log { 5 } else { 11 };
            toml::Value::Float(format!("{v:.digits$e}").parse()?)
        };
        ensure!(
            !out.contains(&value),
            "the range gives {value} twice: fewer points, or float ends"
        );
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_keep_their_order_and_ranges_expand() {
        let spec = Spec::parse(
            "preset = \"adding-30-tp\"\nseeds = [1, 2]\n[set]\niterations = 20\nhyper.tp.lr_target = 0.1\n\
             [axes]\nhidden = { log = [16, 512], points = 6 }\n\"hyper.opt.lr\" = { log = [1e-4, 1e1], points = 6 }\n\
             hyper.method = [\"tp\", \"bp\"]\nhyper.tp.reg = { linear = [0.5, 1.5], points = 3 }\n",
        )
        .unwrap();
        let keys: Vec<&str> = spec.axes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["hidden", "hyper.opt.lr", "hyper.method", "hyper.tp.reg"]
        );
        assert_eq!(spec.axes[0].labels, ["16", "32", "64", "128", "256", "512"]);
        assert_eq!(
            spec.axes[1].labels,
            ["1e-4", "1e-3", "0.01", "0.1", "1", "10"]
        );
        assert_eq!(spec.axes[3].labels, ["0.5", "1", "1.5"]);
        assert_eq!(spec.set.len(), 2);
    }

    #[test]
    fn bad_specs_name_what_is_wrong() {
        let err = |text: &str| format!("{:#}", Spec::parse(text).unwrap_err());
        assert!(err("sedes = [1]").contains("sedes"));
        assert!(err("[axes]\nlr = { log = [0, 1], points = 3 }").contains("positive"));
        assert!(
            err("[axes]\nlr = [1]\n[search]\naxis = \"reg\"\ncriterion = \"accuracy-auc\"")
                .contains("reg")
        );
        assert!(
            err("[axes]\nlr = [1]\n[search]\naxis = \"lr\"\ncriterion = \"best\"").contains("best")
        );
        assert!(err("[set]\nhidden = 3\n[axes]\nhidden = [1, 2]").contains("hidden"));
    }
}
