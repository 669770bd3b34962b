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

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Mutex;

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::arguments::{cell_inputs, cell_params, matrix, steps};
use crate::cg::CgReport;
use crate::cpu::gru::{gate_history, gru_step_backward, kept_or_formed};
use crate::cpu::simd::step_product;
use crate::cpu::steps::{core_groups, in_parallel, Steps, StepsPart};
use crate::model::{CellKind, Params};

mod per_step;

pub use per_step::per_step_cg;
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

/// The tanh RNN, `J_t = D_t W` with `D_t = diag(1 − h_t²)`. The exact derivative, not the
/// clamped one of docs/ALGORITHM.md §2's sweep: the two agree wherever |h_t| < 1 − ε.
pub struct TanhCell<'a> {
    w: &'a DMatrix<f64>,
    /// Wᵀ, column-major, so that Jᵀ's product reads it in place too.
    w_t: DMatrix<f64>,
    /// h_0 … h_T, whose 1 − h_t² is D_t.
    h: Cow<'a, Steps>,
}

impl<'a> TanhCell<'a> {
    /// Linearizes the tanh RNN `params` at the states `h` (h_0 … h_T, each B × d): an
    /// error naming the argument where a shape does not fit.
    pub fn new(params: &'a Params, h: &[DMatrix<f64>]) -> Result<Self> {
        let d = cell_params(params, CellKind::Tanh, "TanhCell::new")?.hidden;
        let b = h.first().map_or(0, |m| m.nrows());
        steps("h", h, h.len().max(1), (b, d))?;
        Ok(Self {
            w: &params.w_hh,
            w_t: params.w_hh.transpose(),
            h: Cow::Owned(Steps::from_rows(h, b, d)),
        })
    }

    /// Linearizes at the states `h` (h_0 … h_T) in the working layout.
    pub(crate) fn at(params: &'a Params, h: &'a Steps) -> Self {
        Self {
            w: &params.w_hh,
            w_t: params.w_hh.transpose(),
            h: Cow::Borrowed(h),
        }
    }

    /// D_t = 1 − h_t² of the sequences `seqs`, element by element.
    fn deriv(&self, t: usize, seqs: &Range<usize>) -> impl Iterator<Item = f64> + '_ {
        self.h.at(t, seqs).iter().map(|&v| 1.0 - v * v)
    }
}

impl Cell for TanhCell<'_> {
    fn steps(&self) -> usize {
        self.h.steps().saturating_sub(1)
    }

    fn width(&self) -> usize {
        self.w.ncols()
    }

    fn batch(&self) -> usize {
        self.h.batch()
    }

    fn jvp_into(
        &self,
        (t, seqs): Step<'_>,
        u: &[f64],
        out: &mut [f64],
        _: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), u, out)?;
        step_product(self.w.as_slice(), self.width(), u, false, out);
        for (o, dv) in out.iter_mut().zip(self.deriv(t, seqs)) {
            *o *= dv;
        }
        Ok(())
    }

    fn vjp_into(
        &self,
        (t, seqs): Step<'_>,
        w: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), w, out)?;
        scratch.clear();
        scratch.extend(w.iter().zip(self.deriv(t, seqs)).map(|(a, dv)| a * dv));
        step_product(self.w_t.as_slice(), self.width(), scratch, false, out);
        Ok(())
    }
}

/// The GRU of `cpu::gru`, linearized through its gates (all of which depend on h_{t−1}).
pub struct GruCell<'a> {
    params: &'a Params,
    /// W_hhᵀ [d, 3d], column-major, for Jᵀ's product.
    w_t: DMatrix<f64>,
    /// h_0 … h_T.
    h: Cow<'a, Steps>,
    /// The gates r | z | n | hn of steps 1 … T (step t at t − 1, 4d values a column).
    gates: Cow<'a, Steps>,
}

impl<'a> GruCell<'a> {
    /// Linearizes the GRU `params` at the states `h` (h_0 … h_T, each B × d) and inputs `x`
    /// (x_1 … x_T, each B × p): an error naming the argument where a shape does not fit.
    pub fn new(params: &'a Params, x: &[DMatrix<f64>], h: &[DMatrix<f64>]) -> Result<Self> {
        let (dims, t_len, b) = cell_inputs(params, CellKind::Gru, x, "GruCell::new")?;
        steps("h", h, t_len + 1, (b, dims.hidden))?;
        let x = Steps::from_rows(x, b, dims.input);
        let h = Steps::from_rows(h, b, dims.hidden);
        let gates = gate_history(params, &x, &h);
        Ok(Self {
            params,
            w_t: params.w_hh.transpose(),
            h: Cow::Owned(h),
            gates: Cow::Owned(gates),
        })
    }

    /// Linearizes at the states `h` in the working layout, at the gates the forward pass
    /// kept (`None`: formed again from h and x).
    pub(crate) fn at(
        params: &'a Params,
        x: &Steps,
        h: &'a Steps,
        gates: Option<&'a Steps>,
    ) -> Self {
        Self {
            params,
            w_t: params.w_hh.transpose(),
            h: Cow::Borrowed(h),
            gates: kept_or_formed(params, x, h, gates),
        }
    }
}

impl Cell for GruCell<'_> {
    fn steps(&self) -> usize {
        self.gates.steps()
    }

    fn width(&self) -> usize {
        self.params.w_hh.ncols()
    }

    fn batch(&self) -> usize {
        self.h.batch()
    }

    fn jvp_into(
        &self,
        (t, seqs): Step<'_>,
        u: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), u, out)?;
        let d = self.width();
        // Tangent of gh = W h + b_hh, all three gates at once.
        scratch.resize(3 * u.len(), 0.0);
        step_product(self.params.w_hh.as_slice(), 3 * d, u, false, scratch);
        let columns = out
            .chunks_exact_mut(d)
            .zip(u.chunks_exact(d))
            .zip(scratch.chunks_exact(3 * d))
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((((o, u), du), g), h_prev) in columns {
            for j in 0..d {
                let (r, z, n, hn) = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let dr = r * (1.0 - r) * du[j];
                let dz = z * (1.0 - z) * du[d + j];
                let dn = (1.0 - n * n) * (dr * hn + r * du[2 * d + j]);
                o[j] = (h_prev[j] - n) * dz + (1.0 - z) * dn + z * u[j];
            }
        }
        Ok(())
    }

    fn vjp_into(
        &self,
        (t, seqs): Step<'_>,
        w: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), w, out)?;
        let d = self.width();
        // The BP step backward is exactly Jᵀ w: z ⊙ w, then Wᵀ dgh.
        scratch.resize(3 * w.len(), 0.0);
        let columns = out
            .chunks_exact_mut(d)
            .zip(w.chunks_exact(d))
            .zip(scratch.chunks_exact_mut(3 * d))
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((((o, w), dgh), g), h_prev) in columns {
            for j in 0..d {
                let gates = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let [da_r, da_z, da_n] = gru_step_backward(w[j], gates, h_prev[j]);
                dgh[j] = da_r;
                dgh[d + j] = da_z;
                dgh[2 * d + j] = da_n * gates.0;
                o[j] = gates.1 * w[j];
            }
        }
        step_product(self.w_t.as_slice(), d, scratch, true, out);
        Ok(())
    }
}

/// Linearized targets of docs/ALGORITHM.md §5 from the top target `v_t` (v_T, B×d) down:
/// `v_{t−1} = h_{t−1} + (J_tᵀJ_t + rI)⁻¹ J_tᵀ (v_t − h_t)` for t = T … 2. Returns v_0 … v_T
/// (v_0, never used, equal to h_0, as in `target_sweep`) and the CG report of each solved
/// step, for t = T … 2 in that order.
pub fn jacobian_sweep(
    cell: &dyn Cell,
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
) -> Result<(Vec<DMatrix<f64>>, Vec<CgReport>)> {
    let (t_len, b, d) = (cell.steps(), v_top.nrows(), cell.width());
    matrix("v_top", v_top, b, d)?;
    steps("h", h, t_len + 1, (b, d))?;
    let h = Steps::from_rows(h, b, d);
    let mut v = Steps::zeros(t_len + 1, b, d);
    v.step_mut(t_len)
        .copy_from_slice(v_top.transpose().as_slice());
    let reports = jacobian_sweep_steps(cell, &h, &mut v, (reg, tol, max_iter))?;
    Ok((v.to_rows(), reports))
}

/// `jacobian_sweep` in the working layout: `v` holds v_T at step T on entry, and v_0 = h_0,
/// v_1 … v_{T−1} are written; `(reg, tol, max_iter)` as `per_step_cg` takes them. The
/// sequences go in one group per core where the sweep is large enough (`core_groups`),
/// each group walking all its steps on its own and each sequence's solve stopping on its
/// own residual; a step's report is its worst group's.
pub(crate) fn jacobian_sweep_steps(
    cell: &dyn Cell,
    h: &Steps,
    v: &mut Steps,
    (reg, tol, max_iter): (f64, f64, usize),
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
        check_solve(cell, t_len, reg)?;
    }
    v.step_mut(0).copy_from_slice(h.step(0));
    let groups = core_groups(b, t_len * b * d * d);
    // Per group, by its first sequence: each step's report, or its first failed solve.
    let outcomes = Mutex::new(Vec::new());
    in_parallel(v.parts_mut(&groups), |mut part| {
        let first = part.seqs.start;
        let outcome = sweep_group(cell, h, &mut part, (reg, tol, max_iter));
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
    solve: (f64, f64, usize),
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
