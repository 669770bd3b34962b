//! DIR/evaluations.csv: every held-out evaluation of every run, a row each — the numbers
//! behind the `curves_*` figures, in the long form a notebook reads; and
//! DIR/evaluations.md: for each cell of the grid, its seeds' values at each evaluation,
//! the table a report quotes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::figures::RunLog;
use crate::tensor_file::write_atomic;

use super::collect::{line, run_columns, run_fields};
use super::manifest::Manifest;
use super::summary::cell_names;
use super::value::csv_number;

/// The most evaluations evaluations.md shows a column each; more are thinned to round
/// iterations (`thinned`), keeping the first and the last.
const MD_COLUMNS: usize = 10;

/// One held-out evaluation of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evaluation {
    /// The iteration it was made at.
    pub iteration: u64,
    /// Held-out loss.
    pub loss: Option<f64>,
    /// Held-out accuracy.
    pub accuracy: Option<f64>,
    /// Cosine of the run's gradient with BPTT's (runs with `alignment`).
    pub cosine: Option<f64>,
}

/// The evaluations in a run's log, in the order of their iterations: every iteration
/// with a held-out loss, accuracy or cosine.
pub fn of_log(log: &RunLog) -> Vec<Evaluation> {
    let mut at: BTreeMap<u64, Evaluation> = BTreeMap::new();
    let mut fill = |points: &[(f64, f64)], set: fn(&mut Evaluation, f64)| {
        for &(i, v) in points {
            let iteration = i as u64;
            set(
                at.entry(iteration).or_insert(Evaluation {
                    iteration,
                    ..Evaluation::default()
                }),
                v,
            );
        }
    };
    fill(&log.eval_loss, |e, v| e.loss = Some(v));
    fill(&log.eval_accuracy, |e, v| e.accuracy = Some(v));
    fill(&log.cosine, |e, v| e.cosine = Some(v));
    at.into_values().collect()
}

/// Writes DIR/evaluations.csv and DIR/evaluations.md from the runs' evaluations
/// (`evals[i]` run i's: `of_log` of its log); returns the files written.
pub fn write(dir: &Path, m: &Manifest, evals: &[Vec<Evaluation>]) -> Result<Vec<PathBuf>> {
    let csv = dir.join("evaluations.csv");
    write_atomic(&csv, long_table(m, evals).as_bytes())?;
    let md = dir.join("evaluations.md");
    write_atomic(&md, seed_table(m, evals).as_bytes())?;
    Ok(vec![csv, md])
}

/// evaluations.csv: `name`, a column per axis, `seed`, `status`, `iteration`,
/// `eval_loss`, `eval_accuracy`, `grad_cosine`; runs in grid order.
fn long_table(m: &Manifest, evals: &[Vec<Evaluation>]) -> String {
    let mut header = run_columns(m);
    header.extend(["iteration", "eval_loss", "eval_accuracy", "grad_cosine"].map(String::from));
    let mut text = line(&header);
    for (run, evals) in m.runs.iter().zip(evals) {
        let first = run_fields(m, run);
        for e in evals {
            let mut row = first.clone();
            row.extend([
                e.iteration.to_string(),
                csv_number(e.loss),
                csv_number(e.accuracy),
                csv_number(e.cosine),
            ]);
            text += &line(&row);
        }
    }
    text
}

/// evaluations.md: a row per cell, a column per evaluation (at most `MD_COLUMNS`), and
/// in each the cell's seeds' held-out accuracy in percent — or, for runs without one,
/// their held-out loss — seed after seed in increasing order, `·` where a seed has no
/// evaluation there (not run yet, or stopped before it).
fn seed_table(m: &Manifest, evals: &[Vec<Evaluation>]) -> String {
    let accuracy = evals.iter().flatten().any(|e| e.accuracy.is_some());
    let value = |e: &Evaluation| {
        if accuracy {
            e.accuracy.map(|a| format!("{:.1}", 100.0 * a))
        } else {
            e.loss.map(|l| format!("{l:.4}"))
        }
    };
    let mut iterations: Vec<u64> = evals.iter().flatten().map(|e| e.iteration).collect();
    iterations.sort_unstable();
    iterations.dedup();
    let columns = thinned(&iterations, MD_COLUMNS);
    let names = cell_names(m);
    let mut seeds: Vec<u64> = m.runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut cells: BTreeMap<&[usize], BTreeMap<u64, &[Evaluation]>> = BTreeMap::new();
    for (run, e) in m.runs.iter().zip(evals) {
        cells.entry(&run.cell).or_default().insert(run.seed, e);
    }
    let what = if accuracy {
        "Held-out accuracy (%)"
    } else {
        "Held-out loss"
    };
    let mut text = format!(
        "{what} at each evaluation; in each cell the seeds' values, seeds {} in that \
         order (· where a seed has no evaluation there).\n\n| cell |",
        seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for i in &columns {
        text += &format!(" {i} |");
    }
    text += "\n|---|";
    text += &"---|".repeat(columns.len());
    text += "\n";
    for (cell, runs) in cells {
        text += &format!("| {} |", names.get(cell).map_or("all runs", |n| n.as_str()));
        for &i in &columns {
            let at: Vec<String> = seeds
                .iter()
                .map(|s| {
                    runs.get(s)
                        .and_then(|e| e.iter().find(|e| e.iteration == i))
                        .and_then(value)
                        .unwrap_or_else(|| "·".into())
                })
                .collect();
            text += &format!(" {} |", at.join(", "));
        }
        text += "\n";
    }
    text
}

/// At most `most` (at least 2) of `all` (sorted), the first and the last kept: where the
/// evaluations fall on round iterations, those at the multiples of the smallest round
/// stride (1, 2 or 5 times a power of ten) that fits, so that the columns read 0, 5000,
/// 10000, … rather than 0, 5500, 10500, …; otherwise evenly spread by index.
fn thinned(all: &[u64], most: usize) -> Vec<u64> {
    if all.len() <= most {
        return all.to_vec();
    }
    let (first, last) = (all[0], all[all.len() - 1]);
    let at_stride = |stride: u64| -> Vec<u64> {
        all.iter()
            .copied()
            .filter(|&i| i == first || i == last || i % stride == 0)
            .collect()
    };
    let strides = (0..19u32)
        .map(|k| 10u64.pow(k))
        .flat_map(|p| [p, 2 * p, 5 * p])
        .take_while(|&s| s <= last);
    for stride in strides {
        let picked = at_stride(stride);
        if picked.len() <= most {
            // Too few columns means the evaluations are not on round iterations.
            if picked.len() > most / 2 {
                return picked;
            }
            break;
        }
    }
    let end = all.len() - 1;
    let mut picked: Vec<u64> = (0..most)
        .map(|k| all[(k * end + (most - 1) / 2) / (most - 1)])
        .collect();
    picked.dedup();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_gives_one_evaluation_per_iteration_with_its_values() {
        let log = RunLog {
            eval_loss: vec![(0.0, 2.3), (5.0, 1.9)],
            eval_accuracy: vec![(0.0, 0.25), (5.0, 0.5)],
            cosine: vec![(5.0, 0.9)],
            ..RunLog::default()
        };
        let e = of_log(&log);
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].iteration, e[0].loss, e[0].cosine),
            (0, Some(2.3), None)
        );
        assert_eq!(
            (e[1].iteration, e[1].accuracy, e[1].cosine),
            (5, Some(0.5), Some(0.9))
        );
    }

    #[test]
    fn thinning_keeps_the_ends_and_round_iterations() {
        let every =
            |step: u64, last: u64| -> Vec<u64> { (0..=last / step).map(|k| k * step).collect() };
        let t = thinned(&every(1000, 40_000), 10);
        assert_eq!(t, every(5000, 40_000));
        // Every 500 up to 48 000: the multiples of 10 000, and the last.
        assert_eq!(
            thinned(&every(500, 48_000), 10),
            [0, 10_000, 20_000, 30_000, 40_000, 48_000]
        );
        // Evaluations off round iterations: spread by index, the ends kept.
        let odd: Vec<u64> = (0..40).map(|k| 7 + 13 * k).collect();
        let t = thinned(&odd, 10);
        assert_eq!(t.len(), 10);
        assert_eq!((t[0], t[9]), (7, 7 + 13 * 39));
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(thinned(&odd[..5], 10), odd[..5].to_vec());
        assert_eq!(thinned(&[], 10), Vec::<u64>::new());
    }
}
