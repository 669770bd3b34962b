//! The backward target sweep (SPEC §2 steps 3–5; twin of `shaders/target_sweep.wgsl`).

use nalgebra::DMatrix;

use crate::config::{TargetMode, CLAMP_EPS};
use crate::model::Params;

/// `min(max(u, −1+ε), 1−ε)`.
pub fn clamp(u: f64) -> f64 {
    u.clamp(-1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS)
}

/// Regularized inverse of step t, `f_t⁻¹(v) = P(atanh(v) − U x_t − b)`, for a batch of rows
/// `v` already clamped into (−1, 1).
pub fn f_inverse(
    params: &Params,
    p_inv: &DMatrix<f64>,
    x_t: &DMatrix<f64>,
    v: &DMatrix<f64>,
) -> DMatrix<f64> {
    let mut pre = v.map(f64::atanh) - x_t * params.w_ih.transpose();
    for mut row in pre.row_iter_mut() {
        row -= params.b.transpose();
    }
    pre * p_inv.transpose()
}

/// Targets v_0 … v_T from the hidden states `h` (h_0 … h_T), the inputs `x` (x_1 … x_T),
/// the loss gradient `grad_h` at h_T and the target step `lr_target`.
/// v_0 is never used; it is returned equal to h_0.
pub fn target_sweep(
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    mode: TargetMode,
) -> Vec<DMatrix<f64>> {
    let t_len = x.len();
    let mut v = h.to_vec();
    v[t_len] = &h[t_len] - grad_h * lr_target;
    let p_t = p_inv.transpose();
    for t in (2..=t_len).rev() {
        let (h_t, v_t, x_t) = (&h[t], &v[t], &x[t - 1]);
        v[t - 1] = match mode {
            TargetMode::Linearized => {
                let scaled = (v_t - h_t).zip_map(h_t, |dv, ht| dv / (1.0 - clamp(ht).powi(2)));
                &h[t - 1] + scaled * &p_t
            }
            TargetMode::Difference => {
                let fv = f_inverse(params, p_inv, x_t, &v_t.map(clamp));
                let fh = f_inverse(params, p_inv, x_t, &h_t.map(clamp));
                // The difference first: at v_t = h_t it is exactly 0 and v_{t−1} = h_{t−1}
                // exactly; `(h + fv) − fh` would round h_{t−1} through the size of fv.
                &h[t - 1] + (fv - fh)
            }
            TargetMode::Plain => f_inverse(params, p_inv, x_t, &v_t.map(clamp)),
        };
    }
    v
}
