//! Gathering a sweep: each run's outcome from its run directory, DIR/results.csv, the
//! per-cell search (DIR/search.csv), and statistics over seeds for the figures.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::figures::RunLog;
use crate::tensor_file::write_atomic;

use super::manifest::{run_dir, Manifest, RunEntry, Status};
use super::metric::Metric;
use super::value::{csv_field, csv_number};

/// What one run gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Whether the run finished: only finished runs rank, heat-map and search.
    pub finished: bool,
    /// Final training loss (finished runs).
    pub train_loss: Option<f64>,
    /// Final held-out loss.
    pub eval_loss: Option<f64>,
    /// Final held-out accuracy.
    pub eval_accuracy: Option<f64>,
    /// Area under the held-out accuracy curve over the iteration span, per iteration.
    pub accuracy_auc: Option<f64>,
    /// Area under the logged training loss curve over the iteration span, per iteration.
    pub train_loss_auc: Option<f64>,
    /// The highest held-out accuracy of any evaluation (so far, for a run that has not
    /// finished).
    pub best_eval_accuracy: Option<f64>,
    /// The iteration of the first evaluation whose held-out accuracy reaches the
    /// manifest's `reach` (a failed run's too: it may have learned, then diverged).
    pub reach_iteration: Option<u64>,
    /// The mean over the run of the cosine of its gradient with BPTT's, where it measured
    /// it (`alignment`; finished runs).
    pub mean_cosine: Option<f64>,
    /// Iterations completed (for unfinished runs, the last logged one).
    pub iterations: Option<u64>,
    /// Seconds of training.
    pub wall_seconds: Option<f64>,
    /// Seconds an iteration over the last ten logged rows (unfinished runs).
    pub pace: Option<f64>,
}

impl Outcome {
    /// The value of `metric`, if the run finished and has it.
    pub fn metric(&self, metric: Metric) -> Option<f64> {
        if !self.finished {
            return None;
        }
        match metric {
            Metric::FinalTrainLoss => self.train_loss,
            Metric::FinalEvalLoss => self.eval_loss,
            Metric::FinalEvalAccuracy => self.eval_accuracy,
            Metric::AccuracyAuc => self.accuracy_auc,
            Metric::TrainLossAuc => self.train_loss_auc,
            Metric::BestEvalAccuracy => self.best_eval_accuracy,
            Metric::ReachIteration => self.reach_iteration.map(|i| i as f64),
            Metric::WallSeconds => self.wall_seconds,
        }
        .filter(|v| v.is_finite())
    }

    /// ": train loss …, held-out loss …, accuracy …, best …, first ≥ `reach` at …, mean
    /// cosine with BPTT's gradient …", as far as the run has them; empty when it has none.
    pub fn brief(&self, reach: Option<f64>) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.train_loss {
            parts.push(format!("train loss {v:.4}"));
        }
        if let Some(v) = self.eval_loss {
            parts.push(format!("held-out loss {v:.4}"));
        }
        if let Some(v) = self.eval_accuracy {
            let best = self
                .best_eval_accuracy
                .map_or(String::new(), |b| format!(", best {b:.4}"));
            let at = reach
                .zip(self.reach_iteration)
                .map_or(String::new(), |(r, i)| format!(", first ≥ {r} at {i}"));
            parts.push(format!("accuracy {v:.4}{best}{at}"));
        }
        if let Some(v) = self.mean_cosine {
            parts.push(format!("mean cosine with BPTT's gradient {v:.4}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        }
    }
}

/// A run's outcome: metrics from its summary.json and `log` (its log.csv, as
/// `figures::read_log` reads it) when it finished; the last logged iteration, the best
/// evaluation and the first to `reach` (the manifest's) otherwise.
pub fn outcome(dir: &Path, run: &RunEntry, log: Option<&RunLog>, reach: Option<f64>) -> Outcome {
    let rd = run_dir(dir, &run.name);
    let best_eval_accuracy = log.and_then(RunLog::best_eval_accuracy);
    let reach_iteration = log
        .zip(reach)
        .and_then(|(l, r)| first_reaching(&l.eval_accuracy, r));
    if run.status != Status::Finished {
        return Outcome {
            best_eval_accuracy,
            reach_iteration,
            iterations: log.and_then(RunLog::last_iteration),
            pace: log.and_then(|l| pace(&l.elapsed)),
            ..Outcome::default()
        };
    }
    let summary: serde_json::Value = std::fs::read_to_string(rd.join("summary.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // The final values are log.csv's, the record the curves and AUCs are read from too;
    // summary.json's serve if it lacks them.
    let end = run.iterations as f64;
    let at_end = |points: Option<&Vec<(f64, f64)>>| {
        points.and_then(|p| p.last().filter(|p| p.0 == end).map(|p| p.1))
    };
    let last = &summary["last"];
    Outcome {
        finished: true,
        train_loss: at_end(log.map(|l| &l.train_loss)).or_else(|| last["train_loss"].as_f64()),
        eval_loss: at_end(log.map(|l| &l.eval_loss)).or_else(|| last["eval"]["loss"].as_f64()),
        eval_accuracy: at_end(log.map(|l| &l.eval_accuracy))
            .or_else(|| last["eval"]["accuracy"].as_f64()),
        accuracy_auc: log.and_then(|l| curve_mean(&l.eval_accuracy)),
        train_loss_auc: log.and_then(|l| curve_mean(&l.train_loss)),
        best_eval_accuracy,
        reach_iteration,
        mean_cosine: log.and_then(|l| curve_mean(&l.cosine)),
        iterations: summary["iterations"].as_u64(),
        wall_seconds: summary["wall_seconds"].as_f64(),
        pace: None,
    }
}

/// The trapezoid area under (iteration, value) divided by the iteration span: the mean
/// of the curve over the run. One point gives its value; none, `None`.
pub fn curve_mean(points: &[(f64, f64)]) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    let span = last.0 - first.0;
    if span <= 0.0 {
        return Some(last.1);
    }
    let area: f64 = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Some(area / span)
}

/// Seconds an iteration between the tenth-last and the last (iteration, elapsed) rows,
/// so that a run resumed, or slowed by a neighbour earlier, is timed as it goes now.
fn pace(elapsed: &[(f64, f64)]) -> Option<f64> {
    let last = elapsed.last()?;
    let from = elapsed[elapsed.len().saturating_sub(11)];
    let rate = (last.1 - from.1) / (last.0 - from.0);
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// The iteration of the first point whose value is at least `mark`.
fn first_reaching(points: &[(f64, f64)], mark: f64) -> Option<u64> {
    points.iter().find(|p| p.1 >= mark).map(|p| p.0 as u64)
}

/// The columns a CSV with a row per run (or several) starts with: `name`, one per axis,
/// `seed`, `status`.
pub(super) fn run_columns(m: &Manifest) -> Vec<String> {
    let mut header: Vec<String> = vec!["name".into()];
    header.extend(m.axes.iter().map(|a| a.key.clone()));
    header.extend(["seed".into(), "status".into()]);
    header
}

/// `run`'s values of `run_columns`: its name, its value's label on each axis, its seed and
/// its status.
pub(super) fn run_fields(m: &Manifest, run: &RunEntry) -> Vec<String> {
    let mut row = vec![run.name.clone()];
    row.extend(
        m.axes
            .iter()
            .zip(&run.cell)
            .map(|(a, &i)| a.labels[i].clone()),
    );
    row.extend([run.seed.to_string(), run.status.name().into()]);
    row
}

/// Writes DIR/results.csv: one row per run, in grid order.
pub fn write_results(dir: &Path, m: &Manifest, outcomes: &[Outcome]) -> Result<()> {
    let mut header = run_columns(m);
    header.extend(
        [
            "final_train_loss",
            "final_eval_loss",
            "final_eval_accuracy",
            "accuracy_auc",
            "train_loss_auc",
            "best_eval_accuracy",
            "reach_iteration",
            "mean_cosine",
            "iterations",
            "wall_seconds",
            "error",
        ]
        .map(String::from),
    );
    let mut text = line(&header);
    for (run, o) in m.runs.iter().zip(outcomes) {
        let mut row = run_fields(m, run);
        row.extend([
            csv_number(o.train_loss),
            csv_number(o.eval_loss),
            csv_number(o.eval_accuracy),
            csv_number(o.accuracy_auc),
            csv_number(o.train_loss_auc),
            csv_number(o.best_eval_accuracy),
            o.reach_iteration.map(|i| i.to_string()).unwrap_or_default(),
            csv_number(o.mean_cosine),
            o.iterations.map(|i| i.to_string()).unwrap_or_default(),
            csv_number(o.wall_seconds),
            run.error.clone().unwrap_or_default(),
        ]);
        text += &line(&row);
    }
    write_atomic(&dir.join("results.csv"), text.as_bytes())
}

/// One CSV line of `fields`, quoted where they need it.
pub(super) fn line(fields: &[String]) -> String {
    let f: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    format!("{}\n", f.join(","))
}

/// A metric over the seeds of one cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Mean over the seeds that have the metric.
    pub mean: f64,
    /// Standard deviation over them (0 for one seed).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Seeds with the metric.
    pub n: usize,
    /// Whether every seed of the cell has it (finished, with a finite value).
    pub complete: bool,
}

impl Stat {
    /// The statistics of `values`, out of `of` seeds.
    pub fn of(values: &[f64], of: usize) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        Some(Self {
            mean,
            std: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n,
            complete: n == of,
        })
    }
}

/// For every cell (axis value indices) of the grid, what `value` gives of its runs (those
/// that give something) and how many runs, one a seed, the cell has.
pub fn by_cell<T>(
    m: &Manifest,
    outcomes: &[Outcome],
    value: impl Fn(&Outcome) -> Option<T>,
) -> BTreeMap<Vec<usize>, (Vec<T>, usize)> {
    let mut cells: BTreeMap<Vec<usize>, (Vec<T>, usize)> = BTreeMap::new();
    for (run, o) in m.runs.iter().zip(outcomes) {
        let slot = cells
            .entry(run.cell.clone())
            .or_insert_with(|| (Vec::new(), 0));
        slot.1 += 1;
        slot.0.extend(value(o));
    }
    cells
}

/// `metric` over seeds for every cell of the grid.
pub fn cell_stats(
    m: &Manifest,
    outcomes: &[Outcome],
    metric: Metric,
) -> BTreeMap<Vec<usize>, Stat> {
    by_cell(m, outcomes, |o| o.metric(metric))
        .into_iter()
        .filter_map(|(cell, (v, of))| Some((cell, Stat::of(&v, of)?)))
        .collect()
}

/// The best value of the searched axis in one cell of the other axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The cell: an index on every axis, the searched one's being the best value's
    /// (or 0 when no value finished on every seed).
    pub cell: Vec<usize>,
    /// Index of the best value, if any value finished on every seed.
    pub best: Option<usize>,
    /// The criterion over seeds at the best value.
    pub stat: Option<Stat>,
    /// Values that finished on every seed, of all the values searched.
    pub complete: (usize, usize),
}

/// For every cell of the other axes, the value of `axis` whose criterion, averaged over
/// seeds, is best. Values where some seed failed or has not finished are not eligible.
pub fn search(
    stats: &BTreeMap<Vec<usize>, Stat>,
    m: &Manifest,
    axis: usize,
    higher: bool,
) -> Vec<Choice> {
    let n = m.axes[axis].values.len();
    let mut outer: Vec<Vec<usize>> = m
        .runs
        .iter()
        .map(|r| {
            let mut c = r.cell.clone();
            c[axis] = 0;
            c
        })
        .collect();
    outer.sort();
    outer.dedup();
    outer
        .into_iter()
        .map(|cell| {
            let candidates: Vec<(usize, Stat)> = (0..n)
                .filter_map(|j| {
                    let mut c = cell.clone();
                    c[axis] = j;
                    stats.get(&c).filter(|s| s.complete).map(|s| (j, *s))
                })
                .collect();
            let best = candidates.iter().copied().reduce(|a, b| {
                let better = if higher {
                    b.1.mean > a.1.mean
                } else {
                    b.1.mean < a.1.mean
                };
                if better {
                    b
                } else {
                    a
                }
            });
            let mut cell = cell;
            if let Some((j, _)) = best {
                cell[axis] = j;
            }
            Choice {
                cell,
                best: best.map(|b| b.0),
                stat: best.map(|b| b.1),
                complete: (candidates.len(), n),
            }
        })
        .collect()
}

/// Writes DIR/search.csv: per cell of the other axes, the best value and its criterion.
pub fn write_search(
    dir: &Path,
    m: &Manifest,
    axis: usize,
    metric: Metric,
    choices: &[Choice],
) -> Result<()> {
    let key = &m.axes[axis].key;
    let name = metric.name().replace('-', "_");
    let mut header: Vec<String> = m
        .axes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, a)| a.key.clone())
        .collect();
    header.extend([
        format!("best_{key}"),
        format!("{name}_mean"),
        format!("{name}_std"),
        "seeds".into(),
        "values_finished".into(),
        "values".into(),
    ]);
    let mut text = line(&header);
    for c in choices {
        let mut row: Vec<String> = m
            .axes
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != axis)
            .map(|(i, a)| a.labels[c.cell[i]].clone())
            .collect();
        row.extend([
            c.best
                .map(|b| m.axes[axis].labels[b].clone())
                .unwrap_or_default(),
            csv_number(c.stat.map(|s| s.mean)),
            csv_number(c.stat.map(|s| s.std)),
            c.stat.map(|s| s.n.to_string()).unwrap_or_default(),
            c.complete.0.to_string(),
            c.complete.1.to_string(),
        ]);
        text += &line(&row);
    }
    write_atomic(&dir.join("search.csv"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_the_mean_accuracy_over_the_span() {
        assert_eq!(curve_mean(&[]), None);
        assert_eq!(curve_mean(&[(0.0, 0.5)]), Some(0.5));
        let auc = curve_mean(&[(0.0, 0.0), (100.0, 1.0), (200.0, 1.0)]).unwrap();
        assert!((auc - 0.75).abs() < 1e-12);
    }

    #[test]
    fn best_and_first_reaching_read_the_evaluations() {
        let curve = [
            (0.0, 0.2),
            (500.0, 0.99),
            (1000.0, f64::NAN),
            (1500.0, 0.995),
        ];
        let log = |eval_accuracy: &[(f64, f64)]| RunLog {
            eval_accuracy: eval_accuracy.to_vec(),
            ..RunLog::default()
        };
        assert_eq!(log(&curve).best_eval_accuracy(), Some(0.995));
        assert_eq!(first_reaching(&curve, 0.99), Some(500));
        assert_eq!(first_reaching(&curve, 0.995), Some(1500));
        assert_eq!(first_reaching(&curve, 0.999), None);
        assert_eq!(log(&[]).best_eval_accuracy(), None);
    }

    #[test]
    fn the_pace_is_the_last_ten_rows() {
        // Slow at first (a neighbour), then 0.25 s an iteration for the last ten rows.
        let mut rows: Vec<(f64, f64)> = (0..5)
            .map(|i| (i as f64 * 100.0, i as f64 * 400.0))
            .collect();
        let (i0, e0) = rows[4];
        rows.extend((1..=10).map(|k| (i0 + 100.0 * k as f64, e0 + 25.0 * k as f64)));
        assert_eq!(pace(&rows), Some(0.25));
        assert_eq!(pace(&rows[..1]), None);
        assert_eq!(pace(&[]), None);
    }
}
