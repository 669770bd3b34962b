//! The backward target sweep (docs/ALGORITHM.md §2 steps 3–5; twin of `shaders/target_sweep.wgsl`).

use std::sync::Mutex;

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::{cell_inputs, cell_params, matrix, steps};
use crate::cg::CgReport;
use crate::config::{TargetMode, CLAMP_EPS};
use crate::cpu::batched_cg::Stop;
use crate::cpu::forward::input_term_into;
use crate::cpu::inverse::{normal_cg, NormalOperator};
use crate::cpu::simd::step_product;
use crate::cpu::steps::{core_groups, in_parallel, Steps, StepsPart};
use crate::model::{CellKind, Params};

/// `min(max(u, −1+ε), 1−ε)`.
pub fn clamp(u: f64) -> f64 {
    u.clamp(-1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS)
}

/// Regularized inverse of step t, `f_t⁻¹(v) = P(atanh(v) − U x_t − b)`, for a batch of rows
/// `v` (B×d) already clamped into (−1, 1), `x_t` B×p and P d×d: an error naming the
/// argument where a shape does not fit.
pub fn f_inverse(
    params: &Params,
    p_inv: &DMatrix<f64>,
    x_t: &DMatrix<f64>,
    v: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    let dims = cell_params(params, CellKind::Tanh, "f_inverse")?;
    let (b, d) = (v.nrows(), dims.hidden);
    matrix("v", v, b, d)?;
    matrix("x_t", x_t, b, dims.input)?;
    matrix("p_inv", p_inv, d, d)?;
    let mut pre = v.map(f64::atanh) - x_t * params.w_ih.transpose();
    let b = params.bias_sum().transpose();
    for mut row in pre.row_iter_mut() {
        row -= &b;
    }
    Ok(pre * p_inv.transpose())
}

/// How the sweep applies P = (WᵀW + rI)⁻¹Wᵀ to the columns it carries back a step.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Inverse<'a> {
    /// P formed once for the whole iteration (by CG or Cholesky).
    Formed(&'a DMatrix<f64>),
    /// P never formed (docs/ALGORITHM.md §4's alternative): every step solves `(WᵀW + rI) Z = Wᵀ S` for
    /// its columns S by batched CG from zero, each column (sequence) to its own relative
    /// residual `tol`.
    PerStep {
        /// `WᵀW + rI`, applied matrix-free.
        op: &'a NormalOperator<'a>,
        /// The relative-residual tolerance.
        tol: f64,
        /// The cap on CG iterations per step.
        max_iter: usize,
    },
}

impl Inverse<'_> {
    /// `out ← P S (+ out if accumulate)` for the d×n column-major columns `s`; the CG
    /// report of a per-step solve.
    fn apply(&self, s: &[f64], accumulate: bool, out: &mut [f64]) -> Result<Option<CgReport>> {
        match *self {
            Inverse::Formed(p_inv) => {
                step_product(p_inv.as_slice(), p_inv.nrows(), s, accumulate, out);
                Ok(None)
            }
            Inverse::PerStep { op, tol, max_iter } => {
                let d = op.size();
                let mut rhs = DMatrix::zeros(d, s.len() / d);
                op.w_t_times(s, rhs.as_mut_slice());
                let (z, report) = normal_cg(op, rhs, (tol, max_iter, Stop::EachColumn), None)?;
                for (o, &zi) in out.iter_mut().zip(z.as_slice()) {
                    *o = if accumulate { zi + *o } else { zi };
                }
                Ok(Some(report))
            }
        }
    }
}

/// Targets v_0 … v_T of the tanh RNN `params` from the hidden states `h` (h_0 … h_T, each
/// B×d), the inputs `x` (x_1 … x_T, each B×p), P (`p_inv`, d×d), the loss gradient `grad_h`
/// at h_T (B×d) and the target step `lr_target`. v_0 is never used; it is returned equal to
/// h_0. An error naming the argument where a shape does not fit.
pub fn target_sweep(
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    mode: TargetMode,
) -> Result<Vec<DMatrix<f64>>> {
    let (dims, t_len, b) = cell_inputs(params, CellKind::Tanh, x, "target_sweep")?;
    let d = dims.hidden;
    steps("h", h, t_len + 1, (b, d))?;
    matrix("grad_h", grad_h, b, d)?;
    matrix("p_inv", p_inv, d, d)?;
    let x = Steps::from_rows(x, b, dims.input);
    let h = Steps::from_rows(h, b, d);
    let inverse = Inverse::Formed(p_inv);
    let mut v = Steps::zeros(h.steps(), b, d);
    target_sweep_steps(
        params, inverse, &x, &h, grad_h, None, lr_target, mode, &mut v,
    )?;
    Ok(v.to_rows())
}

/// `target_sweep` in the working layout, applying P as `inverse` says, written over all of
/// `v` (shaped like `h`); with per-step solves, the steps' CG report
/// (`CgReport::successive`: most iterations, largest residual, solves and iterations
/// summed).
///
/// With outputs at every step, `local` holds their gradients g_t = ∇_{h_t} ℓ (shaped like
/// h) and every step t ≥ 2 also carries back its own target `v̂_t = h_t − γ_h g_t`, as the
/// published code does (docs/ALGORITHM.md §13): the bracket of each rule gets the
/// displacement of v̂_t besides that of v_t,
///
/// ```text
/// linearized:  v_{t−1} = h_{t−1} + P [(v_t + v̂_t − 2h_t) ⊘ (1 − clamp(h_t)²)]
/// difference:  v_{t−1} = h_{t−1} + f_t⁻¹(clamp v_t) + f_t⁻¹(clamp v̂_t) − 2 f_t⁻¹(clamp h_t)
/// plain:       v_{t−1} = f_t⁻¹(clamp v_t) + f_t⁻¹(clamp v̂_t)
/// ```
///
/// and `grad_h` must be g_T (v_T = v̂_T).
#[allow(clippy::too_many_arguments)]
pub(crate) fn target_sweep_steps(
    params: &Params,
    inverse: Inverse,
    x: &Steps,
    h: &Steps,
    grad_h: &DMatrix<f64>,
    local: Option<&Steps>,
    lr_target: f64,
    mode: TargetMode,
    v: &mut Steps,
) -> Result<Option<CgReport>> {
    let d = params.w_hh.nrows();
    let (t_len, b) = (x.steps(), x.batch());
    assert_eq!(
        (v.steps(), v.batch(), v.width()),
        (h.steps(), h.batch(), h.width()),
        "target_sweep_steps: v is not shaped like h"
    );
    if let Some(g) = local.filter(|g| (g.steps(), g.batch(), g.width()) != (h.steps(), b, d)) {
        anyhow::bail!(
            "target_sweep_steps: the gradients of the outputs at every step have {} steps of \
             {}×{}, but h has {} of {b}×{d}",
            g.steps(),
            g.batch(),
            g.width(),
            h.steps()
        );
    }
    // v_0 (never used) and v_T; the sweep writes v_1 … v_{T−1}.
    sweep_ends(h, grad_h, lr_target, v);
    // The inverse needs U x_t + b (difference and plain targets only).
    let a_in = (mode != TargetMode::Linearized).then(|| {
        let mut a = Steps::zeros(t_len, b, d);
        input_term_into(params, x.span(0..t_len), a.data.as_mut_slice());
        a
    });
    let groups = core_groups(b, t_len * b * d * d);
    // Per thread: the report of each of its per-step solves in order, or the first failed
    // solve.
    let outcomes = Mutex::new(Vec::new());
    in_parallel(v.parts_mut(&groups), |mut part| {
        let local = local.map(|g| Local { g, lr_target });
        let outcome = sweep_part(&mut part, inverse, h, a_in.as_ref(), local, mode);
        outcomes
            .lock()
            .expect("no thread panics holding it")
            .push(outcome);
    });
    let groups = outcomes
        .into_inner()
        .expect("no thread panicked")
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let solves = CgReport::worst_by_solve(groups);
    Ok((!solves.is_empty()).then(|| CgReport::successive(solves)))
}

/// The targets every sweep starts from (docs/ALGORITHM.md §2 step 3): `v_T = h_T − γ_h g_T`
/// into step T of `v`, and `v_0 = h_0` (never used) into step 0; `v` is shaped like `h`.
pub(crate) fn sweep_ends(h: &Steps, grad_h: &DMatrix<f64>, lr_target: f64, v: &mut Steps) {
    let (d, t_len) = (h.width(), h.steps() - 1);
    v.step_mut(0).copy_from_slice(h.step(0));
    let columns = v.step_mut(t_len).chunks_exact_mut(d);
    for (i, (col, h_col)) in columns.zip(h.step(t_len).chunks_exact(d)).enumerate() {
        for (j, (vj, &hj)) in col.iter_mut().zip(h_col).enumerate() {
            *vj = hj - grad_h[(i, j)] * lr_target;
        }
    }
}

/// The local targets of outputs at every step: v̂_t = h_t − γ_h g_t.
#[derive(Clone, Copy)]
struct Local<'a> {
    g: &'a Steps,
    lr_target: f64,
}

impl Local<'_> {
    /// v̂_t for the sequences `seqs`, into `out`.
    fn targets(&self, t: usize, h: &Steps, seqs: &std::ops::Range<usize>, out: &mut [f64]) {
        for ((o, &ht), &gt) in out.iter_mut().zip(h.at(t, seqs)).zip(self.g.at(t, seqs)) {
            *o = ht - self.lr_target * gt;
        }
    }
}

/// The sweep for one thread's sequences, t = T … 2; the report of each per-step solve, in
/// order (none when P is formed).
fn sweep_part(
    part: &mut StepsPart,
    inverse: Inverse,
    h: &Steps,
    a_in: Option<&Steps>,
    local: Option<Local>,
    mode: TargetMode,
) -> Result<Vec<CgReport>> {
    let d = h.width();
    let t_len = h.steps() - 1;
    let mut reports = Vec::new();
    let seqs = part.seqs.clone();
    let n = seqs.len();
    let mut pre = vec![0.0; d * n];
    let mut fh = vec![0.0; d * n];
    // With outputs at every step: v̂_t, then its inverse.
    let mut own = vec![0.0; if local.is_some() { d * n } else { 0 }];
    let mut f_own = own.clone();
    for t in (2..=t_len).rev() {
        let (v_t, v_prev) = part.pair_mut(t, t - 1);
        let (h_t, h_prev) = (h.at(t, &seqs), h.at(t - 1, &seqs));
        if let Some(l) = &local {
            l.targets(t, h, &seqs, &mut own);
        }
        match mode {
            TargetMode::Linearized => {
                // v_{t−1} = h_{t−1} + P [(v_t − h_t) ⊘ (1 − clamp(h_t)²)], with the local
                // displacement v̂_t − h_t = −γ_h g_t added to v_t − h_t.
                for ((s, &vt), &ht) in pre.iter_mut().zip(v_t).zip(h_t) {
                    *s = vt - ht;
                }
                if let Some(l) = &local {
                    for (s, &gt) in pre.iter_mut().zip(l.g.at(t, &seqs)) {
                        *s -= l.lr_target * gt;
                    }
                }
                for (s, &ht) in pre.iter_mut().zip(h_t) {
                    *s /= 1.0 - clamp(ht).powi(2);
                }
                v_prev.copy_from_slice(h_prev);
                reports.extend(inverse.apply(&pre, true, v_prev)?);
            }
            TargetMode::Difference => {
                let a_in = a_in.expect("input term").at(t - 1, &seqs);
                reports.extend(f_inverse_cols(inverse, a_in, h_t, &mut pre, &mut fh)?);
                reports.extend(f_inverse_cols(inverse, a_in, v_t, &mut pre, v_prev)?);
                // The difference first: at v_t = h_t it is exactly 0 and
                // v_{t−1} = h_{t−1} exactly; `(h + fv) − fh` would round h_{t−1}
                // through the size of fv.
                for ((out, &fh), &hp) in v_prev.iter_mut().zip(&fh).zip(h_prev) {
                    *out = hp + (*out - fh);
                }
                if local.is_some() {
                    reports.extend(f_inverse_cols(inverse, a_in, &own, &mut pre, &mut f_own)?);
                    for ((out, &fo), &fh) in v_prev.iter_mut().zip(&f_own).zip(&fh) {
                        *out += fo - fh;
                    }
                }
            }
            TargetMode::Plain => {
                let a_in = a_in.expect("input term").at(t - 1, &seqs);
                reports.extend(f_inverse_cols(inverse, a_in, v_t, &mut pre, v_prev)?);
                if local.is_some() {
                    reports.extend(f_inverse_cols(inverse, a_in, &own, &mut pre, &mut f_own)?);
                    for (out, &fo) in v_prev.iter_mut().zip(&f_own) {
                        *out += fo;
                    }
                }
            }
        }
    }
    Ok(reports)
}

/// `f_t⁻¹(clamp(v)) = P (atanh(clamp(v)) − (U x_t + b))` for the column-major columns `v`,
/// given the input term `a_in`, into `out` (`pre` is scratch of the same size).
fn f_inverse_cols(
    inverse: Inverse,
    a_in: &[f64],
    v: &[f64],
    pre: &mut [f64],
    out: &mut [f64],
) -> Result<Option<CgReport>> {
    for ((s, &vi), &ai) in pre.iter_mut().zip(v).zip(a_in) {
        *s = clamp(vi).atanh() - ai;
    }
    inverse.apply(pre, false, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::forward::forward;
    use crate::cpu::inverse::NormalOperator;
    use crate::cpu::test_data::{inputs, params, rng, uniform};

    /// docs/ALGORITHM.md §4's per-step solves stop each sequence on its own residual: at a
    /// size that the sweep splits over the cores (on a machine with two or more), each
    /// sequence's targets are those of the sweep of that sequence alone, bit for bit.
    /// Inputs scaled 0.1 … 3 per sequence saturate the states to different degrees, and W's
    /// singular values spread from about 0 to 2, so the sequences' solves take different
    /// numbers of iterations, a dozen or more.
    #[test]
    fn per_step_solves_of_a_split_batch_are_each_sequence_alone() {
        let mut r = rng(83);
        let (b, p, d, t_len) = (8, 2, 96, 40);
        let params = params(&mut r, CellKind::Tanh, (p, d), 1.0);
        let mut x = inputs(&mut r, t_len, b, p);
        for x_t in &mut x {
            for (s, mut row) in x_t.row_iter_mut().enumerate() {
                row *= 10f64.powf((s % 4) as f64 / 2.0 - 1.0);
            }
        }
        let h = forward(&params, &x).unwrap();
        let grad = uniform(&mut r, b, d, 0.01);
        let op = NormalOperator::new(&params.w_hh, 0.1);
        let inverse = Inverse::PerStep {
            op: &op,
            tol: 1e-8,
            max_iter: 200,
        };
        let sweep = |x: &[DMatrix<f64>], h: &[DMatrix<f64>], grad: &DMatrix<f64>| {
            let n = grad.nrows();
            let mut v = Steps::zeros(t_len + 1, n, d);
            let report = target_sweep_steps(
                &params,
                inverse,
                &Steps::from_rows(x, n, p),
                &Steps::from_rows(h, n, d),
                grad,
                None,
                0.2,
                TargetMode::Linearized,
                &mut v,
            )
            .unwrap();
            assert!(report.is_some_and(|r| r.residual <= 1e-8), "{report:?}");
            v.to_rows()
        };
        let v = sweep(&x, &h, &grad);
        for s in 0..b {
            let row = |ms: &[DMatrix<f64>]| -> Vec<DMatrix<f64>> {
                ms.iter().map(|m| m.rows(s, 1).into_owned()).collect()
            };
            let want = sweep(&row(&x), &row(&h), &grad.rows(s, 1).into_owned());
            assert!(
                row(&v) == want,
                "sequence {s}'s targets differ from its own sweep's"
            );
        }
    }
}
