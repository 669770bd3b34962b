//! What the CPU reference's tests share besides tests/support: independent per-sequence
//! implementations of the model and its objectives (column vectors, no shared code with
//! `tpri::cpu`), the shapes the gradient checks run on, and finite differences.

use nalgebra::{DMatrix, DVector};

use tpri::config::Loss;
use tpri::model::Params;
use tpri::tasks::{Batch, Targets};

use crate::support::Shape;

/// The shapes (B, T, p, d, q) every gradient check runs on: each size down to 1, some
/// general ones, and one with more inputs than hidden units.
pub const SHAPES: [Shape; 7] = [
    Shape::new(1, 1, 1, 1, 1),
    Shape::new(1, 4, 1, 1, 2),
    Shape::new(2, 1, 3, 4, 2),
    Shape::new(3, 5, 4, 7, 3),
    Shape::new(4, 6, 2, 5, 1),
    Shape::new(1, 8, 3, 6, 4),
    Shape::new(2, 3, 5, 3, 2),
];

/// Input x_t of sequence `i` as a column (`t` 1-based, as in docs/ALGORITHM.md).
pub fn x_col(batch: &Batch, i: usize, t: usize) -> DVector<f64> {
    batch.x[t - 1].row(i).transpose()
}

/// One step `tanh(W h + U x + b)` of one sequence, written in docs/ALGORITHM.md's column form.
pub fn cell(params: &Params, h: &DVector<f64>, x: &DVector<f64>) -> DVector<f64> {
    (&params.w_hh * h + &params.w_ih * x + params.tanh_bias().unwrap().column(0)).map(f64::tanh)
}

/// Hidden states h_0 … h_T of sequence `i`, one step at a time.
pub fn naive_hidden(params: &Params, batch: &Batch, i: usize) -> Vec<DVector<f64>> {
    let mut h = vec![DVector::zeros(params.w_hh.nrows())];
    for t in 1..=batch.seq_len() {
        let next = cell(params, &h[t - 1], &x_col(batch, i, t));
        h.push(next);
    }
    h
}

/// The loss ℓ of docs/ALGORITHM.md §1 at last states `h_last` (B×d, any real values), straight from
/// its definition, one sequence at a time.
pub fn naive_head_loss(params: &Params, h_last: &DMatrix<f64>, y: &Targets, loss: Loss) -> f64 {
    let b = h_last.nrows();
    let mut total = 0.0;
    for i in 0..b {
        let z = &params.head_w * h_last.row(i).transpose() + params.head_b.column(0);
        total += match (y, loss) {
            (Targets::Labels(l), Loss::CrossEntropy) => {
                // Moderate logits in these tests: the unshifted log-sum-exp is exact enough.
                z.iter().map(|zj| zj.exp()).sum::<f64>().ln() - z[l[i]]
            }
            (Targets::Values(y), Loss::Mse) => (z - y.row(i).transpose()).norm_squared(),
            _ => panic!("targets do not suit the loss"),
        };
    }
    match loss {
        Loss::CrossEntropy => total / b as f64,
        Loss::Mse => total / (b * params.head_w.nrows()) as f64,
        Loss::CrossEntropySeq => panic!("a head at every step: naive_loss scores it"),
    }
}

/// The loss ℓ of the whole model on `batch`, from `naive_hidden` and `naive_head_loss`;
/// with labels at every step, the mean over the steps of each step's cross-entropy.
pub fn naive_loss(params: &Params, batch: &Batch, loss: Loss) -> f64 {
    let b = batch.batch_size();
    let states: Vec<_> = (0..b).map(|i| naive_hidden(params, batch, i)).collect();
    let rows_at = |t: usize| {
        let mut h_t = DMatrix::zeros(b, params.w_hh.nrows());
        for (i, h) in states.iter().enumerate() {
            h_t.set_row(i, &h[t].transpose());
        }
        h_t
    };
    if let (Targets::StepLabels(l), Loss::CrossEntropySeq) = (&batch.y, loss) {
        let t_len = batch.seq_len();
        let total: f64 = (1..=t_len)
            .map(|t| {
                let labels = Targets::Labels(l.column(t - 1).iter().copied().collect());
                naive_head_loss(params, &rows_at(t), &labels, Loss::CrossEntropy)
            })
            .sum();
        return total / t_len as f64;
    }
    naive_head_loss(params, &rows_at(batch.seq_len()), &batch.y, loss)
}

/// Surrogate through time `S(θ) = Σ_t ½‖h_t(θ) − v_t‖²`, summed over sequences, with the
/// targets `v` (v_0 … v_T, rows per sequence) fixed.
pub fn naive_surrogate(params: &Params, batch: &Batch, v: &[DMatrix<f64>]) -> f64 {
    let mut s = 0.0;
    for i in 0..batch.batch_size() {
        let h = naive_hidden(params, batch, i);
        for t in 1..=batch.seq_len() {
            s += 0.5 * (&h[t] - v[t].row(i).transpose()).norm_squared();
        }
    }
    s
}

/// Local surrogate `Σ_t ½‖tanh(W h_{t−1} + U x_t + b) − v_t‖²` with every input state
/// h_{t−1} held at its value in `h_fixed` (h_0 … h_T, rows per sequence).
pub fn naive_local_surrogate(
    params: &Params,
    batch: &Batch,
    h_fixed: &[DMatrix<f64>],
    v: &[DMatrix<f64>],
) -> f64 {
    let mut s = 0.0;
    for i in 0..batch.batch_size() {
        for t in 1..=batch.seq_len() {
            let h_prev = h_fixed[t - 1].row(i).transpose();
            let h_t = cell(params, &h_prev, &x_col(batch, i, t));
            s += 0.5 * (h_t - v[t].row(i).transpose()).norm_squared();
        }
    }
    s
}

/// Central difference of `f` at `x` in entry `k` (column-major) with step `h`.
fn central(f: &mut impl FnMut(&DMatrix<f64>) -> f64, x: &DMatrix<f64>, k: usize, h: f64) -> f64 {
    let mut xp = x.clone();
    xp[k] += h;
    let mut xm = x.clone();
    xm[k] -= h;
    (f(&xp) - f(&xm)) / (2.0 * h)
}

/// Step of the finite differences. Richardson extrapolation cancels the h² term, leaving
/// truncation O(h⁴) ≈ 1e-12 and round-off ≈ 1e-16·|f|/h ≈ 1e-13·|f|: both far below the
/// 1e-6 the checks demand, for objectives of order 1–10.
const FD_STEP: f64 = 1e-3;

/// Gradient of `f` at `x` by central differences with one Richardson extrapolation,
/// `(4 D(h/2) − D(h)) / 3`, entry by entry.
pub fn fd_gradient(x: &DMatrix<f64>, mut f: impl FnMut(&DMatrix<f64>) -> f64) -> DMatrix<f64> {
    DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| {
        let k = i + j * x.nrows();
        let coarse = central(&mut f, x, k, FD_STEP);
        let fine = central(&mut f, x, k, FD_STEP / 2.0);
        (4.0 * fine - coarse) / 3.0
    })
}

/// Gradient of `f` with respect to the tensor of `params` numbered `which`
/// (`PARAM_NAMES` order), the other tensors held at their values.
pub fn fd_param_gradient(
    params: &Params,
    which: usize,
    f: impl Fn(&Params) -> f64,
) -> DMatrix<f64> {
    let at = params.tensors()[which].1.clone();
    fd_gradient(&at, |moved| {
        let mut p = params.clone();
        *p.tensors_mut()[which] = moved.clone();
        f(&p)
    })
}
