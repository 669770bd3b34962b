//! The linear head and its loss (twin of `shaders/head.wgsl`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::matrix;
use crate::config::Loss;
use crate::error::Error;
use crate::kernel_io::HeadOut;
use crate::model::Params;
use crate::tasks::Targets;
use crate::validate::{check_param_shapes, check_targets};

/// Regression outputs within this distance of their target count as correct.
pub const REGRESSION_HIT: f64 = 0.04;

/// The head's loss and gradients at the last hidden state `h_last` (B×d) against `y`; a
/// loss at every step is `cpu::seq_head::head_steps`'s. An error naming the argument where
/// a shape does not fit.
pub fn head(params: &Params, h_last: &DMatrix<f64>, y: &Targets, loss: Loss) -> Result<HeadOut> {
    if loss.every_step() {
        return Err(every_step_loss());
    }
    let dims = check_param_shapes(params)?;
    let (b, q) = (h_last.nrows(), dims.output);
    matrix("h_last", h_last, b, dims.hidden)?;
    check_targets(y, loss, b, q)?;
    let mut z = h_last * params.head_w.transpose();
    for mut row in z.row_iter_mut() {
        row += params.head_b.transpose();
    }
    let (value, accuracy, dz) = match y {
        Targets::Labels(labels) => {
            let (sum, hits, dz) = cross_entropy(&z, labels, b);
            (sum / b as f64, hits as f64 / b as f64, dz)
        }
        Targets::Values(t) => squared_error(&z, t),
        Targets::StepLabels(_) => return Err(every_step_loss()),
    };
    Ok(HeadOut {
        loss: value,
        accuracy,
        grad_h: &dz * &params.head_w,
        grad_w: dz.transpose() * h_last,
        grad_b: DMatrix::from_fn(q, 1, |i, _| dz.column(i).sum()),
        z,
    })
}

/// Cross-entropy of the rows of `z` against `labels`, for a loss that averages over `n`
/// predictions: the sum of the rows' losses, the number of rows whose first arg-max is
/// the label, and ∂ℓ/∂z = (softmax(z) − onehot) / n.
pub(crate) fn cross_entropy(
    z: &DMatrix<f64>,
    labels: &[usize],
    n: usize,
) -> (f64, usize, DMatrix<f64>) {
    let n = n as f64;
    let mut dz = DMatrix::zeros(z.nrows(), z.ncols());
    let (mut loss, mut hits) = (0.0, 0usize);
    for (i, &label) in labels.iter().enumerate() {
        let row = z.row(i);
        let max = row.max();
        let sum: f64 = row.iter().map(|&v| (v - max).exp()).sum();
        loss += max + sum.ln() - row[label];
        let argmax = (0..row.len()).fold(0, |best, j| if row[j] > row[best] { j } else { best });
        hits += usize::from(argmax == label);
        for j in 0..z.ncols() {
            let p = (row[j] - max).exp() / sum;
            dz[(i, j)] = (p - f64::from(u8::from(j == label))) / n;
        }
    }
    (loss, hits, dz)
}

/// The refusal of a loss at every step by the head at the last step.
fn every_step_loss() -> anyhow::Error {
    Error::setting(
        "Hyper::loss",
        "loss ce-seq scores a head at every step (cpu::seq_head::head_steps), not the head at \
         the last step",
    )
    .into()
}

/// Mean squared error over all entries, hit rate and ∂ℓ/∂z.
fn squared_error(z: &DMatrix<f64>, t: &DMatrix<f64>) -> (f64, f64, DMatrix<f64>) {
    let n = z.len() as f64;
    let diff = z - t;
    let hits = diff.iter().filter(|e| e.abs() < REGRESSION_HIT).count();
    (diff.norm_squared() / n, hits as f64 / n, diff * (2.0 / n))
}
