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

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::{cell_params, matrix, steps};
use crate::cg::CgReport;
use crate::config::{TpConfig, CLAMP_EPS, CPU_CG_TOL};
use crate::cpu::gru::kept_or_formed;
use crate::cpu::inverse::{inverse_cg, inverse_cholesky};
use crate::cpu::simd::step_product;
use crate::cpu::steps::{core_groups, in_parallel, Steps};
use crate::model::{CellKind, Params, GRU_GATES};

/// `s(u) = ū(1 − ū)` with `ū = clamp(u, ε, 1 − ε)`: the sigmoid's derivative at a gate
/// value, kept off 0 so that dividing by it stays finite (the published `tol_inv`).
pub fn sigmoid_slope(u: f64) -> f64 {
    let c = u.clamp(CLAMP_EPS, 1.0 - CLAMP_EPS);
    c * (1.0 - c)
}

/// P_r, P_z, P_n for the gate blocks of `params.w_hh` (rows g·d … g·d + d − 1): by CG from
/// zero to `tp.cg_tol` (the reference's default when `None`), or with `cholesky` by exact
/// factorisations. The CG report is the three solves' (`CgReport::successive`; none for Cholesky).
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
        report = Some(report.map_or(rep, |r| CgReport::successive([r, rep])));
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
    let (t_len, b, d) = (x.len(), v_top.nrows(), dims.hidden);
    matrix("v_top", v_top, b, d)?;
    steps("h", h, t_len + 1, (b, d))?;
    steps("x", x, t_len, (b, dims.input))?;
    for (p, gate) in p_gates.iter().zip(GRU_GATES) {
        matrix(&format!("P_{gate}"), p, d, d)?;
    }
    let x = Steps::from_rows(x, b, dims.input);
    let h = Steps::from_rows(h, b, d);
    let mut v = Steps::zeros(t_len + 1, b, d);
    v.step_mut(t_len)
        .copy_from_slice(v_top.transpose().as_slice());
    gru_per_gate_sweep_steps(params, p_gates, &x, (&h, None), &mut v);
    Ok(v.to_rows())
}

/// `gru_per_gate_sweep` in the working layout, at the states h and their gates (those the
/// forward pass kept, or `None` to form them from h: `gru::gate_history`): `v` holds v_T at
/// step T on entry, and v_0 = h_0, v_1 … v_{T−1} are written. Each group of sequences walks
/// t = T … 2 on its own core: the direct term and the three brackets at the step's gates,
/// then the products with the P_g in the published order (z, r, n) added to the direct
/// term, and h_{t−1} last.
pub(crate) fn gru_per_gate_sweep_steps(
    params: &Params,
    p_gates: &[DMatrix<f64>; 3],
    x: &Steps,
    (h, gates): (&Steps, Option<&Steps>),
    v: &mut Steps,
) {
    let gates = kept_or_formed(params, x, h, gates);
    let d = params.w_hh.ncols();
    let (t_len, b) = (x.steps(), x.batch());
    assert_eq!(
        (v.steps(), v.batch(), v.width()),
        (t_len + 1, b, d),
        "gru_per_gate_sweep_steps: v has the wrong shape"
    );
    v.step_mut(0).copy_from_slice(h.step(0));
    let groups = core_groups(b, t_len * b * 6 * d * d);
    in_parallel(v.parts_mut(&groups), |mut part| {
        let seqs = part.seqs.clone();
        let n = seqs.len();
        let mut brackets = [(); 3].map(|_| vec![0.0; d * n]);
        for t in (2..=t_len).rev() {
            let (h_prev, gates) = (h.at(t - 1, &seqs), gates.at(t - 1, &seqs));
            let (vt, v_prev) = part.pair_mut(t, t - 1);
            let ht = h.at(t, &seqs);
            for c in 0..n {
                let g = &gates[c * 4 * d..(c + 1) * 4 * d];
                for j in 0..d {
                    let at = c * d + j;
                    let (r, z, nn, a) = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                    let e = vt[at] - ht[at];
                    // δ through h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n into n's pre-activation.
                    let dn = (1.0 - nn * nn) * z * e;
                    v_prev[at] = (1.0 - z) * e;
                    brackets[0][at] = a * dn / sigmoid_slope(r);
                    brackets[1][at] = (nn - h_prev[at]) * e / sigmoid_slope(z);
                    brackets[2][at] = r * dn;
                }
            }
            // The published order: the direct path, z, r, n, and h_{t−1} added last.
            for gate in [1, 0, 2] {
                step_product(p_gates[gate].as_slice(), d, &brackets[gate], true, v_prev);
            }
            for (vj, &hj) in v_prev.iter_mut().zip(h_prev) {
                *vj += hj;
            }
        }
    });
}

/// Refuses parameters of another cell, or of shapes that do not fit together: the
/// per-gate inversion reads the GRU's gate blocks.
fn check_gru(params: &Params) -> Result<()> {
    cell_params(params, CellKind::Gru, "the per-gate inversion").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::gru::{gate_history, gru_bptt_steps, gru_forward, gru_forward_steps};
    use crate::cpu::test_data::{inputs, params, rng, uniform};
    use crate::kernel_io::Injection;

    /// The gates the forward pass keeps for the backward passes are those `gate_history`
    /// forms from its states afresh (all steps at once, split over the cores by columns,
    /// not by sequences), bit for bit; so BPTT and the per-gate sweep give the same bits at
    /// the kept gates as at gates formed again.
    #[test]
    fn kept_gates_are_the_gates_of_the_states() {
        let mut r = rng(78);
        let (b, p, d, t_len) = (16, 3, 64, 100);
        let params = params(&mut r, CellKind::Gru, (p, d), 1.5);
        let x_rows = inputs(&mut r, t_len, b, p);
        let x = Steps::from_rows(&x_rows, b, p);
        let (mut h, mut gates) = (Steps::zeros(t_len + 1, b, d), Steps::zeros(t_len, b, 4 * d));
        gru_forward_steps(&params, &x, &mut h, &mut gates);
        assert_eq!(h.to_rows(), gru_forward(&params, &x_rows).unwrap(), "h");
        assert!(gate_history(&params, &x, &h) == gates, "gates");
        let v_top = h.rows_at(t_len) - uniform(&mut r, b, d, 0.1);
        let v: Vec<_> = (0..=t_len)
            .map(|t| h.rows_at(t) + uniform(&mut r, b, d, 0.1))
            .collect();
        let v = Steps::from_rows(&v, b, d);
        for through_time in [true, false] {
            let grads = |kept| {
                let injection = Injection::Targets(&v);
                gru_bptt_steps(&params, &x, (&h, kept), injection, through_time)
            };
            let (a, c) = (grads(Some(&gates)), grads(None));
            assert_eq!(a.rnn.w_hh, c.rnn.w_hh, "∇W through time: {through_time}");
            assert_eq!((a.rnn.w_ih, a.rnn.b, a.b_hh), (c.rnn.w_ih, c.rnn.b, c.b_hh));
            assert_eq!(a.rnn.error_norms, c.rnn.error_norms);
        }
        let tp = TpConfig {
            reg: 1.0,
            ..TpConfig::default()
        };
        let (p_gates, _) = gate_inverses(&params, &tp, true).unwrap();
        let sweep = |kept| {
            let mut out = Steps::zeros(t_len + 1, b, d);
            out.step_mut(t_len)
                .copy_from_slice(v_top.transpose().as_slice());
            gru_per_gate_sweep_steps(&params, &p_gates, &x, (&h, kept), &mut out);
            out
        };
        assert!(sweep(Some(&gates)) == sweep(None), "per-gate targets");
    }
}
