//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ (SPEC §4), by batched conjugate gradient
//! (twin of `shaders/cg_*.wgsl`) and by an exact Cholesky solve.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

/// How a CG solve went.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgReport {
    /// Iterations run.
    pub iterations: usize,
    /// Final relative residual ‖R‖_F / ‖Wᵀ‖_F.
    pub residual: f64,
}

/// A CG solve that missed its tolerance: the caller sees the numbers, never a bad P.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgError {
    pub report: CgReport,
    pub tol: f64,
    pub max_iter: usize,
}

impl std::fmt::Display for CgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CG for the regularized inverse did not converge: relative residual {:.3e} after {} \
             iterations (tolerance {:.1e}, cap {}); raise --cg-max-iter or --reg, or loosen --cg-tol",
            self.report.residual, self.report.iterations, self.tol, self.max_iter
        )
    }
}

impl std::error::Error for CgError {}

/// `A X = Wᵀ(W X) + r X`, the matrix-free normal operator.
fn normal_apply(w: &DMatrix<f64>, reg: f64, x: &DMatrix<f64>) -> DMatrix<f64> {
    w.tr_mul(&(w * x)) + x * reg
}

/// P by batched CG: the d columns of Wᵀ are d independent CG runs sharing the operator,
/// each with its own step sizes. Starts from `warm` when given (e.g. the previous P).
pub fn inverse_cg(
    w: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    warm: Option<&DMatrix<f64>>,
) -> Result<(DMatrix<f64>, CgReport)> {
    // Written so that NaN fails the test too.
    if !(reg > 0.0 && reg.is_finite()) {
        bail!("regularization r must be positive and finite for CG, got {reg}");
    }
    let rhs = w.transpose();
    let rhs_norm = rhs.norm();
    // A NaN or infinite W (a diverged model) would give a NaN residual, which compares
    // false against the tolerance and would pass for converged.
    if !rhs_norm.is_finite() {
        bail!(
            "W has non-finite entries (or its norm overflows): cannot form the regularized inverse"
        );
    }
    if let Some(warm) = warm.filter(|m| m.shape() != rhs.shape()) {
        bail!(
            "CG warm start has shape {:?}, expected {:?}",
            warm.shape(),
            rhs.shape()
        );
    }
    let mut x = warm
        .cloned()
        .unwrap_or_else(|| DMatrix::zeros(w.ncols(), w.nrows()));
    if rhs_norm == 0.0 {
        return Ok((
            DMatrix::zeros(w.ncols(), w.nrows()),
            CgReport {
                iterations: 0,
                residual: 0.0,
            },
        ));
    }
    let mut r = &rhs - normal_apply(w, reg, &x);
    let mut p = r.clone();
    let mut rs: Vec<f64> = r.column_iter().map(|c| c.norm_squared()).collect();
    let mut iterations = 0;
    let residual = |rs: &[f64]| rs.iter().sum::<f64>().sqrt() / rhs_norm;
    while residual(&rs) > tol && iterations < max_iter {
        let ap = normal_apply(w, reg, &p);
        for (j, rs_j) in rs.iter_mut().enumerate() {
            let curv = p.column(j).dot(&ap.column(j));
            // A column whose residual is exactly zero has p = 0: leave it where it is.
            let alpha = if curv > 0.0 { *rs_j / curv } else { 0.0 };
            x.column_mut(j).axpy(alpha, &p.column(j), 1.0);
            r.column_mut(j).axpy(-alpha, &ap.column(j), 1.0);
            let rs_new = r.column(j).norm_squared();
            let beta = if *rs_j > 0.0 { rs_new / *rs_j } else { 0.0 };
            let r_j = r.column(j).clone_owned();
            p.column_mut(j).axpy(1.0, &r_j, beta);
            *rs_j = rs_new;
        }
        iterations += 1;
    }
    let report = CgReport {
        iterations,
        residual: residual(&rs),
    };
    // A residual that turned NaN on the way (a NaN warm start) is a failure too.
    if report.residual.is_nan() || report.residual > tol {
        return Err(CgError {
            report,
            tol,
            max_iter,
        }
        .into());
    }
    Ok((x, report))
}

/// P by an exact Cholesky factorisation of WᵀW + rI.
pub fn inverse_cholesky(w: &DMatrix<f64>, reg: f64) -> Result<DMatrix<f64>> {
    if !w.iter().all(|x| x.is_finite()) {
        bail!("W has non-finite entries: cannot form the regularized inverse");
    }
    let n = w.ncols();
    let a = w.tr_mul(w) + DMatrix::identity(n, n) * reg;
    let Some(chol) = a.cholesky() else {
        bail!("WᵀW + rI is not positive definite (r = {reg}); r must be positive")
    };
    Ok(chol.solve(&w.transpose()))
}
