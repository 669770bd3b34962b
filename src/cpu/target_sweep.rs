//! The backward target sweep (SPEC §2 steps 3–5; twin of `shaders/target_sweep.wgsl`).

use nalgebra::DMatrix;

use crate::config::{TargetMode, CLAMP_EPS};
use crate::cpu::forward::input_term_into;
use crate::cpu::steps::{core_groups, gemm, in_parallel, Mat, Steps};
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
    let (b, p, d) = (grad_h.nrows(), params.w_ih.ncols(), params.w_hh.nrows());
    let x = Steps::from_rows(x, b, p);
    let h = Steps::from_rows(h, b, d);
    target_sweep_steps(params, p_inv, &x, &h, grad_h, lr_target, mode).to_rows()
}

/// `target_sweep` in the working layout.
pub fn target_sweep_steps(
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &Steps,
    h: &Steps,
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    mode: TargetMode,
) -> Steps {
    let d = params.w_hh.nrows();
    let (t_len, b) = (x.steps(), x.batch());
    let mut v = h.clone();
    for (i, col) in v.step_mut(t_len).chunks_exact_mut(d).enumerate() {
        for (j, vj) in col.iter_mut().enumerate() {
            *vj -= grad_h[(i, j)] * lr_target;
        }
    }
    // The inverse needs U x_t + b (difference and plain targets only).
    let a_in = (mode != TargetMode::Linearized).then(|| {
        let mut a = Steps::zeros(t_len, b, d);
        input_term_into(params, x, a.data.as_mut_slice());
        a
    });
    let p_mat = Mat::of(p_inv);
    let groups = core_groups(b, t_len * b * d * d);
    in_parallel(v.parts_mut(&groups), |mut part| {
        let seqs = part.seqs.clone();
        let n = seqs.len();
        let mut pre = vec![0.0; d * n];
        let mut fh = vec![0.0; d * n];
        for t in (2..=t_len).rev() {
            let (v_t, v_prev) = part.pair_mut(t, t - 1);
            let (h_t, h_prev) = (h.at(t, &seqs), h.at(t - 1, &seqs));
            match mode {
                TargetMode::Linearized => {
                    // v_{t−1} = h_{t−1} + P [(v_t − h_t) ⊘ (1 − clamp(h_t)²)]
                    for ((s, &vt), &ht) in pre.iter_mut().zip(v_t).zip(h_t) {
                        *s = (vt - ht) / (1.0 - clamp(ht).powi(2));
                    }
                    v_prev.copy_from_slice(h_prev);
                    gemm(1.0, p_mat, Mat::cols(&pre, d, n), 1.0, v_prev);
                }
                TargetMode::Difference => {
                    let a_in = a_in.as_ref().expect("input term").at(t - 1, &seqs);
                    f_inverse_cols(p_mat, a_in, h_t, &mut pre, &mut fh);
                    f_inverse_cols(p_mat, a_in, v_t, &mut pre, v_prev);
                    // The difference first: at v_t = h_t it is exactly 0 and
                    // v_{t−1} = h_{t−1} exactly; `(h + fv) − fh` would round h_{t−1}
                    // through the size of fv.
                    for ((out, &fh), &hp) in v_prev.iter_mut().zip(&fh).zip(h_prev) {
                        *out = hp + (*out - fh);
                    }
                }
                TargetMode::Plain => {
                    let a_in = a_in.as_ref().expect("input term").at(t - 1, &seqs);
                    f_inverse_cols(p_mat, a_in, v_t, &mut pre, v_prev);
                }
            }
        }
    });
    v
}

/// `f_t⁻¹(clamp(v)) = P (atanh(clamp(v)) − (U x_t + b))` for the column-major columns `v`,
/// given the input term `a_in`, into `out` (`pre` is scratch of the same size).
fn f_inverse_cols(p_inv: Mat, a_in: &[f64], v: &[f64], pre: &mut [f64], out: &mut [f64]) {
    for ((s, &vi), &ai) in pre.iter_mut().zip(v).zip(a_in) {
        *s = clamp(vi).atanh() - ai;
    }
    let d = p_inv.nrows();
    gemm(1.0, p_inv, Mat::cols(pre, d, v.len() / d), 0.0, out);
}
