//! Generalized regularized inversion (docs/ALGORITHM.md §5): Jacobian–vector and vector–Jacobian
//! products of a cell's step map h_{t−1} ↦ h_t at stored states, the per-step batched
//! matrix-free CG for `(J_tᵀ J_t + r I) z = J_tᵀ (v_t − h_t)`, and the target sweep built
//! on it. J_t is never formed: the GPU twin will only have the products.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::cg::{check_converged, CgReport};
use crate::cpu::gru::{gru_gates, gru_step_backward};
use crate::kernel_io::GruStep;
use crate::model::Params;

/// A recurrent cell linearized at the stored states h_0 … h_T and inputs x_1 … x_T.
/// Step t (1 ≤ t ≤ T) is `J_t = ∂h_t/∂h_{t−1}` at (h_{t−1}, x_t); every product is batched
/// over sequences, which are rows (B×d in, B×d out), each row with its own J_t.
pub trait Cell {
    /// Number of steps T.
    fn steps(&self) -> usize;
    /// `J_t u` for each row of `u`.
    fn jvp(&self, t: usize, u: &DMatrix<f64>) -> DMatrix<f64>;
    /// `J_tᵀ w` for each row of `w`.
    fn vjp(&self, t: usize, w: &DMatrix<f64>) -> DMatrix<f64>;
}

/// The tanh RNN, `J_t = D_t W` with `D_t = diag(1 − h_t²)`. The exact derivative, not the
/// clamped one of docs/ALGORITHM.md §2's sweep: the two agree wherever |h_t| < 1 − ε.
pub struct TanhCell {
    w: DMatrix<f64>,
    /// 1 − h_t² for t = 1 … T (index t − 1).
    deriv: Vec<DMatrix<f64>>,
}

impl TanhCell {
    /// Linearizes at the states `h` (h_0 … h_T) of `params`.
    pub fn new(params: &Params, h: &[DMatrix<f64>]) -> Self {
        Self {
            w: params.w_hh.clone(),
            deriv: h[1..].iter().map(|h| h.map(|v| 1.0 - v * v)).collect(),
        }
    }
}

impl Cell for TanhCell {
    fn steps(&self) -> usize {
        self.deriv.len()
    }

    fn jvp(&self, t: usize, u: &DMatrix<f64>) -> DMatrix<f64> {
        // Rows: (W u)ᵀ = uᵀ Wᵀ, then D_t elementwise.
        (u * self.w.transpose()).component_mul(&self.deriv[t - 1])
    }

    fn vjp(&self, t: usize, w: &DMatrix<f64>) -> DMatrix<f64> {
        w.component_mul(&self.deriv[t - 1]) * &self.w
    }
}

/// The GRU of `cpu::gru`, linearized through its gates (all of which depend on h_{t−1}).
pub struct GruCell<'a> {
    params: &'a Params,
    h: Vec<DMatrix<f64>>,
    /// The gates of step t at index t − 1.
    gates: Vec<GruStep>,
}

impl<'a> GruCell<'a> {
    /// Linearizes at the states `h` (h_0 … h_T) and inputs `x` (x_1 … x_T).
    pub fn new(params: &'a Params, x: &[DMatrix<f64>], h: &[DMatrix<f64>]) -> Self {
        let gates = x
            .iter()
            .zip(h)
            .map(|(x_t, h_prev)| gru_gates(params, h_prev, x_t))
            .collect();
        Self {
            params,
            h: h.to_vec(),
            gates,
        }
    }
}

impl Cell for GruCell<'_> {
    fn steps(&self) -> usize {
        self.gates.len()
    }

    fn jvp(&self, t: usize, u: &DMatrix<f64>) -> DMatrix<f64> {
        let d = self.params.dims().hidden;
        let s = &self.gates[t - 1];
        let h_prev = &self.h[t - 1];
        // Tangent of gh = W h + b_hh, all three gates at once.
        let du = u * self.params.w_hh.transpose();
        DMatrix::from_fn(u.nrows(), d, |i, j| {
            let (r, z, n, hn) = (s.r[(i, j)], s.z[(i, j)], s.n[(i, j)], s.hn[(i, j)]);
            let dr = r * (1.0 - r) * du[(i, j)];
            let dz = z * (1.0 - z) * du[(i, d + j)];
            let dn = (1.0 - n * n) * (dr * hn + r * du[(i, 2 * d + j)]);
            (h_prev[(i, j)] - n) * dz + (1.0 - z) * dn + z * u[(i, j)]
        })
    }

    fn vjp(&self, t: usize, w: &DMatrix<f64>) -> DMatrix<f64> {
        // The BP step backward is exactly Jᵀ w; only its h_{t−1} part is wanted.
        gru_step_backward(self.params, &self.gates[t - 1], &self.h[t - 1], w).2
    }
}

fn dot(a: &DMatrix<f64>, b: &DMatrix<f64>, i: usize) -> f64 {
    a.row(i).dot(&b.row(i))
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
    // Written so that NaN fails the test too.
    if !(reg > 0.0 && reg.is_finite()) {
        bail!("regularization r must be positive and finite for CG, got {reg}");
    }
    if !(1..=cell.steps()).contains(&t) {
        bail!("step {t} is outside 1 … {}", cell.steps());
    }
    let rhs = cell.vjp(t, u);
    let rhs_norm = rhs.norm();
    // A NaN residual would compare false against the tolerance and pass for converged.
    if !rhs_norm.is_finite() {
        bail!("J_tᵀ (v_t − h_t) has non-finite entries at step {t}: the model or targets diverged");
    }
    let (b, d) = rhs.shape();
    let mut x = DMatrix::zeros(b, d);
    if rhs_norm == 0.0 {
        let report = CgReport {
            iterations: 0,
            residual: 0.0,
        };
        return Ok((x, report));
    }
    let apply = |p: &DMatrix<f64>| cell.vjp(t, &cell.jvp(t, p)) + p * reg;
    let mut r = rhs;
    let mut p = r.clone();
    let mut rs: Vec<f64> = (0..b).map(|i| dot(&r, &r, i)).collect();
    let residual = |rs: &[f64]| rs.iter().sum::<f64>().sqrt() / rhs_norm;
    let mut iterations = 0;
    while residual(&rs) > tol && iterations < max_iter {
        let ap = apply(&p);
        for (i, rs_i) in rs.iter_mut().enumerate() {
            let curv = dot(&p, &ap, i);
            // A row already solved exactly has p = 0: leave it where it is.
            let alpha = if curv > 0.0 { *rs_i / curv } else { 0.0 };
            for j in 0..d {
                x[(i, j)] += alpha * p[(i, j)];
                r[(i, j)] -= alpha * ap[(i, j)];
            }
            let rs_new = dot(&r, &r, i);
            let beta = if *rs_i > 0.0 { rs_new / *rs_i } else { 0.0 };
            for j in 0..d {
                p[(i, j)] = r[(i, j)] + beta * p[(i, j)];
            }
            *rs_i = rs_new;
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

/// Linearized targets of docs/ALGORITHM.md §5 from the top target `v_t` (v_T, B×d) down:
/// `v_{t−1} = h_{t−1} + (J_tᵀJ_t + rI)⁻¹ J_tᵀ (v_t − h_t)` for t = T … 2. Returns v_0 … v_T
/// (v_0, never used, equal to h_0, as in `target_sweep`) and the CG report of each solved
/// step, for t = T … 2 in that order.
pub fn jacobian_sweep(
    cell: &dyn Cell,
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
) -> Result<(Vec<DMatrix<f64>>, Vec<CgReport>)> {
    let t_len = cell.steps();
    if h.len() != t_len + 1 {
        bail!(
            "jacobian_sweep needs h_0 … h_T ({} states), got {}",
            t_len + 1,
            h.len()
        );
    }
    let mut v = h.to_vec();
    v[t_len] = v_top.clone();
    let mut reports = Vec::with_capacity(t_len.saturating_sub(1));
    for t in (2..=t_len).rev() {
        let (z, report) = per_step_cg(cell, t, &(&v[t] - &h[t]), reg, tol, max_iter)?;
        v[t - 1] = &h[t - 1] + z;
        reports.push(report);
    }
    Ok((v, reports))
}
