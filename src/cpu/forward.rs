//! Forward pass of the tanh RNN (twin of `shaders/forward.wgsl`).

use nalgebra::DMatrix;

use crate::cpu::steps::{core_groups, gemm, in_parallel, Mat, Steps};
use crate::model::Params;

/// Hidden states h_0 = 0, h_1 … h_T (each B×d) for inputs `x` (T matrices B×p).
pub fn forward(params: &Params, x: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let b = x.first().map_or(0, |m| m.nrows());
    forward_steps(params, &Steps::from_rows(x, b, params.w_ih.ncols())).to_rows()
}

/// `forward` in the working layout: x_1 … x_T (T steps of width p) to h_0 … h_T.
pub fn forward_steps(params: &Params, x: &Steps) -> Steps {
    let d = params.w_hh.nrows();
    let (t_len, b) = (x.steps(), x.batch());
    let mut h = Steps::zeros(t_len + 1, b, d);
    // The input term does not depend on the recurrence: for all steps at once, into
    // h_1 … h_T.
    input_term_into(params, x, &mut h.data.as_mut_slice()[b * d..]);
    // h_t = tanh(W h_{t−1} + (U x_t + b)), each group of sequences on its own core.
    let w = Mat::of(&params.w_hh);
    let groups = core_groups(b, t_len * b * d * d);
    in_parallel(h.parts_mut(&groups), |mut part| {
        let n = part.seqs.len();
        for t in 1..=t_len {
            let (prev, cur) = part.pair_mut(t - 1, t);
            gemm(1.0, w, Mat::cols(prev, d, n), 1.0, cur);
            cur.iter_mut().for_each(|a| *a = a.tanh());
        }
    });
    h
}

/// The input terms U x_t + b of all steps (T steps of width d, column-major) into `out`:
/// one product.
pub fn input_term_into(params: &Params, x: &Steps, out: &mut [f64]) {
    let (d, p) = params.w_ih.shape();
    let n = x.steps() * x.batch();
    for col in out.chunks_exact_mut(d) {
        col.copy_from_slice(params.b.as_slice());
    }
    gemm(
        1.0,
        Mat::of(&params.w_ih),
        Mat::cols(x.span(0..x.steps()), p, n),
        1.0,
        out,
    );
}
