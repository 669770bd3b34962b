//! The paper's figures, drawn from run directories: training loss and evaluation
//! accuracy (or MSE) against iterations, one curve per run or per group of runs (their
//! mean, with a band from their smallest to their largest value), the cosine of each
//! method's gradient with BPTT's where runs measured it, and a heat map of the per-step
//! norms of each run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::plot::{band_chart, heat_map, line_chart, BandSeries, Series};
use crate::run_dir::is_log_header;

/// One run's log, read back from its `log.csv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunLog {
    /// (iteration, seconds of training by then).
    pub elapsed: Vec<(f64, f64)>,
    /// (iteration, train loss).
    pub train_loss: Vec<(f64, f64)>,
    /// (iteration, eval loss).
    pub eval_loss: Vec<(f64, f64)>,
    /// (iteration, eval accuracy).
    pub eval_accuracy: Vec<(f64, f64)>,
    /// (iteration, cosine of the method's gradient with BPTT's), from `alignment.csv`
    /// where the run has one.
    pub cosine: Vec<(f64, f64)>,
}

impl RunLog {
    /// The highest finite held-out accuracy of any evaluation.
    pub fn best_eval_accuracy(&self) -> Option<f64> {
        self.eval_accuracy
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }

    /// The last iteration with a training or held-out loss.
    pub fn last_iteration(&self) -> Option<u64> {
        let last = |v: &Vec<(f64, f64)>| v.last().map(|p| p.0 as u64);
        last(&self.train_loss).max(last(&self.eval_loss))
    }
}

/// Reads `dir/log.csv`, and `dir/alignment.csv` where there is one.
pub fn read_log(dir: &Path) -> Result<RunLog> {
    let path = dir.join("log.csv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    if !lines.next().is_some_and(is_log_header) {
        anyhow::bail!("{} does not start with the tpri log header", path.display());
    }
    let mut log = RunLog::default();
    for line in lines {
        let f: Vec<Option<f64>> = line.split(',').map(|v| v.parse().ok()).collect();
        let Some(&Some(it)) = f.first() else { continue };
        let push = |col: usize, to: &mut Vec<(f64, f64)>| {
            if let Some(&Some(v)) = f.get(col) {
                to.push((it, v));
            }
        };
        push(1, &mut log.elapsed);
        push(2, &mut log.train_loss);
        push(3, &mut log.eval_loss);
        push(4, &mut log.eval_accuracy);
    }
    let alignment = dir.join("alignment.csv");
    if alignment.exists() {
        let text = std::fs::read_to_string(&alignment)
            .with_context(|| format!("cannot read {}", alignment.display()))?;
        log.cosine = text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split(',').map(|v| v.parse::<f64>().ok());
                Some((f.next()??, f.next()??))
            })
            .collect();
    }
    Ok(log)
}

/// Reads `dir/step_norms.csv`: (iteration, norms for t = 1 … T) per row.
pub fn read_step_norms(dir: &Path) -> Result<Vec<(f64, Vec<f64>)>> {
    let path = dir.join("step_norms.csv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut f = line
                .split(',')
                .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
            Some((f.next()?, f.collect()))
        })
        .collect())
}

/// The values several runs' curves take at each iteration any of them logged, in
/// iteration order (a run that logged none there, or stopped before, adds nothing).
pub fn pooled<'a>(curves: impl IntoIterator<Item = &'a [(f64, f64)]>) -> Vec<(f64, Vec<f64>)> {
    let mut at: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for curve in curves {
        for &(it, v) in curve.iter().filter(|p| p.1.is_finite()) {
            at.entry(it as u64).or_default().push(v);
        }
    }
    at.into_iter().map(|(it, v)| (it as f64, v)).collect()
}

/// Draws the comparison figures of `runs` (label, run directory) into `out`; returns the
/// files written. `regression` labels the evaluation panel as MSE rather than accuracy.
pub fn draw(runs: &[(String, PathBuf)], out: &Path, regression: bool) -> Result<Vec<PathBuf>> {
    let groups: Vec<(String, Vec<PathBuf>)> = runs
        .iter()
        .map(|(label, dir)| (label.clone(), vec![dir.clone()]))
        .collect();
    draw_groups(&groups, out, regression)
}

/// [`draw`] for groups of runs (label, run directories): a group of one run is its
/// curve; as soon as one group holds several, each group is the mean of its runs at every
/// iteration with a band from their smallest to their largest value (seeds of one
/// setting, say). Each run with a `step_norms.csv` gets its own heat map of per-step
/// norms.
pub fn draw_groups(
    groups: &[(String, Vec<PathBuf>)],
    out: &Path,
    regression: bool,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let logs = groups
        .iter()
        .map(|(label, dirs)| {
            let logs = dirs
                .iter()
                .map(|d| read_log(d))
                .collect::<Result<Vec<_>>>()?;
            Ok((label.clone(), logs))
        })
        .collect::<Result<Vec<_>>>()?;
    let banded = groups.iter().any(|(_, dirs)| dirs.len() > 1);
    let mut written = Vec::new();
    let mut chart = |stem: &str,
                     title: &str,
                     y: &str,
                     pick: fn(&RunLog) -> &[(f64, f64)],
                     log_y: bool|
     -> Result<()> {
        let path = out.join(stem);
        if banded {
            let mut series: Vec<BandSeries> = logs
                .iter()
                .map(|(label, runs)| BandSeries {
                    label: match runs.len() {
                        1 => format!("{label} (1 run)"),
                        n => format!("{label} ({n} runs)"),
                    },
                    points: pooled(runs.iter().map(pick))
                        .into_iter()
                        .map(|(it, v)| {
                            let mean = v.iter().sum::<f64>() / v.len() as f64;
                            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                            (it, mean, lo, hi)
                        })
                        .collect(),
                })
                .collect();
            keep_drawn(&mut series, |s| s.points.is_empty());
            let title = format!("{title} (mean, min to max over runs)");
            band_chart(&path, &title, ("iteration", y), &series, log_y)?;
        } else {
            let mut series: Vec<Series> = logs
                .iter()
                .flat_map(|(label, runs)| {
                    runs.iter().map(|log| Series {
                        label: label.clone(),
                        points: pick(log).to_vec(),
                    })
                })
                .collect();
            keep_drawn(&mut series, |s| s.points.is_empty());
            line_chart(&path, title, "iteration", y, &series, log_y)?;
        }
        written.extend(with_suffixes(&path));
        Ok(())
    };
    chart(
        "train_loss",
        "Training loss",
        "train loss",
        |l| &l.train_loss,
        true,
    )?;
    if regression {
        chart(
            "eval_mse",
            "Evaluation MSE",
            "eval MSE",
            |l| &l.eval_loss,
            true,
        )?;
    } else {
        chart(
            "eval_accuracy",
            "Evaluation accuracy",
            "eval accuracy",
            |l| &l.eval_accuracy,
            false,
        )?;
        chart(
            "eval_loss",
            "Evaluation loss",
            "eval loss",
            |l| &l.eval_loss,
            true,
        )?;
    }
    if logs
        .iter()
        .flat_map(|(_, runs)| runs)
        .any(|l| !l.cosine.is_empty())
    {
        chart(
            "grad_cosine",
            "Cosine of the method's gradient with BPTT's (--alignment)",
            "cos(g, ∇ℓ)",
            |l| &l.cosine,
            false,
        )?;
    }
    for (label, dirs) in groups {
        for dir in dirs.iter().filter(|d| d.join("step_norms.csv").exists()) {
            let rows = read_step_norms(dir)?;
            if rows.is_empty() {
                continue;
            }
            // In a group, each run is named by its directory beside the group's label.
            let name = match dirs.len() {
                1 => label.clone(),
                _ => format!(
                    "{label} {}",
                    dir.file_name().map_or_else(
                        || dir.display().to_string(),
                        |n| n.to_string_lossy().into_owned()
                    )
                ),
            };
            let path = out.join(format!("step_norms_{}", sanitize(&name)));
            heat_map(
                &path,
                &format!("{name}: per-step norms (TP: ‖v_t − h_t‖, BP: ‖∂ℓ/∂h_t‖)"),
                &rows,
                true,
            )?;
            written.extend(with_suffixes(&path));
        }
    }
    Ok(written)
}

/// Leaves out the series with nothing to draw (runs without an alignment.csv in the
/// cosine's figure), so that the legend names only lines; all of them stay when none has.
fn keep_drawn<T>(series: &mut Vec<T>, empty: impl Fn(&T) -> bool) {
    if series.iter().any(|s| !empty(s)) {
        series.retain(|s| !empty(s));
    }
}

/// The two files a figure stem becomes (a stem may hold dots, as in `reg_0.1`).
fn with_suffixes(stem: &Path) -> [PathBuf; 2] {
    ["svg", "png"].map(|e| PathBuf::from(format!("{}.{e}", stem.display())))
}

/// A label as a file-name fragment.
fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
