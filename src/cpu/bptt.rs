//! Backpropagation through time for BP and for the TP surrogate (docs/ALGORITHM.md §2 step 6, §3;
//! twin of `shaders/bptt.wgsl`).

use std::ops::Range;

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::{self, cell_inputs, steps};
use crate::cpu::simd::step_product;
use crate::cpu::steps::{core_groups, gemm, in_parallel, Mat, Steps};
use crate::kernel_io::{Injection, RnnGrads};
use crate::model::{CellKind, Params};

/// Input sizes up to this get ∇U by column sweeps rather than a matrix product.
const SMALL_INPUT: usize = 8;

/// Gradients of W, U, b from the errors e_t: with `through_time`,
/// `e_t = inject_t + Wᵀ D_{t+1} e_{t+1}`; without, `e_t = inject_t` (the local mode).
/// `inject_t` is g_T at the top (BP), h_t − v_t (the TP surrogate) or g_t (BP with an
/// output at every step). `x` as `forward` takes it, `h` (h_0 … h_T) and the injection's
/// matrices B×d: an error naming the argument where a shape does not fit.
pub fn bptt(
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<RnnGrads> {
    let cell = (params, CellKind::Tanh, "bptt");
    in_working_layout(cell, x, h, injection, |x, h, injection| {
        let mut delta = Steps::zeros(x.steps(), x.batch(), params.dims().hidden);
        bptt_steps(params, x, h, injection, through_time, &mut delta)
    })
}

/// `f` of `x`, `h` and `injection` converted from the public signatures' rows (one B×size
/// matrix a step: x of width p, h and the targets or per-step gradients of width d) to
/// the working layout: what both cells' recursions take. Checks them first against the
/// parameters of `cell` (the cell, and the function's name for messages).
pub(crate) fn in_working_layout<R>(
    (params, cell, kernel): (&Params, CellKind, &str),
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    f: impl FnOnce(&Steps, &Steps, Injection<Steps>) -> R,
) -> Result<R> {
    let (dims, t_len, b) = cell_inputs(params, cell, x, kernel)?;
    let (p, d) = (dims.input, dims.hidden);
    let states = (b, d);
    steps("h", h, t_len + 1, states)?;
    arguments::injection(&injection, t_len, states)?;
    let (x, h) = (Steps::from_rows(x, b, p), Steps::from_rows(h, b, d));
    let v;
    let injection = match injection {
        Injection::Top(g) => Injection::Top(g),
        Injection::Targets(targets) => {
            v = Steps::from_rows(targets, b, d);
            Injection::Targets(&v)
        }
        Injection::Steps(grads) => {
            v = Steps::from_rows(grads, b, d);
            Injection::Steps(&v)
        }
    };
    Ok(f(&x, &h, injection))
}

/// `bptt` in the working layout; `delta` (T steps of width d) is scratch, all of it
/// written.
pub(crate) fn bptt_steps(
    params: &Params,
    x: &Steps,
    h: &Steps,
    injection: Injection<Steps>,
    through_time: bool,
    delta: &mut Steps,
) -> RnnGrads {
    let d = params.w_ih.nrows();
    let (t_len, b) = (x.steps(), x.batch());
    assert_eq!(
        (delta.steps(), delta.batch(), delta.width()),
        (t_len, b, d),
        "bptt_steps: delta has the wrong shape"
    );
    // δ_t = D_t e_t for t = 1 … T (stored at t − 1), and ‖e_t‖² per sequence (sequence i,
    // step t at i·T + t − 1, so that each group of sequences owns a contiguous run).
    let mut e_sq = vec![0.0; b * t_len];
    // Wᵀ in column-major storage, so that the product of each step reads it in place.
    let w_t = params.w_hh.transpose();
    let groups = core_groups(b, t_len * b * d * d);
    let work = delta
        .parts_mut(&groups)
        .into_iter()
        .zip(split_by_groups(&mut e_sq, &groups, t_len))
        .collect();
    in_parallel(work, |(mut part, e_sq)| {
        let seqs = part.seqs.clone();
        let n = seqs.len();
        let mut e = vec![0.0; d * n];
        for t in (1..=t_len).rev() {
            inject(&mut e, injection, (t, t_len), h, &seqs);
            if through_time && t < t_len {
                // e_t += Wᵀ δ_{t+1}
                step_product(w_t.as_slice(), d, part.step_mut(t), true, &mut e);
            }
            record_squares(e_sq, &e, d, (t, t_len));
            let delta_t = part.step_mut(t - 1);
            for ((dj, &ej), &ht) in delta_t.iter_mut().zip(&e).zip(h.at(t, &seqs)) {
                *dj = ej * (1.0 - ht * ht);
            }
        }
    });
    RnnGrads {
        w_hh: weight_grad(delta, h),
        w_ih: input_grads(delta, x),
        b: column_sums(delta),
        error_norms: error_norms(&e_sq, t_len, b),
    }
}

/// The per-sequence buffer of ‖e_t‖² (`e_sq`: sequence i, step t at i·T + t − 1) cut into
/// the runs of `groups`' sequences, one for each core's recurrence.
pub(crate) fn split_by_groups<'a>(
    e_sq: &'a mut [f64],
    groups: &[Range<usize>],
    t_len: usize,
) -> Vec<&'a mut [f64]> {
    let mut parts = Vec::with_capacity(groups.len());
    let mut rest = e_sq;
    for g in groups {
        let (mine, others) = rest.split_at_mut(g.len() * t_len);
        parts.push(mine);
        rest = others;
    }
    parts
}

/// What `injection` puts into the recursion at step t (of `t_len`) for the sequences
/// `seqs`, into `e` (their columns): g_T at the top and 0 below (BP), h_t − v_t (the TP
/// surrogate) or g_t (outputs at every step).
pub(crate) fn inject(
    e: &mut [f64],
    injection: Injection<Steps>,
    (t, t_len): (usize, usize),
    h: &Steps,
    seqs: &Range<usize>,
) {
    let d = h.width();
    match injection {
        Injection::Top(g_top) if t == t_len => {
            for (c, col) in e.chunks_exact_mut(d).enumerate() {
                for (j, ej) in col.iter_mut().enumerate() {
                    *ej = g_top[(seqs.start + c, j)];
                }
            }
        }
        Injection::Top(_) => e.fill(0.0),
        Injection::Targets(v) => {
            for ((ej, &ht), &vt) in e.iter_mut().zip(h.at(t, seqs)).zip(v.at(t, seqs)) {
                *ej = ht - vt;
            }
        }
        Injection::Steps(g) => e.copy_from_slice(g.at(t, seqs)),
    }
}

/// ‖e_t‖² of each column of `e` (width d) into the group's run `e_sq` at step t.
pub(crate) fn record_squares(e_sq: &mut [f64], e: &[f64], d: usize, (t, t_len): (usize, usize)) {
    for (c, col) in e.chunks_exact(d).enumerate() {
        e_sq[c * t_len + t - 1] = col.iter().map(|v| v * v).sum();
    }
}

/// ‖e_t‖ for t = 1 … T from `e_sq`, the squares per sequence (sequence i, step t at
/// i·T + t − 1), added in sequence order.
pub(crate) fn error_norms(e_sq: &[f64], t_len: usize, b: usize) -> Vec<f64> {
    (0..t_len)
        .map(|t| (0..b).map(|i| e_sq[i * t_len + t]).sum::<f64>().sqrt())
        .collect()
}

/// ∇W = Δ H_prevᵀ [m, d] over all T·B columns, with Δ = [δ_1 … δ_T] (`deltas`, width m:
/// the tanh RNN's δ, the GRU's dgh) and H_prev = [h_0 … h_{T−1}] (width d): one product,
/// split by the columns of ∇W across the cores.
pub(crate) fn weight_grad(deltas: &Steps, h: &Steps) -> DMatrix<f64> {
    let (m, d) = (deltas.width(), h.width());
    let t_len = deltas.steps();
    let n_all = t_len * deltas.batch();
    let deltas = Mat::cols(deltas.span(0..t_len), m, n_all);
    let h_prev = Mat::cols(h.span(0..t_len), d, n_all);
    let mut g_w = DMatrix::zeros(m, d);
    let cols = core_groups(d, n_all * m * d);
    let mut work = Vec::with_capacity(cols.len());
    let mut rest = g_w.as_mut_slice();
    for c in cols {
        let (mine, others) = rest.split_at_mut(c.len() * m);
        work.push((c, mine));
        rest = others;
    }
    in_parallel(work, |(c, out)| {
        gemm(1.0, deltas, h_prev.rows(c).t(), 0.0, out)
    });
    g_w
}

/// ∇U = Δ Xᵀ [m, p] over all T·B columns (`deltas`: the tanh RNN's δ, the GRU's dgi).
/// With few inputs p a packed product would re-pack all of Δ to make p columns: plain
/// column sweeps, in order, unless p is large.
pub(crate) fn input_grads(deltas: &Steps, x: &Steps) -> DMatrix<f64> {
    let (m, p) = (deltas.width(), x.width());
    let t_len = deltas.steps();
    let n_all = t_len * deltas.batch();
    let mut g_u = DMatrix::zeros(m, p);
    let x_all = x.span(0..t_len);
    if p > SMALL_INPUT {
        gemm(
            1.0,
            Mat::cols(deltas.span(0..t_len), m, n_all),
            Mat::cols(x_all, p, n_all).t(),
            0.0,
            g_u.as_mut_slice(),
        );
        return g_u;
    }
    for (delta_c, x_c) in deltas
        .span(0..t_len)
        .chunks_exact(m)
        .zip(x_all.chunks_exact(p))
    {
        for (g_col, &xj) in g_u.as_mut_slice().chunks_exact_mut(m).zip(x_c) {
            for (g, &dj) in g_col.iter_mut().zip(delta_c) {
                *g += xj * dj;
            }
        }
    }
    g_u
}

/// ∇b = Δ 1 [m, 1]: the sum of `deltas` over all steps and sequences, in order.
pub(crate) fn column_sums(deltas: &Steps) -> DMatrix<f64> {
    let m = deltas.width();
    let mut g_b = DMatrix::zeros(m, 1);
    for delta_c in deltas.span(0..deltas.steps()).chunks_exact(m) {
        for (gb, &dj) in g_b.iter_mut().zip(delta_c) {
            *gb += dj;
        }
    }
    g_b
}
