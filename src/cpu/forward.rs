//! Forward pass of the tanh RNN (twin of `shaders/forward.wgsl`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::cell_inputs;
use crate::cpu::simd::{step_product, tanh_in_place};
use crate::cpu::steps::{core_groups, in_parallel, product, Steps};
use crate::model::{CellKind, Params};

/// Hidden states h_0 = 0, h_1 … h_T (each B×d) of the tanh RNN `params` for inputs `x`
/// (T ≥ 1 matrices B×p, finite): an error naming the argument where a shape does not fit.
pub fn forward(params: &Params, x: &[DMatrix<f64>]) -> Result<Vec<DMatrix<f64>>> {
    let (dims, t_len, b) = cell_inputs(params, CellKind::Tanh, x, "forward")?;
    let x = Steps::from_rows(x, b, dims.input);
    let mut h = Steps::zeros(t_len + 1, b, dims.hidden);
    forward_steps(params, &x, &mut h);
    Ok(h.to_rows())
}

/// `forward` in the working layout: x_1 … x_T (T steps of width p) to h_0 … h_T, written
/// over all of `h` (T + 1 steps of width d).
pub(crate) fn forward_steps(params: &Params, x: &Steps, h: &mut Steps) {
    let d = params.w_hh.nrows();
    let (t_len, b) = (x.steps(), x.batch());
    assert_eq!(
        (h.steps(), h.batch(), h.width()),
        (t_len + 1, b, d),
        "forward_steps: h has the wrong shape"
    );
    h.step_mut(0).fill(0.0);
    // h_t = tanh(W h_{t−1} + (U x_t + b)), each group of sequences on its own core.
    let w = params.w_hh.as_slice();
    let groups = core_groups(b, t_len * b * d * d);
    in_parallel(h.parts_mut(&groups), |mut part| {
        let seqs = part.seqs.clone();
        for t in 1..=t_len {
            let (prev, cur) = part.pair_mut(t - 1, t);
            input_term_into(params, x.at(t - 1, &seqs), cur);
            step_product(w, d, prev, true, cur);
            tanh_in_place(cur);
        }
    });
}

/// The input terms U x + b of the column-major columns `x` (width p) into `out` (width d),
/// with b = b_ih + b_hh.
pub(crate) fn input_term_into(params: &Params, x: &[f64], out: &mut [f64]) {
    affine_into(&params.w_ih, params.bias_sum().as_slice(), x, out);
}

/// `U x + bias` for the column-major columns `x` (width p) into `out` (width d, the rows
/// of `u`): the input term of the cell, and of DTP's reverse layer, which shares U.
pub(crate) fn affine_into(u: &DMatrix<f64>, bias: &[f64], x: &[f64], out: &mut [f64]) {
    let d = u.nrows();
    for col in out.chunks_exact_mut(d) {
        col.copy_from_slice(bias);
    }
    step_product(u.as_slice(), d, x, true, out);
}

/// `tanh(M h + a)` for the column-major columns `h` (width d) into `a`, which holds the
/// input terms `a` (width d, the rows of `m`) on entry: one step of the cell (M = W) or of
/// DTP's reverse layer (M = V), for any number of columns.
pub(crate) fn tanh_step_into(m: &DMatrix<f64>, h: &[f64], a: &mut [f64]) {
    product(m, h, true, a);
    tanh_in_place(a);
}
