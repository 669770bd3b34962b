//! What the kernels' public functions check of their arguments before any work: the CPU
//! reference's row forms (one B × size matrix a step, `tpri::cpu::*`) and their GPU twins
//! (`gpu::one_shot`), which the tests compare and embedding programs may call. The
//! parameters' shapes and cell, the inputs, states, targets and P against them, and the
//! memory of T steps of B sequences: a wrong shape is an [`Error`] naming the argument,
//! never a panic. The training path checks its batch once (`crate::validate`) and runs
//! the kernels inside the crate, which check nothing more.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::Hyper;
use crate::error::{shape_of, Error};
use crate::kernel_io::Injection;
use crate::limits::Workload;
use crate::model::{CellKind, Dims, Params};
use crate::validate::{check_input_steps, check_param_shapes};

/// The sizes of `params`, checked: every tensor of the shape they give, and a `cell` cell
/// (`kernel` names the function, for the message).
pub(crate) fn cell_params(params: &Params, cell: CellKind, kernel: &str) -> Result<Dims> {
    if params.cell != cell {
        return Err(Error::setting(
            "Params::cell",
            format!(
                "{kernel} takes a {cell:?} cell's parameters, got a {:?} cell's",
                params.cell
            ),
        )
        .into());
    }
    check_param_shapes(params)
}

/// `cell_params`, then the inputs x_1 … x_T against them (`check_input_steps`) and the
/// memory of T steps of their B sequences (`Workload::check_cpu`). Returns (sizes, T, B).
pub(crate) fn cell_inputs(
    params: &Params,
    cell: CellKind,
    x: &[DMatrix<f64>],
    kernel: &str,
) -> Result<(Dims, usize, usize)> {
    let dims = cell_params(params, cell, kernel)?;
    let b = check_input_steps(dims.input, x)?;
    Workload::new(cell, dims, x.len(), b, &Hyper::default()).check_cpu()?;
    Ok((dims, x.len(), b))
}

/// That `m` (the argument `name`) is `rows` × `cols`.
pub(crate) fn matrix(name: &str, m: &DMatrix<f64>, rows: usize, cols: usize) -> Result<()> {
    if m.shape() == (rows, cols) {
        return Ok(());
    }
    Err(Error::shape(
        name,
        shape_of(&[m.nrows(), m.ncols()]),
        shape_of(&[rows, cols]),
    )
    .into())
}

/// That `steps` (the argument `name`) holds `count` matrices of `rows` × `cols`.
pub(crate) fn steps(
    name: &str,
    steps: &[DMatrix<f64>],
    count: usize,
    (rows, cols): (usize, usize),
) -> Result<()> {
    if steps.len() != count {
        return Err(Error::shape(
            name,
            format!("{} steps", steps.len()),
            format!("{count} steps of {}", shape_of(&[rows, cols])),
        )
        .into());
    }
    for (t, m) in steps.iter().enumerate() {
        matrix(&format!("{name} (step {t})"), m, rows, cols)?;
    }
    Ok(())
}

/// That `other` (the argument `name`: gradients, an optimizer slot) holds the tensors of
/// `params`, each of its shape.
pub(crate) fn like_params(name: &str, other: &Params, params: &Params) -> Result<()> {
    let (want, got) = (params.tensors(), other.tensors());
    if want.len() != got.len() {
        return Err(Error::shape(
            name,
            format!("{} tensors", got.len()),
            format!("{} tensors, as the parameters hold", want.len()),
        )
        .into());
    }
    for ((tensor, m), (_, o)) in want.iter().zip(&got) {
        matrix(&format!("{name} ({tensor})"), o, m.nrows(), m.ncols())?;
    }
    Ok(())
}

/// That what `injection` puts into the backward recursion fits T = `t_len` steps of
/// `states` = (B, d): g_T B × d, or the targets or gradients of h_0 … h_T.
pub(crate) fn injection(injection: &Injection, t_len: usize, states: (usize, usize)) -> Result<()> {
    match injection {
        Injection::Top(g) => matrix("Injection::Top", g, states.0, states.1),
        Injection::Targets(v) => steps("Injection::Targets", v, t_len + 1, states),
        Injection::Steps(g) => steps("Injection::Steps", g, t_len + 1, states),
    }
}
