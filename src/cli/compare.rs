//! `tpri compare`: several runs on the same task and seed, then the paper's figures and
//! the runs' last values side by side.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser};

use tpri::figures::{draw, read_log};

use super::train::{self, Out, TrainArgs};
use super::BackendArgs;

/// Flags of `tpri compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The runs: preset names or TOML config files (e.g. adding-30-tp adding-30-bp).
    #[arg(required = true)]
    runs: Vec<String>,
    /// Vary one `tpri train` flag over values, for every run: e.g. `--vary reg=0.1,1,10`
    /// [default: no variation].
    #[arg(long)]
    vary: Option<String>,
    /// Directory for the runs (one subdirectory each) and the figures.
    #[arg(long)]
    out: PathBuf,
    /// Overrides every run's iteration count [default: each run's own].
    #[arg(long)]
    iterations: Option<u64>,
    /// Overrides every run's seed (the same for all, so they see the same data)
    /// [default: each run's own].
    #[arg(long)]
    seed: Option<u64>,
    /// Any other `tpri train` flags applied to every run, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Parser)]
struct TrainFlags {
    #[command(flatten)]
    args: TrainArgs,
}

/// Runs `tpri compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let variants: Vec<Option<(String, String)>> = match &args.vary {
        None => vec![None],
        Some(spec) => {
            let (flag, values) = spec
                .split_once('=')
                .with_context(|| format!("--vary wants FLAG=V1,V2,…, got {spec:?}"))?;
            values
                .split(',')
                .map(|v| Some((flag.to_string(), v.to_string())))
                .collect()
        }
    };
    let mut plans = Vec::new();
    for run in &args.runs {
        for variant in &variants {
            let source = if run.ends_with(".toml") {
                "--config"
            } else {
                "--preset"
            };
            let stem = std::path::Path::new(run)
                .file_stem()
                .map_or(run.clone(), |s| s.to_string_lossy().into_owned());
            let mut label = match variant {
                Some((flag, value)) => format!("{stem} {flag}={value}"),
                None => stem,
            };
            // The same run named twice gets a directory (and a legend entry) of its own.
            let taken = |l: &str| plans.iter().any(|(p, _, _): &(String, _, _)| p == l);
            if taken(&label) {
                let base = label.clone();
                label = (2..)
                    .map(|i| format!("{base}-{i}"))
                    .find(|l| !taken(l))
                    .expect("an unbounded range yields a free label");
            }
            let dir = args.out.join(label.replace(' ', "_"));
            let mut argv = vec![
                "train".to_string(),
                source.into(),
                run.clone(),
                "--run-dir".into(),
                dir.to_string_lossy().into_owned(),
            ];
            if let Some((flag, value)) = variant {
                argv.extend([format!("--{flag}"), value.clone()]);
            }
            if let Some(n) = args.iterations {
                argv.extend(["--iterations".into(), n.to_string()]);
            }
            if let Some(s) = args.seed {
                argv.extend(["--seed".into(), s.to_string()]);
            }
            argv.extend(args.extra.iter().cloned());
            let mut parsed = TrainFlags::try_parse_from(&argv)
                .map_err(|e| anyhow::anyhow!("run {label:?}: {e}"))?
                .args;
            parsed.backend = args.backend.clone();
            // Resolve every plan before running any, so a typo fails fast.
            train::resolve(&parsed).with_context(|| format!("run {label:?}"))?;
            plans.push((label, dir, parsed));
        }
    }
    let tasks: Vec<_> = plans
        .iter()
        .map(|(_, _, a)| train::resolve(a).map(|c| c.task))
        .collect::<Result<_>>()?;
    if tasks.windows(2).any(|w| w[0] != w[1]) {
        bail!("the runs are on different tasks; compare runs of one task");
    }
    let regression = tasks
        .first()
        .is_some_and(|t| t.loss() == tpri::config::Loss::Mse);
    // A run that fails (diverges, CG misses its tolerance) is itself a result of the
    // comparison: report it, keep its partial log in the figures, and go on.
    let out = Out::default();
    let mut failed = Vec::new();
    for (label, _, a) in &plans {
        out.line(&format!("== {label}"));
        if let Err(e) = train::run(a.clone()) {
            out.line(&format!("run {label} failed: {e:#}"));
            failed.push(format!("{label}: {e:#}"));
        }
    }
    // A run refused before it started has no log: it is in the failures, not the figures.
    let runs: Vec<_> = plans
        .iter()
        .filter(|(_, d, _)| d.join("log.csv").is_file())
        .map(|(l, d, _)| (l.clone(), d.clone()))
        .collect();
    if !runs.is_empty() {
        for f in draw(&runs, &args.out, regression)? {
            out.line(&format!("wrote {}", f.display()));
        }
        for line in side_by_side(&runs, regression) {
            out.line(&line);
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed:\n  {}",
            failed.len(),
            plans.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

/// The runs' last values side by side, a line each after a header: iterations logged,
/// the last training loss, the last held-out loss (MSE for regression) and accuracy, and
/// the best held-out accuracy of any evaluation.
fn side_by_side(runs: &[(String, PathBuf)], regression: bool) -> Vec<String> {
    let width = runs
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let held_out = if regression {
        "held-out MSE"
    } else {
        "held-out loss"
    };
    let mut lines = vec![format!(
        "{:width$}  {:>10}  {:>10}  {held_out:>13}  {:>8}  {:>8}",
        "run", "iterations", "train loss", "accuracy", "best"
    )];
    for (label, dir) in runs {
        let log = read_log(dir).unwrap_or_default();
        let last = |points: &[(f64, f64)]| points.last().map(|p| p.1);
        let number =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        lines.push(format!(
            "{label:width$}  {:>10}  {:>10}  {:>13}  {:>8}  {:>8}",
            log.last_iteration()
                .map_or("-".to_string(), |i| i.to_string()),
            number(last(&log.train_loss), 5),
            number(last(&log.eval_loss), 5),
            number(last(&log.eval_accuracy), 4),
            number(log.best_eval_accuracy(), 4),
        ));
    }
    lines
}
