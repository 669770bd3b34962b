//! Generalized regularized inversion (docs/ALGORITHM.md §5): Jacobian–vector and vector–Jacobian
//! products of a cell's step map h_{t−1} ↦ h_t at stored states, the per-step batched
//! matrix-free CG for `(J_tᵀ J_t + r I) z = J_tᵀ (v_t − h_t)`, and the target sweep built
//! on it. J_t is never formed: the GPU twin will only have the products.
//!
//! The work runs in the working layout of `cpu::steps`: a step's vectors are the columns
//! of one d × B block, each sequence's contiguous, and the products read W in place
//! (`simd::step_product`), with the buffers of a sweep allocated once. A sweep splits the
//! batch into one group of sequences per core (`steps::core_groups`); every sequence's
//! solve stops on its own residual, so the split changes no bit of the result. The
//! public functions that take one B × d matrix per step (sequences as rows) convert and
//! call it.

use std::ops::Range;
use std::sync::Mutex;

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::arguments::{matrix, steps};
use crate::cg::CgReport;
use crate::config::Preconditioner;
use crate::cpu::steps::{core_groups, in_parallel, Steps, StepsPart};
use crate::model::CellKind;

mod cells;
mod per_step;

pub use cells::{GruCell, TanhCell};
pub use per_step::per_step_cg;
pub(crate) use per_step::StepSolve;
use per_step::{check_solve, solve_columns, CgWork};

/// A recurrent cell linearized at the stored states h_0 … h_T and inputs x_1 … x_T.
/// Step t (1 ≤ t ≤ T) is `J_t = ∂h_t/∂h_{t−1}` at (h_{t−1}, x_t); every product is batched
/// over sequences of the batch, each with its own J_t. A product whose step, sequences or
/// vectors do not fit the cell is an error naming them (`check_product`), never a panic.
pub trait Cell: Sync {
    /// Number of steps T.
    fn steps(&self) -> usize;

    /// The hidden size d.
    fn width(&self) -> usize;

    /// The number of sequences B the cell is linearized on.
    fn batch(&self) -> usize;

    /// Which cell it is (`Preconditioner::Auto` picks by it).
    fn kind(&self) -> CellKind;

    /// `J_t u` at step `t` for the sequences `seqs`, one column of `u` each
    /// (d × seqs.len(), column-major), into `out` (the same shape); `scratch` is work space
    /// the call may resize.
    fn jvp_into(
        &self,
        step: Step<'_>,
        u: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()>;

    /// `J_tᵀ w` for the sequences `seqs` into `out`, as `jvp_into`.
    fn vjp_into(
        &self,
        step: Step<'_>,
        w: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()>;

    /// The diagonal of `J_tᵀ J_t` (the squared norms of J_t's columns) for the sequences
    /// `seqs`, one column of `out` each (d × seqs.len()): the Jacobi preconditioner of the
    /// per-step CG, formed from the cell's linearization without forming J_t.
    fn normal_diagonal_into(
        &self,
        step: Step<'_>,
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()>;

    /// `J_t u` for each row of `u` (B × d, sequences as rows: the whole batch).
    fn jvp(&self, t: usize, u: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        let seqs = 0..u.nrows();
        on_rows(u, |cols, out| {
            self.jvp_into((t, &seqs), cols, out, &mut Vec::new())
        })
    }

    /// `J_tᵀ w` for each row of `w` (B × d, sequences as rows: the whole batch).
    fn vjp(&self, t: usize, w: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        let seqs = 0..w.nrows();
        on_rows(w, |cols, out| {
            self.vjp_into((t, &seqs), cols, out, &mut Vec::new())
        })
    }

    /// The diagonal of `J_tᵀ J_t` for every sequence of the batch, one row each (B × d).
    fn normal_diagonal(&self, t: usize) -> Result<DMatrix<f64>> {
        let (b, d) = (self.batch(), self.width());
        let seqs = 0..b;
        on_rows(&DMatrix::zeros(b, d), |_, out| {
            self.normal_diagonal_into((t, &seqs), out, &mut Vec::new())
        })
    }
}

/// A step t of a cell and the sequences of the batch a product covers.
pub type Step<'a> = (usize, &'a Range<usize>);

/// That a product of `cell` at `step` maps `input` to `out`: t in 1 … T, the sequences
/// within the batch, and both d × (sequences) values.
fn check_product(cell: &dyn Cell, (t, seqs): Step<'_>, input: &[f64], out: &[f64]) -> Result<()> {
    let (t_len, b, d) = (cell.steps(), cell.batch(), cell.width());
    if !(1..=t_len).contains(&t) {
        bail!("step {t} is outside 1 … {t_len}");
    }
    if seqs.start > seqs.end || seqs.end > b {
        bail!("sequences {seqs:?} are outside the batch of {b}");
    }
    let len = d * seqs.len();
    if input.len() != len || out.len() != len {
        bail!(
            "a product at step {t} takes and gives d × (sequences) = {d} × {} values, got {} and {}",
            seqs.len(),
            input.len(),
            out.len()
        );
    }
    Ok(())
}

/// `apply` on the rows of `rows` (B × d) as columns, its output back as rows.
fn on_rows(
    rows: &DMatrix<f64>,
    apply: impl FnOnce(&[f64], &mut [f64]) -> Result<()>,
) -> Result<DMatrix<f64>> {
    let (b, d) = rows.shape();
    let cols = rows.transpose();
    let mut out = vec![0.0; b * d];
    apply(cols.as_slice(), &mut out)?;
    Ok(DMatrix::from_column_slice(d, b, &out).transpose())
}

/// Linearized targets of docs/ALGORITHM.md §5 from the top target `v_t` (v_T, B×d) down:
/// `v_{t−1} = h_{t−1} + (J_tᵀJ_t + rI)⁻¹ J_tᵀ (v_t − h_t)` for t = T … 2. Returns v_0 … v_T
/// (v_0, never used, equal to h_0, as in `target_sweep`) and the CG report of each solved
/// step, for t = T … 2 in that order. Each step's solve is `per_step_cg`'s.
pub fn jacobian_sweep(
    cell: &dyn Cell,
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    precondition: Preconditioner,
) -> Result<(Vec<DMatrix<f64>>, Vec<CgReport>)> {
    let (t_len, b, d) = (cell.steps(), v_top.nrows(), cell.width());
    matrix("v_top", v_top, b, d)?;
    steps("h", h, t_len + 1, (b, d))?;
    let h = Steps::from_rows(h, b, d);
    let mut v = Steps::zeros(t_len + 1, b, d);
    v.step_mut(t_len)
        .copy_from_slice(v_top.transpose().as_slice());
    let reports = jacobian_sweep_steps(cell, &h, &mut v, (reg, tol, max_iter, precondition))?;
    Ok((v.to_rows(), reports))
}

/// `jacobian_sweep` in the working layout: `v` holds v_T at step T on entry, and v_0 = h_0,
/// v_1 … v_{T−1} are written; `(reg, tol, max_iter, precondition)` as `per_step_cg` takes
/// them. The
/// sequences go in one group per core where the sweep is large enough (`core_groups`),
/// each group walking all its steps on its own and each sequence's solve stopping on its
/// own residual; a step's report is its worst group's.
pub(crate) fn jacobian_sweep_steps(
    cell: &dyn Cell,
    h: &Steps,
    v: &mut Steps,
    solve: StepSolve,
) -> Result<Vec<CgReport>> {
    let (t_len, b, d) = (cell.steps(), h.batch(), cell.width());
    if (h.steps(), h.width()) != (t_len + 1, d)
        || (v.steps(), v.batch(), v.width()) != (t_len + 1, b, d)
    {
        bail!(
            "jacobian_sweep_steps needs h and v of T + 1 = {} steps of width {d}",
            t_len + 1
        );
    }
    if t_len >= 2 {
        check_solve(cell, t_len, solve.0)?;
    }
    v.step_mut(0).copy_from_slice(h.step(0));
    let groups = core_groups(b, t_len * b * d * d);
    // Per group, by its first sequence: each step's report, or its first failed solve.
    let outcomes = Mutex::new(Vec::new());
    in_parallel(v.parts_mut(&groups), |mut part| {
        let first = part.seqs.start;
        let outcome = sweep_group(cell, h, &mut part, solve);
        outcomes
            .lock()
            .expect("no thread panics holding it")
            .push((first, outcome));
    });
    let mut outcomes = outcomes.into_inner().expect("no thread panicked");
    outcomes.sort_by_key(|(first, _)| *first);
    let groups = outcomes
        .into_iter()
        .map(|(_, outcome)| outcome)
        .collect::<Result<Vec<_>>>()?;
    Ok(CgReport::worst_by_solve(groups))
}

/// One group's sweep: its sequences' v_{t−1} from v_t for t = T … 2, each step's report in
/// that order.
fn sweep_group(
    cell: &dyn Cell,
    h: &Steps,
    part: &mut StepsPart<'_>,
    solve: StepSolve,
) -> Result<Vec<CgReport>> {
    let (t_len, d) = (cell.steps(), cell.width());
    let seqs = part.seqs.clone();
    let n = seqs.len();
    let mut work = CgWork::default();
    let (mut u, mut z) = (vec![0.0; d * n], vec![0.0; d * n]);
    let mut reports = Vec::with_capacity(t_len.saturating_sub(1));
    for t in (2..=t_len).rev() {
        let (vt, v_prev) = part.pair_mut(t, t - 1);
        for ((u_j, &v_j), &h_j) in u.iter_mut().zip(vt.iter()).zip(h.at(t, &seqs)) {
            *u_j = v_j - h_j;
        }
        reports.push(solve_columns(
            cell,
            (t, &seqs),
            &u,
            solve,
            &mut work,
            &mut z,
        )?);
        for ((v_j, &h_j), &z_j) in v_prev.iter_mut().zip(h.at(t - 1, &seqs)).zip(&z) {
            *v_j = h_j + z_j;
        }
    }
    Ok(reports)
}
