//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ (docs/ALGORITHM.md §4), by batched conjugate gradient
//! (twin of `shaders/cg_*.wgsl`) and by an exact Cholesky solve.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::arguments::matrix;
use crate::cg::{check_converged, CgReport};
use crate::cpu::batched_cg::{batched_cg, CgVectors, Stop};
use crate::cpu::steps::product;

/// The normal operator `A = WᵀW + rI` of the regularized inverse, applied matrix-free.
#[derive(Clone, Debug)]
pub(crate) struct NormalOperator<'a> {
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

    /// `out ← A X` for the column-major columns `x` (`wx` is scratch for W X).
    fn apply(&self, x: &[f64], wx: &mut [f64], out: &mut [f64]) {
        product(self.w, x, false, wx);
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = xi * self.reg;
        }
        product(&self.w_t, wx, true, out);
    }
}

/// P by batched CG for a square W (d×d): the d columns of Wᵀ are d independent CG runs
/// sharing the operator, each with its own step sizes. Starts from `warm` when given (e.g.
/// the previous P).
pub fn inverse_cg(
    w: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    warm: Option<&DMatrix<f64>>,
) -> Result<(DMatrix<f64>, CgReport)> {
    matrix("W", w, w.ncols(), w.ncols())?;
    // A NaN or infinite W (a diverged model) would give a NaN residual, which compares
    // false against the tolerance and would pass for converged.
    if !w.norm().is_finite() {
        bail!(
            "W has non-finite entries (or its norm overflows): cannot form the regularized inverse"
        );
    }
    let op = NormalOperator::new(w, reg);
    let rhs = op.w_t.clone();
    normal_cg(&op, rhs, (tol, max_iter, Stop::Batch), warm)
}

/// `(WᵀW + rI)⁻¹ B` by batched CG (`batched_cg`), one run per column of `rhs` = B,
/// stopping as `stop` says: `inverse_cg` with B = Wᵀ and [`Stop::Batch`], the per-step
/// solves of docs/ALGORITHM.md §4 with B = Wᵀ S for the columns S a sweep step carries
/// back and [`Stop::EachColumn`].
pub(crate) fn normal_cg(
    op: &NormalOperator,
    rhs: DMatrix<f64>,
    (tol, max_iter, stop): (f64, usize, Stop),
    warm: Option<&DMatrix<f64>>,
) -> Result<(DMatrix<f64>, CgReport)> {
    let reg = op.reg;
    // Written so that NaN fails the test too.
    if !(reg > 0.0 && reg.is_finite()) {
        bail!("regularization r must be positive and finite for CG, got {reg}");
    }
    if !rhs.norm().is_finite() {
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
    let mut wx = vec![0.0; op.w.nrows() * rhs.ncols()];
    let mut apply = |p: &[f64], out: &mut [f64]| {
        op.apply(p, &mut wx, out);
        Ok(())
    };
    let report = batched_cg(
        &mut apply,
        rhs.as_slice(),
        op.size(),
        x.as_mut_slice(),
        (warm.is_some(), None),
        (tol, max_iter, stop),
        &mut CgVectors::default(),
    )?;
    Ok((
        x,
        check_converged(report, tol, max_iter).map_err(crate::error::Error::from)?,
    ))
}

/// P by an exact Cholesky factorisation of WᵀW + rI, for a square W (d×d).
pub fn inverse_cholesky(w: &DMatrix<f64>, reg: f64) -> Result<DMatrix<f64>> {
    matrix("W", w, w.ncols(), w.ncols())?;
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
