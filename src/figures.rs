//! The paper's figures, drawn from run directories: training loss and evaluation
//! accuracy (or MSE) against iterations, one curve per run, and a heat map of the
//! per-step norms of each run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::plot::{heat_map, line_chart, Series};
use crate::run_dir::LOG_HEADER;

/// One run's log, read back from its `log.csv`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunLog {
    /// (iteration, train loss).
    pub train_loss: Vec<(f64, f64)>,
    /// (iteration, eval loss).
    pub eval_loss: Vec<(f64, f64)>,
    /// (iteration, eval accuracy).
    pub eval_accuracy: Vec<(f64, f64)>,
}

/// Reads `dir/log.csv`.
pub fn read_log(dir: &Path) -> Result<RunLog> {
    let path = dir.join("log.csv");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(LOG_HEADER) {
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
        push(2, &mut log.train_loss);
        push(3, &mut log.eval_loss);
        push(4, &mut log.eval_accuracy);
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

/// Draws the comparison figures of `runs` (label, run directory) into `out`; returns the
/// files written. `regression` labels the evaluation panel as MSE rather than accuracy.
pub fn draw(runs: &[(String, PathBuf)], out: &Path, regression: bool) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let logs = runs
        .iter()
        .map(|(label, dir)| Ok((label.clone(), read_log(dir)?)))
        .collect::<Result<Vec<_>>>()?;
    let series = |pick: fn(&RunLog) -> &Vec<(f64, f64)>| -> Vec<Series> {
        logs.iter()
            .map(|(label, log)| Series {
                label: label.clone(),
                points: pick(log).clone(),
            })
            .collect()
    };
    let mut written = Vec::new();
    let mut chart = |stem: &str, title: &str, y: &str, s: Vec<Series>, log_y: bool| -> Result<()> {
        let path = out.join(stem);
        line_chart(&path, title, "iteration", y, &s, log_y)?;
        written.extend(with_suffixes(&path));
        Ok(())
    };
    chart(
        "train_loss",
        "Training loss",
        "train loss",
        series(|l| &l.train_loss),
        true,
    )?;
    if regression {
        chart(
            "eval_mse",
            "Evaluation MSE",
            "eval MSE",
            series(|l| &l.eval_loss),
            true,
        )?;
    } else {
        chart(
            "eval_accuracy",
            "Evaluation accuracy",
            "eval accuracy",
            series(|l| &l.eval_accuracy),
            false,
        )?;
        chart(
            "eval_loss",
            "Evaluation loss",
            "eval loss",
            series(|l| &l.eval_loss),
            true,
        )?;
    }
    for (label, dir) in runs {
        let rows = read_step_norms(dir)?;
        if rows.is_empty() {
            continue;
        }
        let path = out.join(format!("step_norms_{}", sanitize(label)));
        heat_map(
            &path,
            &format!("{label}: per-step norms (TP: ‖v_t − h_t‖, BP: ‖∂ℓ/∂h_t‖)"),
            &rows,
            true,
        )?;
        written.extend(with_suffixes(&path));
    }
    Ok(written)
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
