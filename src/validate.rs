//! The checks both backends run on what they are given, before any work: parameters
//! (shapes that fit together, no empty size, finite values), a batch against the
//! parameters (its x, then its y), targets against the loss and the head. Both backends
//! call the same functions, so they accept and refuse exactly the same inputs, with the
//! same [`Error`]s naming the field.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::{Hyper, Loss, Method};
use crate::error::{shape_of, Error};
use crate::model::{CellKind, Dims, Params};
use crate::plan::{Device, Plan};
use crate::tasks::{Batch, Targets};

/// `Params::w_hh (rnn.w_hh)`: tensor `i` of `params` as its field and its name in files.
fn param_name(params: &Params, i: usize) -> String {
    format!("{} ({})", params.fields()[i], params.names()[i])
}

/// Where the first non-finite value of `m` is, as `NaN at row i, column j`.
pub fn first_non_finite(m: &DMatrix<f64>) -> Option<String> {
    let (rows, _) = m.shape();
    m.iter().position(|v| !v.is_finite()).map(|k| {
        let v = m.as_slice()[k];
        format!("{v} at row {}, column {}", k % rows.max(1), k / rows.max(1))
    })
}

/// Checks parameters on their own: their shapes (`check_param_shapes`) and every value
/// finite. Returns the sizes.
pub fn check_params(params: &Params) -> Result<Dims> {
    let dims = check_param_shapes(params)?;
    for (i, (_, m)) in params.tensors().iter().enumerate() {
        if let Some(at) = first_non_finite(m) {
            return Err(Error::value(param_name(params, i), format!("holds {at}")).into());
        }
    }
    Ok(dims)
}

/// Checks the shapes of parameters: every size at least 1 (d, p and q from `w_hh`,
/// `w_ih` and `head_w`), every tensor of the shape those sizes give. Returns the sizes.
pub fn check_param_shapes(params: &Params) -> Result<Dims> {
    let dims = params.dims();
    let cell = params.cell;
    for (i, size, what) in [
        (0, dims.hidden, "the hidden size d = columns of"),
        (1, dims.input, "the input size p = columns of"),
        (
            cell.param_names().len() - 2,
            dims.output,
            "the output size q = rows of",
        ),
    ] {
        if size == 0 {
            let m = params.tensors()[i].1;
            let name = param_name(params, i);
            return Err(Error::shape(
                &name,
                shape_of(&[m.nrows(), m.ncols()]),
                format!("{what} {name}, at least 1"),
            )
            .into());
        }
    }
    params.check_dims(dims)?;
    Ok(dims)
}

/// Checks that `batch` fits `params`, naming the mismatch (see [`check_inputs`], and
/// [`check_tokens`] for a trained embedding table).
pub fn check_batch(params: &Params, batch: &Batch) -> Result<()> {
    check_inputs(params.dims(), batch)?;
    check_tokens(params.vocabulary(), batch)
}

/// Checks the inputs of `batch` for a model of sizes `dims`: at least one step, at least
/// one sequence, every step of shape [B, p] (B from the first step, p from `dims`), every
/// value finite; then that `y` has one row per sequence of `x` (and per-step labels one
/// column per step; the loss checks the rest, [`check_targets`]).
pub fn check_inputs(dims: Dims, batch: &Batch) -> Result<()> {
    let b = check_input_steps(dims.input, &batch.x)?;
    let rows = batch.y.len();
    let t_len = batch.x.len();
    if let Targets::StepLabels(l) = &batch.y {
        if l.shape() != (b, t_len) {
            return Err(Error::shape(
                "Batch::y",
                shape_of(&[l.nrows(), l.ncols()]),
                format!("[{b}, {t_len}], one label per sequence and step of Batch::x"),
            )
            .into());
        }
    }
    if rows != b {
        let found = match &batch.y {
            Targets::Labels(l) => format!("[{}] ({} labels)", l.len(), l.len()),
            Targets::Values(v) => shape_of(&[v.nrows(), v.ncols()]),
            Targets::StepLabels(l) => shape_of(&[l.nrows(), l.ncols()]),
        };
        return Err(Error::shape(
            "Batch::y",
            found,
            format!("{b} rows, one per sequence of Batch::x"),
        )
        .into());
    }
    Ok(())
}

/// Checks inputs x_1 … x_T (`Batch::x`, or a reference kernel's `x`) for a model with `p`
/// inputs: at least one step, at least one sequence, every step of shape [B, p] (B from
/// the first step), every value finite. Returns B.
pub fn check_input_steps(p: usize, x: &[DMatrix<f64>]) -> Result<usize> {
    let Some(first) = x.first() else {
        return Err(Error::shape("Batch::x", "[B, 0, p]", "at least one time step (T ≥ 1)").into());
    };
    let b = first.nrows();
    if b == 0 {
        return Err(Error::shape(
            "Batch::x",
            format!("[0, {}, {}]", x.len(), first.ncols()),
            "at least one sequence (B ≥ 1)",
        )
        .into());
    }
    for (t, x_t) in x.iter().enumerate() {
        if x_t.shape() != (b, p) {
            return Err(Error::shape(
                format!("Batch::x (step {})", t + 1),
                shape_of(&[x_t.nrows(), x_t.ncols()]),
                format!(
                    "[{b}, {p}] (B = {b} sequences as in step 1, p = {p} columns of Params::w_ih)"
                ),
            )
            .into());
        }
        if let Some(k) = x_t.iter().position(|v| !v.is_finite()) {
            return Err(Error::value(
                "Batch::x",
                format!(
                    "holds {} at step {}, sequence {}, input {}",
                    x_t.as_slice()[k],
                    t + 1,
                    k % b,
                    k / b
                ),
            )
            .into());
        }
    }
    Ok(b)
}

/// That every label is a class of the head's `q`.
fn check_labels<'a>(labels: impl IntoIterator<Item = &'a usize>, q: usize) -> Result<()> {
    match labels.into_iter().find(|&&c| c >= q) {
        Some(bad) => Err(Error::value(
            "Batch::y",
            format!(
                "holds label {bad}, but the head has only {q} classes (rows of Params::head_w)"
            ),
        )
        .into()),
        None => Ok(()),
    }
}

/// Checks that `y` suits `loss` and a head with `q` outputs on `b` sequences (per-step
/// labels: their number of steps is `check_inputs`'s to check, against the batch's x).
pub fn check_targets(y: &Targets, loss: Loss, b: usize, q: usize) -> Result<()> {
    match (loss, y) {
        (Loss::CrossEntropy, Targets::Labels(l)) => {
            if l.len() != b {
                let found = format!("[{}] ({} labels)", l.len(), l.len());
                return Err(Error::shape(
                    "Batch::y",
                    found,
                    format!("[{b}], one label per sequence"),
                )
                .into());
            }
            check_labels(l.iter(), q)?;
        }
        (Loss::Mse, Targets::Values(v)) => {
            if v.shape() != (b, q) {
                return Err(Error::shape(
                    "Batch::y",
                    shape_of(&[v.nrows(), v.ncols()]),
                    format!("[{b}, {q}] for mse (B sequences, q = rows of Params::head_w)"),
                )
                .into());
            }
            if let Some(at) = first_non_finite(v) {
                return Err(Error::value("Batch::y", format!("holds {at}")).into());
            }
        }
        (Loss::CrossEntropySeq, Targets::StepLabels(l)) => {
            if l.nrows() != b {
                return Err(Error::shape(
                    "Batch::y",
                    shape_of(&[l.nrows(), l.ncols()]),
                    format!("[{b}, T], one label per sequence and step"),
                )
                .into());
            }
            check_labels(l.iter(), q)?;
        }
        (Loss::CrossEntropySeq, _) => {
            return Err(Error::setting(
                "Hyper::loss",
                "loss ce-seq needs integer labels Batch::y of shape [B, T], one per step",
            )
            .into())
        }
        (Loss::CrossEntropy | Loss::Mse, Targets::StepLabels(_)) => {
            return Err(Error::setting(
                "Hyper::loss",
                "labels at every step (Batch::y of shape [B, T]) need loss ce-seq, a head at \
                 every step",
            )
            .into())
        }
        (Loss::CrossEntropy, Targets::Values(_)) => {
            return Err(Error::setting(
                "Hyper::loss",
                "loss ce needs integer labels Batch::y of shape [B], got real-valued targets",
            )
            .into())
        }
        (Loss::Mse, Targets::Labels(_)) => {
            return Err(Error::setting(
                "Hyper::loss",
                "loss mse needs real targets Batch::y of shape [B, q], got integer labels",
            )
            .into())
        }
    }
    Ok(())
}

/// What a step checks of its batch before any work or upload, for a model of sizes
/// `dims` already checked (`check_params`), with a trained embedding table of
/// `vocabulary` rows where it has one: that `hyper` can run for `cell` on `device`
/// (`Plan::check`), that the batch fits, that its targets fit the loss and the head, and
/// that its token ids fit the table (`check_tokens`).
pub fn check_step(
    cell: CellKind,
    dims: Dims,
    vocabulary: Option<usize>,
    batch: &Batch,
    hyper: &Hyper,
    device: Device,
) -> Result<()> {
    Plan::check(cell, hyper, device)?;
    check_inputs(dims, batch)?;
    check_targets(&batch.y, hyper.loss, batch.batch_size(), dims.output)?;
    check_tokens(vocabulary, batch)
}

/// With a trained embedding table of `vocabulary` rows (docs/ALGORITHM.md §13): that the
/// batch carries token ids (`Batch::tokens`) of shape [B, T], each below the number of
/// rows. Without one, anything goes (the inputs are `Batch::x`).
pub fn check_tokens(vocabulary: Option<usize>, batch: &Batch) -> Result<()> {
    let Some(rows) = vocabulary else {
        return Ok(());
    };
    let (b, t_len) = (batch.batch_size(), batch.seq_len());
    let Some(ids) = &batch.tokens else {
        return Err(Error::setting(
            "Batch::tokens",
            "a trained embedding (Params::embedding, embed.weight) gathers its inputs from \
             the batch's token ids, and this batch has none: only the language model's \
             batches (--task lm; a batch file's tokens [B, T]) carry them",
        )
        .into());
    };
    if ids.shape() != (b, t_len) {
        return Err(Error::shape(
            "Batch::tokens",
            shape_of(&[ids.nrows(), ids.ncols()]),
            format!("[{b}, {t_len}], one token id per sequence and step of Batch::x"),
        )
        .into());
    }
    if let Some(k) = ids.iter().position(|&id| id as usize >= rows) {
        return Err(Error::value(
            "Batch::tokens",
            format!(
                "holds token id {} at sequence {}, step {}, but the embedding table \
                 (Params::embedding, embed.weight) has only {rows} rows",
                ids.as_slice()[k],
                k % b,
                k / b + 1
            ),
        )
        .into());
    }
    Ok(())
}

/// Checks that `params` hold a reverse layer (`Params::dtp`) exactly when `method` is
/// DTP, the one method that trains one (docs/ALGORITHM.md §14).
pub fn check_reverse_layer(params: &Params, method: Method) -> Result<()> {
    match (method, &params.dtp) {
        (Method::Dtp, None) => Err(Error::setting(
            "Params::dtp",
            "Method::Dtp needs the reverse layer's tensors dtp.w_rev and dtp.b_rev in the \
             parameters (Params::init_dtp draws them)",
        )
        .into()),
        (Method::Tp | Method::Bp, Some(_)) => Err(Error::setting(
            "Params::dtp",
            format!(
                "the parameters hold a reverse layer (dtp.w_rev, dtp.b_rev), which only \
                 Method::Dtp trains, not Method::{method:?}"
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Checks that a trained embedding table (`Params::embedding`) is one the backends train:
/// the tanh RNN's inputs, with TP-RI or BP (docs/ALGORITHM.md §13).
pub fn check_embedding(params: &Params, method: Method) -> Result<()> {
    if params.embedding.is_none() {
        return Ok(());
    }
    if params.cell != CellKind::Tanh {
        return Err(Error::setting(
            "Params::embedding",
            format!(
                "a trained embedding table (embed.weight) is implemented for the tanh RNN's \
                 language model, not the {:?} cell",
                params.cell
            ),
        )
        .into());
    }
    if method == Method::Dtp {
        return Err(Error::setting(
            "Params::embedding",
            "a trained embedding table (embed.weight) trains with Method::Tp or Method::Bp, \
             not DTP (which has no outputs at every step)",
        )
        .into());
    }
    Ok(())
}

/// Everything an iteration at `params` given by the caller checks before any work or
/// upload: the parameters (`check_params`), then the step (`check_step`), the reverse
/// layer (`check_reverse_layer`) and the embedding (`check_embedding`).
pub fn check_run(params: &Params, batch: &Batch, hyper: &Hyper, device: Device) -> Result<()> {
    let dims = check_params(params)?;
    check_embedding(params, hyper.method)?;
    check_step(params.cell, dims, params.vocabulary(), batch, hyper, device)?;
    check_reverse_layer(params, hyper.method)
}
