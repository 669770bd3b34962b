//! The per-step batched CG of the jacobian inversion (docs/ALGORITHM.md §5): one CG per
//! sequence of a step (`batched_cg`), sharing the cell's two products per iteration, each
//! sequence stopping on its own residual.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use super::{Cell, Step};
use crate::cg::{check_converged, CgReport};
use crate::config::Preconditioner;
use crate::cpu::batched_cg::{batched_cg, CgVectors, Stop};

/// The vectors of a per-step CG over B columns of width d, allocated once per sweep.
#[derive(Default)]
pub(super) struct CgWork {
    rhs: Vec<f64>,
    jp: Vec<f64>,
    scratch: Vec<f64>,
    /// The Jacobi preconditioner r / (diag(JᵀJ) + r), where the solve has one.
    precond: Vec<f64>,
    cg: CgVectors,
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

/// How each step's normal equations are solved: r, the tolerance, the cap on iterations
/// and the preconditioner.
pub(crate) type StepSolve = (f64, f64, usize, Preconditioner);

/// `per_step_cg` for the sequences of `step`, one column of `u` each, into `x`, with
/// `work`'s vectors; each column stops on its own relative residual.
pub(super) fn solve_columns(
    cell: &dyn Cell,
    step: Step<'_>,
    u: &[f64],
    (reg, tol, max_iter, precondition): StepSolve,
    work: &mut CgWork,
    x: &mut [f64],
) -> Result<CgReport> {
    let CgWork {
        rhs,
        jp,
        scratch,
        precond,
        cg,
    } = work;
    rhs.resize(u.len(), 0.0);
    cell.vjp_into(step, u, rhs, scratch)?;
    // A NaN residual would compare false against the tolerance and pass for converged.
    if !rhs.iter().map(|v| v * v).sum::<f64>().is_finite() {
        bail!(
            "J_tᵀ (v_t − h_t) has non-finite entries at step {}: the model or targets diverged",
            step.0
        );
    }
    let precond = match precondition.resolve(cell.kind()) {
        Preconditioner::Jacobi => {
            precond.resize(u.len(), 0.0);
            cell.normal_diagonal_into(step, precond, scratch)?;
            // r / (diag + r): 1 / (diag + r) times r, which CG's iterates do not see, as
            // the GPU scales it so that rᵀz cannot underflow f32 where ‖r‖² does not.
            for m in precond.iter_mut() {
                *m = 1.0 / (1.0 + *m / reg);
            }
            Some(precond.as_slice())
        }
        Preconditioner::None | Preconditioner::Auto => None,
    };
    jp.resize(u.len(), 0.0);
    let mut apply = |p: &[f64], ap: &mut [f64]| {
        cell.jvp_into(step, p, jp, scratch)?;
        cell.vjp_into(step, jp, ap, scratch)?;
        for (a, &p_j) in ap.iter_mut().zip(p) {
            *a += reg * p_j;
        }
        Ok(())
    };
    let report = batched_cg(
        &mut apply,
        rhs,
        cell.width(),
        x,
        (false, precond),
        (tol, max_iter, Stop::EachColumn),
        cg,
    )?;
    Ok(check_converged(report, tol, max_iter).map_err(crate::error::Error::from)?)
}

/// Solves `(J_tᵀ J_t + r I) z = J_tᵀ u` for every row (sequence) of `u` (B×d, the
/// displacement v_t − h_t) by batched matrix-free CG from zero: one CG per row, each with
/// its own α and β, sharing the two products per iteration, preconditioned as
/// `precondition` says (`Auto`: by the cell, `Preconditioner::resolve`). Each row stops when its own
/// relative residual ‖r_s‖ / ‖(J_tᵀ u)_s‖ is ≤ `tol` (`Stop::EachColumn`; the report's
/// residual is the largest row's), and the solve fails with `CgError` if `max_iter`
/// iterations do not get every row there.
pub fn per_step_cg(
    cell: &dyn Cell,
    t: usize,
    u: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    precondition: Preconditioner,
) -> Result<(DMatrix<f64>, CgReport)> {
    check_solve(cell, t, reg)?;
    let (b, d) = u.shape();
    if d != cell.width() {
        bail!(
            "u has {d} columns, the cell's hidden size is {}",
            cell.width()
        );
    }
    let mut work = CgWork::default();
    let mut z = vec![0.0; b * d];
    let cols = u.transpose();
    let report = solve_columns(
        cell,
        (t, &(0..b)),
        cols.as_slice(),
        (reg, tol, max_iter, precondition),
        &mut work,
        &mut z,
    )?;
    Ok((DMatrix::from_column_slice(d, b, &z).transpose(), report))
}
