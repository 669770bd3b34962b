//! What `tpri sweep` prints about a sweep beside its counts: where each unfinished run
//! stands, and how the seeds of each cell reached the spec's `reach`.

use std::collections::BTreeMap;

use super::collect::{by_cell, Outcome};
use super::expand::short_keys;
use super::manifest::{Manifest, Status};
use super::value::short_float;

/// One line per cell of the grid on how its seeds reached the manifest's `reach`: how
/// many did (failed and unfinished runs count, by what they logged), and the first
/// reaching iterations' range and median. Empty without `reach`.
pub fn reach(m: &Manifest, outcomes: &[Outcome]) -> Vec<String> {
    let Some(mark) = m.reach else {
        return Vec::new();
    };
    let cells = by_cell(m, outcomes, |o| o.reach_iteration);
    let mut all = cell_names(m);
    let names: Vec<String> = cells
        .keys()
        .map(|cell| all.remove(cell).unwrap_or_default())
        .collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let mut lines = vec![format!(
        "held-out accuracy {} reached by (failed runs count, by what they logged):",
        short_float(mark)
    )];
    for (name, (mut at, of)) in names.into_iter().zip(cells.into_values()) {
        at.sort_unstable();
        let when = match (at.first(), at.last()) {
            (Some(lo), Some(hi)) if lo == hi => format!(", at iteration {lo}"),
            (Some(lo), Some(hi)) => {
                let mid = at.len() / 2;
                let median = match at.len() % 2 {
                    1 => at[mid] as f64,
                    _ => (at[mid - 1] + at[mid]) as f64 / 2.0,
                };
                format!(", at iterations {lo} to {hi}, median {median}")
            }
            _ => String::new(),
        };
        lines.push(format!("  {name:width$}  {} of {of} seeds{when}", at.len()));
    }
    lines
}

/// Every cell of the grid (its axis value indices) by name: `reg=3 lr=0.1`, the axes'
/// short keys with their labels, or "all runs" for a grid without axes.
pub fn cell_names(m: &Manifest) -> BTreeMap<Vec<usize>, String> {
    let keys = short_keys(&m.axes);
    m.runs
        .iter()
        .map(|run| {
            let name: Vec<String> = keys
                .iter()
                .zip(&m.axes)
                .zip(&run.cell)
                .map(|((k, a), &i)| format!("{k}={}", a.labels[i]))
                .collect();
            let name = if name.is_empty() {
                "all runs".to_string()
            } else {
                name.join(" ")
            };
            (run.cell.clone(), name)
        })
        .collect()
}

/// One line per run started and not finished: how far it got, whether a process here
/// runs it now (`running[i]`), and, at its recent pace (`Outcome::pace`), about how long
/// the rest takes.
pub fn progress(m: &Manifest, outcomes: &[Outcome], running: &[bool]) -> Vec<String> {
    m.runs
        .iter()
        .zip(outcomes)
        .zip(running)
        .filter(|((run, _), _)| run.status == Status::Incomplete)
        .map(|((run, o), &here)| {
            let done = o.iterations.unwrap_or(0);
            let mut line = format!(
                "  {}: iteration {done} of {} ({:.0} %)",
                run.name,
                run.iterations,
                100.0 * done as f64 / run.iterations.max(1) as f64
            );
            if here {
                line.push_str(", running now");
            }
            if let Some(pace) = o.pace {
                let left = pace * run.iterations.saturating_sub(done) as f64;
                line.push_str(&format!("; about {} to go at its pace", duration(left)));
            }
            line
        })
        .collect()
}

/// `seconds` as "45 s", "12 min" or "3.4 h".
fn duration(seconds: f64) -> String {
    match seconds {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_short() {
        assert_eq!(duration(30.0), "30 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(9000.0), "2.5 h");
    }
}
