//! `tpri plot`: the figures of existing run directories, after checking their logs.
//!
//! The logs are checked whole before anything is drawn, so that a damaged or foreign
//! file is an error naming the file and the line, never a figure of garbage lines. The
//! rule: `log.csv` starts with tpri's header and every other non-blank line has its
//! columns, an iteration (a whole number) first and every other field empty or a finite
//! number (the same for `alignment.csv`, where there is one, whose header starts
//! `iteration,cosine,norm_ratio,`); `step_norms.csv`, where there is one, has on every non-blank line an iteration
//! and the same number of norms as every other line. A NaN is an error, and so is an
//! infinite value (training stops at the first non-finite loss), except in the two places
//! a run with `--clip-norm` goes on past an overflowing norm: the gradient's norm
//! (`grad_norm`) and the per-step norms may be +inf, and the figures leave such points
//! out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use tpri::run_dir::{is_log_header, LOG_HEADER};

/// Flags of `tpri plot`.
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directories, each with its log.csv (and step_norms.csv, for a heat map of the
    /// per-step norms): one curve each, named by its directory.
    runs: Vec<PathBuf>,
    /// A group of runs drawn as one curve, LABEL=RUN,RUN,... (the label up to the first
    /// `=`; the seeds of one setting, say): their mean at every iteration, with a band from
    /// their smallest to their largest value (where some runs stopped early, over those
    /// that go on). Repeat it for each group; e.g. `--group BPTT=runs/bp-1,runs/bp-2
    /// --group TP-RI=runs/tp-1,runs/tp-2`.
    #[arg(long, value_name = "LABEL=RUN,RUN,...")]
    group: Vec<String>,
    /// Directory the figures are written to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Label the evaluation figure as MSE (regression tasks) [default: accuracy].
    #[arg(long)]
    regression: bool,
}

/// Runs `tpri plot`.
pub fn plot(args: PlotArgs) -> Result<()> {
    if args.runs.is_empty() && args.group.is_empty() {
        bail!("give run directories, or groups of them with --group LABEL RUN...");
    }
    let named = |d: &PathBuf| {
        d.file_name().map_or_else(
            || d.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let mut groups: Vec<(String, Vec<PathBuf>)> = args
        .runs
        .iter()
        .map(|d| (named(d), vec![d.clone()]))
        .collect();
    for group in &args.group {
        let Some((label, dirs)) = group.split_once('=') else {
            bail!("--group {group:?}: expected LABEL=RUN,RUN,... (no `=` found)");
        };
        let dirs: Vec<PathBuf> = dirs
            .split(',')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect();
        if label.is_empty() || dirs.is_empty() {
            bail!("--group {group:?}: expected a label and at least one run directory, LABEL=RUN,RUN,...");
        }
        groups.push((label.to_string(), dirs));
    }
    for dir in groups.iter().flat_map(|(_, dirs)| dirs) {
        check_logs(dir)?;
    }
    for f in tpri::figures::draw_groups(&groups, &args.out, args.regression)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// Checks `dir/log.csv`, `dir/alignment.csv` and `dir/step_norms.csv` by the rule of this
/// module's docs.
pub fn check_logs(dir: &Path) -> Result<()> {
    let log = dir.join("log.csv");
    check_table(
        &log,
        &read(&log)?,
        is_log_header,
        LOG_HEADER,
        &["grad_norm"],
    )?;
    let alignment = dir.join("alignment.csv");
    if alignment.exists() {
        let prefix = "iteration,cosine,norm_ratio,";
        check_table(
            &alignment,
            &read(&alignment)?,
            |h| h.starts_with(prefix),
            &format!("{prefix}TENSOR,..."),
            &[],
        )?;
    }
    let norms = dir.join("step_norms.csv");
    if !norms.exists() {
        // Kept studies hold the log alone (docs/sweeps/keep.sh): no heat map then.
        return Ok(());
    }
    let text = read(&norms)?;
    let mut width = None;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let at = || format!("{} line {}", norms.display(), i + 1);
        iteration(fields[0], &at)?;
        for field in &fields[1..] {
            number(field, "a step norm", true, &at)?;
        }
        let steps = fields.len() - 1;
        match width {
            None => width = Some((steps, i + 1)),
            Some((w, first)) if w != steps => bail!(
                "{}: {steps} step norms, but line {first} has {w} (the rows must be equally long)",
                at()
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks a table of `path` (its `text`): a header `header_ok` accepts (`expected` says
/// what), then rows of as many fields, an iteration first and finite numbers or nothing
/// after it (+inf too in the columns named in `overflows`).
fn check_table(
    path: &Path,
    text: &str,
    header_ok: impl Fn(&str) -> bool,
    expected: &str,
    overflows: &[&str],
) -> Result<()> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map_or("", |(_, l)| l);
    if !header_ok(header) {
        bail!(
            "{} line 1: not tpri's header (expected {expected:?})",
            path.display()
        );
    }
    let columns: Vec<&str> = header.split(',').collect();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        let at = || format!("{} line {}", path.display(), i + 1);
        if fields.len() != columns.len() {
            bail!(
                "{}: {} fields, but the header has {} columns",
                at(),
                fields.len(),
                columns.len()
            );
        }
        iteration(fields[0], &at)?;
        for (field, column) in fields.iter().zip(&columns).skip(1) {
            if !field.is_empty() {
                number(field, column, overflows.contains(column), &at)?;
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String> {
    let bytes = tpri::files::read_regular(path, "log")?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn iteration(field: &str, at: &dyn Fn() -> String) -> Result<()> {
    if field.parse::<u64>().is_err() {
        bail!("{}: the iteration {field:?} is not a whole number", at());
    }
    Ok(())
}

/// Checks one field: a number, finite, or +inf where `overflows` (a norm that may pass
/// the float range).
fn number(field: &str, column: &str, overflows: bool, at: &dyn Fn() -> String) -> Result<()> {
    match field.parse::<f64>() {
        Ok(v) if v.is_finite() || (overflows && v == f64::INFINITY) => Ok(()),
        Ok(v) => bail!(
            "{}: {column} is {v}; tpri plot draws finite values only{}",
            at(),
            if overflows { " (and +inf)" } else { "" }
        ),
        Err(_) => bail!("{}: {column} {field:?} is not a number", at()),
    }
}
