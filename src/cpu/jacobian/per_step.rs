//! The per-step batched CG of the jacobian inversion (docs/ALGORITHM.md §5): one CG per
//! sequence of a step, sharing the cell's two products per iteration, stopping together on
//! the Frobenius residual of the sequences solved.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use super::{Cell, Step};
use crate::cg::{check_converged, CgReport};

/// The vectors of a per-step CG over B columns of width d, allocated once per sweep.
pub(super) struct CgWork {
    r: Vec<f64>,
    p: Vec<f64>,
    ap: Vec<f64>,
    jp: Vec<f64>,
    scratch: Vec<f64>,
    rs: Vec<f64>,
}

impl CgWork {
    pub(super) fn new(d: usize, b: usize) -> Self {
        let v = || vec![0.0; d * b];
        Self {
            r: v(),
            p: v(),
            ap: v(),
            jp: v(),
            scratch: Vec::new(),
            rs: vec![0.0; b],
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks what every per-step solve needs: a positive, finite r and a step of the cell.
pub(super) fn check_solve(cell: &dyn Cell, t: usize, reg: f64) -> Result<()> {
    // Written so that NaN fails the test too.
    if !(reg > 0.0 && reg.is_finite()) {
        bail!("regularization r must be positive and finite for CG, got {reg}");
    }
    if !(1..=cell.steps()).contains(&t) {
        bail!("step {t} is outside 1 … {}", cell.steps());
    }
    Ok(())
}

/// `per_step_cg` for the sequences of `step`, one column of `u` each, into `x`, with
/// `work`'s vectors; stops on those columns' Frobenius residual.
pub(super) fn solve_columns(
    cell: &dyn Cell,
    step: Step<'_>,
    u: &[f64],
    (reg, tol, max_iter): (f64, f64, usize),
    work: &mut CgWork,
    x: &mut [f64],
) -> Result<CgReport> {
    let d = cell.width();
    let CgWork {
        r,
        p,
        ap,
        jp,
        scratch,
        rs,
    } = work;
    cell.vjp_into(step, u, r, scratch);
    let rhs_norm = dot(r, r).sqrt();
    // A NaN residual would compare false against the tolerance and pass for converged.
    if !rhs_norm.is_finite() {
        bail!(
            "J_tᵀ (v_t − h_t) has non-finite entries at step {}: the model or targets diverged",
            step.0
        );
    }
    x.fill(0.0);
    if rhs_norm == 0.0 {
        return Ok(CgReport {
            iterations: 0,
            residual: 0.0,
        });
    }
    p.copy_from_slice(r);
    for (rs_i, r_i) in rs.iter_mut().zip(r.chunks_exact(d)) {
        *rs_i = dot(r_i, r_i);
    }
    let residual = |rs: &[f64]| rs.iter().sum::<f64>().sqrt() / rhs_norm;
    let mut iterations = 0;
    while residual(rs) > tol && iterations < max_iter {
        cell.jvp_into(step, p, jp, scratch);
        cell.vjp_into(step, jp, ap, scratch);
        for (a, &p_j) in ap.iter_mut().zip(p.iter()) {
            *a += reg * p_j;
        }
        let columns = x
            .chunks_exact_mut(d)
            .zip(r.chunks_exact_mut(d))
            .zip(p.chunks_exact_mut(d))
            .zip(ap.chunks_exact(d))
            .zip(rs.iter_mut());
        for ((((x_i, r_i), p_i), ap_i), rs_i) in columns {
            let curv = dot(p_i, ap_i);
            // A column already solved exactly has p = 0: leave it where it is.
            let alpha = if curv > 0.0 { *rs_i / curv } else { 0.0 };
            for j in 0..d {
                x_i[j] += alpha * p_i[j];
                r_i[j] -= alpha * ap_i[j];
            }
            let rs_new = dot(r_i, r_i);
            let beta = if *rs_i > 0.0 { rs_new / *rs_i } else { 0.0 };
            for j in 0..d {
                p_i[j] = r_i[j] + beta * p_i[j];
            }
            *rs_i = rs_new;
        }
        iterations += 1;
    }
    let report = CgReport {
        iterations,
        residual: residual(rs),
    };
    Ok(check_converged(report, tol, max_iter).map_err(crate::error::Error::from)?)
}

/// Solves `(J_tᵀ J_t + r I) z = J_tᵀ u` for every row (sequence) of `u` (B×d, the
/// displacement v_t − h_t) by batched matrix-free CG from zero: one CG per row, each with
/// its own α and β, sharing the two products per iteration. Stops when the relative
/// residual over the batch, ‖R‖_F / ‖J_tᵀ u‖_F, is ≤ `tol` (as `inverse_cg` does), and
/// fails with `CgError` if `max_iter` iterations do not get there.
pub fn per_step_cg(
    cell: &dyn Cell,
    t: usize,
    u: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
) -> Result<(DMatrix<f64>, CgReport)> {
    check_solve(cell, t, reg)?;
    let (b, d) = u.shape();
    if d != cell.width() {
        bail!(
            "u has {d} columns, the cell's hidden size is {}",
            cell.width()
        );
    }
    let mut work = CgWork::new(d, b);
    let mut z = vec![0.0; b * d];
    let cols = u.transpose();
    let report = solve_columns(
        cell,
        (t, &(0..b)),
        cols.as_slice(),
        (reg, tol, max_iter),
        &mut work,
        &mut z,
    )?;
    Ok((DMatrix::from_column_slice(d, b, &z).transpose(), report))
}
