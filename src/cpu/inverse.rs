//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ (docs/ALGORITHM.md §4), by batched conjugate gradient
//! (twin of `shaders/cg_*.wgsl`) and by an exact Cholesky solve.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::cg::{check_converged, CgReport};
use crate::cpu::steps::product;

/// The normal operator `A = WᵀW + rI` of the regularized inverse, applied matrix-free.
#[derive(Clone, Debug)]
pub struct NormalOperator<'a> {
    w: &'a DMatrix<f64>,
    /// Wᵀ stored column-major, so that both products read their matrix in place.
    w_t: DMatrix<f64>,
    reg: f64,
}

impl<'a> NormalOperator<'a> {
    /// `WᵀW + rI` for `w` and `reg` = r.
    pub fn new(w: &'a DMatrix<f64>, reg: f64) -> Self {
        Self {
            w,
            w_t: w.transpose(),
            reg,
        }
    }

    /// d, the size of the square W.
    pub fn size(&self) -> usize {
        self.w.ncols()
    }

    /// `out ← Wᵀ S` for the column-major columns `s` (a right-hand side of the solve).
    pub fn w_t_times(&self, s: &[f64], out: &mut [f64]) {
        product(&self.w_t, s, false, out);
    }

    /// `out ← A X` (`wx` is scratch for W X).
    fn apply(&self, x: &DMatrix<f64>, wx: &mut DMatrix<f64>, out: &mut DMatrix<f64>) {
        product(self.w, x.as_slice(), false, wx.as_mut_slice());
        out.zip_apply(x, |o, xi| *o = xi * self.reg);
        product(&self.w_t, wx.as_slice(), true, out.as_mut_slice());
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
    // A NaN or infinite W (a diverged model) would give a NaN residual, which compares
    // false against the tolerance and would pass for converged.
    if !w.norm().is_finite() {
        bail!(
            "W has non-finite entries (or its norm overflows): cannot form the regularized inverse"
        );
    }
    let op = NormalOperator::new(w, reg);
    let rhs = op.w_t.clone();
    normal_cg(&op, rhs, tol, max_iter, warm)
}

/// `(WᵀW + rI)⁻¹ B` by batched CG, one run per column of `rhs` = B, stopping when the
/// relative residual ‖R‖_F / ‖B‖_F is ≤ `tol`: `inverse_cg` with B = Wᵀ, and the per-step
/// solves of docs/ALGORITHM.md §4 with B = Wᵀ S for the columns S a sweep step carries back.
pub fn normal_cg(
    op: &NormalOperator,
    rhs: DMatrix<f64>,
    tol: f64,
    max_iter: usize,
    warm: Option<&DMatrix<f64>>,
) -> Result<(DMatrix<f64>, CgReport)> {
    let (w, reg) = (op.w, op.reg);
    // Written so that NaN fails the test too.
    if !(reg > 0.0 && reg.is_finite()) {
        bail!("regularization r must be positive and finite for CG, got {reg}");
    }
    let rhs_norm = rhs.norm();
    if !rhs_norm.is_finite() {
        bail!("the right-hand side of the regularized inverse has non-finite entries: the model or its targets diverged");
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
        .unwrap_or_else(|| DMatrix::zeros(rhs.nrows(), rhs.ncols()));
    if rhs_norm == 0.0 {
        return Ok((
            DMatrix::zeros(rhs.nrows(), rhs.ncols()),
            CgReport {
                iterations: 0,
                residual: 0.0,
            },
        ));
    }
    // Every buffer allocated once; each iteration is two products and per-column updates.
    let n = w.ncols();
    let mut wx = DMatrix::zeros(w.nrows(), rhs.ncols());
    let mut ap = DMatrix::zeros(n, rhs.ncols());
    op.apply(&x, &mut wx, &mut ap);
    let mut r = &rhs - &ap;
    let mut p = r.clone();
    let mut rs: Vec<f64> = r.as_slice().chunks_exact(n).map(|c| dot(c, c)).collect();
    let mut iterations = 0;
    let residual = |rs: &[f64]| rs.iter().sum::<f64>().sqrt() / rhs_norm;
    while residual(&rs) > tol && iterations < max_iter {
        op.apply(&p, &mut wx, &mut ap);
        let columns = x
            .as_mut_slice()
            .chunks_exact_mut(n)
            .zip(r.as_mut_slice().chunks_exact_mut(n))
            .zip(p.as_mut_slice().chunks_exact_mut(n))
            .zip(ap.as_slice().chunks_exact(n))
            .zip(rs.iter_mut());
        for ((((x_j, r_j), p_j), ap_j), rs_j) in columns {
            let curv = dot(p_j, ap_j);
            // A column whose residual is exactly zero has p = 0: leave it where it is.
            let alpha = if curv > 0.0 { *rs_j / curv } else { 0.0 };
            for (xi, &pi) in x_j.iter_mut().zip(p_j.iter()) {
                *xi += alpha * pi;
            }
            for (ri, &api) in r_j.iter_mut().zip(ap_j) {
                *ri -= alpha * api;
            }
            let rs_new = dot(r_j, r_j);
            let beta = if *rs_j > 0.0 { rs_new / *rs_j } else { 0.0 };
            for (pi, &ri) in p_j.iter_mut().zip(r_j.iter()) {
                *pi = ri + beta * *pi;
            }
            *rs_j = rs_new;
        }
        iterations += 1;
    }
    let report = CgReport {
        iterations,
        residual: residual(&rs),
    };
    Ok((
        x,
        check_converged(report, tol, max_iter).map_err(crate::error::Error::from)?,
    ))
}

/// P by an exact Cholesky factorisation of WᵀW + rI.
pub fn inverse_cholesky(w: &DMatrix<f64>, reg: f64) -> Result<DMatrix<f64>> {
    if !w.iter().all(|x| x.is_finite()) {
        bail!("W has non-finite entries: cannot form the regularized inverse");
    }
    let n = w.ncols();
    let a = w.tr_mul(w) + DMatrix::identity(n, n) * reg;
    let Some(chol) = a.cholesky() else {
        bail!(
            "WᵀW + rI is not numerically positive definite (r = {reg}, ‖W‖_F = {:.3e}): \
             r must be positive, and W must not have blown up",
            w.norm()
        )
    };
    Ok(chol.solve(&w.transpose()))
}
