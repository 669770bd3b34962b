//! `tpri bench`'s linear fits: each backend's, cell's, method's and d's median time against
//! T·B, printed and written to the JSON report.

use serde::Serialize;
use tpri::bench::{fit_line, Fit, Measurement};
use tpri::config::{Inversion, Method, Preconditioner};
use tpri::model::CellKind;

use super::bench_report::{cell_name, method_name};

/// A linear fit of one backend, cell, method (with TP-RI's inversion) and hidden size, as
/// the JSON report holds it.
#[derive(Serialize)]
pub struct FitRow {
    backend: String,
    cell: CellKind,
    method: Method,
    inversion: Option<Inversion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precondition: Option<Preconditioner>,
    hidden: usize,
    fit: Fit,
}

/// Least-squares lines of each backend, cell, method and d over T·B (where at least two
/// T·B were measured).
pub fn fit_rows(all: &[Measurement]) -> Vec<FitRow> {
    type Key = (
        String,
        CellKind,
        Method,
        (Option<Inversion>, Option<Preconditioner>),
        usize,
    );
    let mut groups: Vec<(Key, Vec<(f64, f64)>)> = Vec::new();
    for m in all {
        let key = (
            m.backend.clone(),
            m.cell,
            m.method,
            (m.inversion, m.precondition),
            m.size.hidden,
        );
        let point = ((m.size.steps * m.size.batch) as f64, m.iteration_s);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, points)) => points.push(point),
            None => groups.push((key, vec![point])),
        }
    }
    groups
        .into_iter()
        .filter_map(
            |((backend, cell, method, (inversion, precondition), hidden), points)| {
                Some(FitRow {
                    backend,
                    cell,
                    method,
                    inversion,
                    precondition,
                    hidden,
                    fit: fit_line(&points)?,
                })
            },
        )
        .collect()
}

pub fn print_fits(fits: &[FitRow]) {
    if fits.is_empty() {
        return;
    }
    println!("\nlinear fit: median time ≈ a + b·(T·B)");
    println!(
        "{:11} {:4} {:11} {:>5} {:>10} {:>14} {:>7}",
        "backend", "cell", "method", "d", "a (ms)", "b (µs/T·B)", "R²"
    );
    for f in fits {
        println!(
            "{:11} {:4} {:11} {:>5} {:>10.3} {:>14.3} {:>7.4}",
            f.backend,
            cell_name(f.cell),
            method_name(f.cell, f.method, (f.inversion, f.precondition)),
            f.hidden,
            f.fit.intercept * 1e3,
            f.fit.slope * 1e6,
            f.fit.r2
        );
    }
}
