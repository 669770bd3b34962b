//! The published GRU inversion (docs/ALGORITHM.md §5, "Per-gate inversion"; twin of
//! `shaders/gru_per_gate_sweep.wgsl`): one regularized inverse per gate block of W,
//! `P_g = (W_gᵀW_g + rI)⁻¹W_gᵀ` for g = r, z, n, formed once per iteration by the solves of
//! `inverse`, and the linearized target sweep that applies them. With h = h_{t−1},
//! δ = v_t − h_t and the gates r, z, n, a = W_n h + b_hn of step t:
//!
//! ```text
//! v_{t−1} = h + (1 − z) ⊙ δ + P_z[(n − h) ⊙ δ ⊘ s(z)]
//!             + P_r[a ⊙ (1 − n²) ⊙ z ⊙ δ ⊘ s(r)] + P_n[r ⊙ (1 − n²) ⊙ z ⊙ δ]
//! ```
//!
//! with `s(u) = ū(1 − ū)`, `ū = clamp(u, ε, 1 − ε)`, for t = T … 2.

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::cg::CgReport;
use crate::config::{TpConfig, CLAMP_EPS, CPU_CG_TOL};
use crate::cpu::gru::gru_gates;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky};
use crate::error::{shape_of, Error};
use crate::model::{CellKind, Params, GRU_GATES};

/// `s(u) = ū(1 − ū)` with `ū = clamp(u, ε, 1 − ε)`: the sigmoid's derivative at a gate
/// value, kept off 0 so that dividing by it stays finite (the published `tol_inv`).
pub fn sigmoid_slope(u: f64) -> f64 {
    let c = u.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS);
    c * (1.0 - c)
}

/// P_r, P_z, P_n for the gate blocks of `params.w_hh` (rows g·d … g·d + d − 1): by CG from
/// zero to `tp.cg_tol` (the reference's default when `None`), or with `cholesky` by exact
/// factorisations. The CG report is the worst of the three solves (none for Cholesky).
pub fn gate_inverses(
    params: &Params,
    tp: &TpConfig,
    cholesky: bool,
) -> Result<([DMatrix<f64>; 3], Option<CgReport>)> {
    check_gru(params)?;
    let d = params.dims().hidden;
    let tol = tp.cg_tol.unwrap_or(CPU_CG_TOL);
    let mut report: Option<CgReport> = None;
    let mut solve = |g: usize| -> Result<DMatrix<f64>> {
        let w = params.w_hh.rows(g * d, d).into_owned();
        if cholesky {
            return inverse_cholesky(&w, tp.reg);
        }
        let (p, rep) = inverse_cg(&w, tp.reg, tol, tp.cg_max_iter, None)?;
        report = Some(report.map_or(rep, |r| r.worse(rep)));
        Ok(p)
    };
    let p = [solve(0)?, solve(1)?, solve(2)?];
    Ok((p, report))
}

/// The per-gate targets v_0 … v_T from `v_top` = v_T (B×d), the states `h` (h_0 … h_T)
/// and inputs `x` (x_1 … x_T, each B×p) of `params`, and `p_gates` = [P_r, P_z, P_n].
/// v_0 is never used; it is returned equal to h_0, as by the other sweeps.
pub fn gru_per_gate_sweep(
    params: &Params,
    p_gates: &[DMatrix<f64>; 3],
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
) -> Result<Vec<DMatrix<f64>>> {
    check_gru(params)?;
    let dims = params.dims();
    let (t_len, d) = (x.len(), dims.hidden);
    ensure!(
        h.len() == t_len + 1,
        "the per-gate sweep needs h_0 … h_T ({} states), got {}",
        t_len + 1,
        h.len()
    );
    let b = v_top.nrows();
    let rows_ok = |m: &DMatrix<f64>, cols| m.shape() == (b, cols);
    ensure!(
        v_top.ncols() == d
            && h.iter().all(|m| rows_ok(m, d))
            && x.iter().all(|m| rows_ok(m, dims.input)),
        "the per-gate sweep needs v_T and every h_t B×d = {b}×{d} and every x_t B×p = {b}×{}",
        dims.input
    );
    for (p, gate) in p_gates.iter().zip(GRU_GATES) {
        if p.shape() != (d, d) {
            return Err(Error::shape(
                format!("P_{gate}"),
                shape_of(&[p.nrows(), p.ncols()]),
                format!("[{d}, {d}] (d×d)"),
            )
            .into());
        }
    }
    let mut v = h.to_vec();
    v[t_len] = v_top.clone();
    for t in (2..=t_len).rev() {
        let h_prev = &h[t - 1];
        let g = gru_gates(params, h_prev, &x[t - 1]);
        let delta = &v[t] - &h[t];
        // The direct path, then the bracket of each gate (rows are sequences).
        let mut direct = DMatrix::zeros(b, d);
        let mut brackets = [(); 3].map(|_| DMatrix::zeros(b, d));
        for i in 0..b {
            for j in 0..d {
                let (r, z, n, a) = (g.r[(i, j)], g.z[(i, j)], g.n[(i, j)], g.hn[(i, j)]);
                let e = delta[(i, j)];
                // δ through h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n into n's pre-activation.
                let dn = (1.0 - n * n) * z * e;
                direct[(i, j)] = (1.0 - z) * e;
                brackets[0][(i, j)] = a * dn / sigmoid_slope(r);
                brackets[1][(i, j)] = (n - h_prev[(i, j)]) * e / sigmoid_slope(z);
                brackets[2][(i, j)] = r * dn;
            }
        }
        // P s for each row s: s Pᵀ. The published order: the direct path, z, r, n, and
        // h_{t−1} added last.
        let mut step = direct;
        for gate in [1, 0, 2] {
            step += &brackets[gate] * p_gates[gate].transpose();
        }
        v[t - 1] = h_prev + step;
    }
    Ok(v)
}

/// Refuses parameters of another cell: the per-gate inversion reads the GRU's gate blocks.
fn check_gru(params: &Params) -> Result<()> {
    if params.cell != CellKind::Gru {
        return Err(Error::setting(
            "Params::cell",
            format!(
                "the per-gate inversion inverts the GRU's gate blocks, not a {:?} cell",
                params.cell
            ),
        )
        .into());
    }
    Ok(())
}
