//! The checks both backends run on what they are given, before any work: a batch against
//! the parameters, targets against the loss and the head.

use anyhow::{bail, Result};

use crate::config::{Hyper, Loss};
use crate::model::Params;
use crate::plan::{Device, Plan};
use crate::tasks::{Batch, Targets};

/// Checks that `batch` fits `params`, naming the mismatch.
pub fn check_batch(params: &Params, batch: &Batch) -> Result<()> {
    let p = params.w_ih.ncols();
    if batch.seq_len() == 0 {
        bail!("tensor x has no time steps (T = 0)");
    }
    let b = batch.batch_size();
    for x_t in &batch.x {
        if x_t.shape() != (b, p) {
            bail!("tensor x has steps of shape {:?}, expected [{b}, {p}] (B sequences, p = rnn.w_ih columns)", x_t.shape());
        }
    }
    Ok(())
}

/// Checks that `y` suits `loss` and a head with `q` outputs on `b` sequences.
pub fn check_targets(y: &Targets, loss: Loss, b: usize, q: usize) -> Result<()> {
    match (loss, y) {
        (Loss::CrossEntropy, Targets::Labels(l)) => {
            if l.len() != b {
                bail!("tensor y has {} labels for {b} sequences", l.len());
            }
            if let Some(bad) = l.iter().find(|&&c| c >= q) {
                bail!("tensor y holds label {bad}, but the head has only {q} classes");
            }
        }
        (Loss::Mse, Targets::Values(v)) => {
            if v.shape() != (b, q) {
                bail!(
                    "tensor y has shape {:?}, expected [{b}, {q}] for mse",
                    v.shape()
                );
            }
        }
        (Loss::CrossEntropy, Targets::Values(_)) => {
            bail!("loss ce needs integer labels y of shape [B], got real-valued targets")
        }
        (Loss::Mse, Targets::Labels(_)) => {
            bail!("loss mse needs real targets y of shape [B, q], got integer labels")
        }
    }
    Ok(())
}

/// Everything a step checks before any work or upload: that `hyper` can run for the model
/// of `params` on `device` (`Plan::check`), that `batch` fits the parameters, and that its
/// targets fit the loss and the head.
pub fn check_run(params: &Params, batch: &Batch, hyper: &Hyper, device: Device) -> Result<()> {
    Plan::check(params.cell, hyper, device)?;
    check_batch(params, batch)?;
    check_targets(
        &batch.y,
        hyper.loss,
        batch.batch_size(),
        params.dims().output,
    )
}
