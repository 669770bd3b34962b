//! The head at every step and its loss (docs/ALGORITHM.md §13; twin of
//! `shaders/seq_head.wgsl`): `z_t = V h_t + c` for t = 1 … T, softmax cross-entropy against
//! each step's label, averaged over all B·T predictions.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::steps;
use crate::config::Loss;
use crate::cpu::head::cross_entropy;
use crate::cpu::steps::Steps;
use crate::error::{shape_of, Error};
use crate::kernel_io::StepHeadOut;
use crate::model::Params;
use crate::tasks::Targets;
use crate::validate::{check_param_shapes, check_targets};

/// The heads' loss and gradients at the states `h` (h_0 … h_T, each B×d) against per-step
/// labels `y` ([`Targets::StepLabels`], B×T): an error naming the argument where a shape
/// does not fit.
pub fn head_steps(params: &Params, h: &[DMatrix<f64>], y: &Targets) -> Result<StepHeadOut> {
    let d = check_param_shapes(params)?.hidden;
    let b = h.first().map_or(0, |h_0| h_0.nrows());
    steps("h", h, h.len(), (b, d))?;
    head_steps_layout(params, &Steps::from_rows(h, b, d), y)
}

/// `head_steps` at the states in the working layout. One step's B×q outputs at a time:
/// the B·T·q of all steps are never held at once.
pub(crate) fn head_steps_layout(params: &Params, h: &Steps, y: &Targets) -> Result<StepHeadOut> {
    let (b, t_len) = (h.batch(), h.steps().saturating_sub(1));
    let q = params.head_w.nrows();
    check_targets(y, Loss::CrossEntropySeq, b, q)?;
    // `check_targets` lets only per-step labels through for this loss.
    let Targets::StepLabels(labels) = y else {
        return Err(
            Error::setting("Hyper::loss", "loss ce-seq needs labels Batch::y [B, T]").into(),
        );
    };
    if labels.ncols() != t_len || t_len == 0 {
        return Err(Error::shape(
            "Batch::y",
            shape_of(&[labels.nrows(), labels.ncols()]),
            format!("[{b}, {t_len}], one label per step of h_1 … h_T"),
        )
        .into());
    }
    if params.head_w.ncols() != h.width() {
        return Err(Error::shape(
            "Params::head_w (head.w)",
            shape_of(&[q, params.head_w.ncols()]),
            format!("[{q}, {}], d columns as h has", h.width()),
        )
        .into());
    }
    let count = b * t_len;
    let mut grad_h = vec![DMatrix::zeros(b, h.width())];
    let mut grad_w = DMatrix::zeros(q, h.width());
    let mut grad_b = DMatrix::zeros(q, 1);
    let mut step_losses = Vec::with_capacity(t_len);
    let (mut loss, mut hits) = (0.0, 0usize);
    for t in 1..=t_len {
        let h_t = h.rows_at(t);
        let mut z = &h_t * params.head_w.transpose();
        for mut row in z.row_iter_mut() {
            row += params.head_b.transpose();
        }
        let step_labels: Vec<usize> = labels.column(t - 1).iter().copied().collect();
        let (sum, step_hits, dz) = cross_entropy(&z, &step_labels, count);
        step_losses.push(sum / b as f64);
        loss += sum;
        hits += step_hits;
        grad_h.push(&dz * &params.head_w);
        grad_w += dz.tr_mul(&h_t);
        grad_b += dz.row_sum().transpose();
    }
    Ok(StepHeadOut {
        loss: loss / count as f64,
        accuracy: hits as f64 / count as f64,
        step_losses,
        grad_h,
        grad_w,
        grad_b,
    })
}
