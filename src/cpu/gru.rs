//! The GRU cell of docs/ALGORITHM.md §5 in the PyTorch convention: forward pass, BP gradients, and the
//! per-step gates that `jacobian` linearizes at and `gru_per_gate` inverts.
//!
//! The public functions take one B×(size) matrix per step (sequences as rows); the work
//! runs in the working layout of `cpu::steps` (one column per sequence and step), on the
//! same kernels as the tanh RNN: each step's products read W in place
//! (`simd::step_product`, through `forward::affine_into`), each group of sequences runs
//! its recurrence on its own core, and the sums over steps and sequences of the gradients
//! are one product each (`bptt::weight_grad`, `bptt::input_grads`). A column's gates are
//! stacked r | z | n | hn (4d values), like the GPU's `gates` history. The forward pass
//! keeps them (`gru_forward_steps`), and the backward passes (`gru_bptt_steps`, the
//! per-gate sweep) read them instead of forming them again: that is a product with W per
//! step less in each.

use std::borrow::Cow;

use anyhow::Result;
use nalgebra::DMatrix;

use crate::arguments::{cell_inputs, cell_params, matrix};
use crate::cpu::bptt::{
    column_sums, error_norms, in_working_layout, inject, input_grads, record_squares,
    split_by_groups, weight_grad,
};
use crate::cpu::forward::affine_into;
use crate::cpu::simd::{sigmoid_in_place, step_product, tanh_in_place};
use crate::cpu::steps::{core_groups, in_parallel, Steps};
use crate::kernel_io::{GruGrads, GruStep, Injection, RnnGrads};
use crate::model::{CellKind, Params};

/// The gates r | z | n | hn (4d values a column) of the columns `h_prev` (h_{t−1}, width
/// d) and `x` (x_t, width p) into `gates`; `scratch` holds the pre-activations gi | gh.
/// Every column's gates are the same arithmetic however many columns come at once, with
/// the vectorized sigmoid and tanh of `simd`.
pub(crate) fn gates_into(
    params: &Params,
    h_prev: &[f64],
    x: &[f64],
    scratch: &mut Vec<f64>,
    gates: &mut [f64],
) {
    let d = params.w_hh.ncols();
    let n = h_prev.len().checked_div(d).unwrap_or(0);
    scratch.resize(6 * d * n, 0.0);
    let (gi, gh) = scratch.split_at_mut(3 * d * n);
    affine_into(&params.w_ih, params.b.as_slice(), x, gi);
    affine_into(&params.w_hh, params.b_hh.as_slice(), h_prev, gh);
    for ((gi, gh), g) in gi
        .chunks_exact(3 * d)
        .zip(gh.chunks_exact(3 * d))
        .zip(gates.chunks_exact_mut(4 * d))
    {
        // r and z (blocks 0 and 1 of gi and gh), then n from r and hn.
        for j in 0..2 * d {
            g[j] = gi[j] + gh[j];
        }
        sigmoid_in_place(&mut g[..2 * d]);
        for j in 0..d {
            let hn = gh[2 * d + j];
            g[2 * d + j] = gi[2 * d + j] + g[j] * hn;
            g[3 * d + j] = hn;
        }
        tanh_in_place(&mut g[2 * d..3 * d]);
    }
}

/// The gates of one step at (h_{t−1}, x_t) of the GRU `params`, both batched as rows
/// (B×d and B×p): an error naming the argument where a shape does not fit.
pub fn gru_gates(params: &Params, h_prev: &DMatrix<f64>, x_t: &DMatrix<f64>) -> Result<GruStep> {
    let dims = cell_params(params, CellKind::Gru, "gru_gates")?;
    let (b, d) = (h_prev.nrows(), dims.hidden);
    matrix("h_prev", h_prev, b, d)?;
    matrix("x_t", x_t, b, dims.input)?;
    let mut gates = vec![0.0; 4 * d * b];
    let (h_cols, x_cols) = (h_prev.transpose(), x_t.transpose());
    gates_into(
        params,
        h_cols.as_slice(),
        x_cols.as_slice(),
        &mut Vec::new(),
        &mut gates,
    );
    let gate = |k: usize| DMatrix::from_fn(b, d, |i, j| gates[i * 4 * d + k * d + j]);
    Ok(GruStep {
        r: gate(0),
        z: gate(1),
        n: gate(2),
        hn: gate(3),
    })
}

/// `h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}` from the step's gates, z and n shaped like h_{t−1}.
pub fn gru_output(step: &GruStep, h_prev: &DMatrix<f64>) -> Result<DMatrix<f64>> {
    let (b, d) = h_prev.shape();
    matrix("GruStep::z", &step.z, b, d)?;
    matrix("GruStep::n", &step.n, b, d)?;
    Ok(step
        .z
        .zip_zip_map(&step.n, h_prev, |z, n, h| (1.0 - z) * n + z * h))
}

/// Hidden states h_0 = 0, h_1 … h_T (each B×d) of the GRU `params` for inputs `x`
/// (T ≥ 1 matrices B×p, finite): an error naming the argument where a shape does not fit.
pub fn gru_forward(params: &Params, x: &[DMatrix<f64>]) -> Result<Vec<DMatrix<f64>>> {
    let (dims, t_len, b) = cell_inputs(params, CellKind::Gru, x, "gru_forward")?;
    let x = Steps::from_rows(x, b, dims.input);
    let d = dims.hidden;
    let mut h = Steps::zeros(t_len + 1, b, d);
    let mut gates = Steps::zeros(t_len, b, 4 * d);
    gru_forward_steps(params, &x, &mut h, &mut gates);
    Ok(h.to_rows())
}

/// `gru_forward` in the working layout: x_1 … x_T to h_0 … h_T, written over all of `h`,
/// and each step's gates r | z | n | hn into `gates` (step t at t − 1, 4d values a column),
/// for the backward passes.
pub(crate) fn gru_forward_steps(params: &Params, x: &Steps, h: &mut Steps, gates: &mut Steps) {
    let d = params.w_hh.ncols();
    let (t_len, b) = (x.steps(), x.batch());
    assert_eq!(
        (h.steps(), h.batch(), h.width()),
        (t_len + 1, b, d),
        "gru_forward_steps: h has the wrong shape"
    );
    assert_eq!(
        (gates.steps(), gates.batch(), gates.width()),
        (t_len, b, 4 * d),
        "gru_forward_steps: gates has the wrong shape"
    );
    h.step_mut(0).fill(0.0);
    let groups = core_groups(b, t_len * b * 3 * d * d);
    let parts = h
        .parts_mut(&groups)
        .into_iter()
        .zip(gates.parts_mut(&groups));
    in_parallel(parts.collect(), |(mut part, mut gate_part)| {
        let seqs = part.seqs.clone();
        let mut scratch = Vec::new();
        for t in 1..=t_len {
            let (prev, cur) = part.pair_mut(t - 1, t);
            let g_t = gate_part.step_mut(t - 1);
            gates_into(params, prev, x.at(t - 1, &seqs), &mut scratch, g_t);
            for ((g, hp), ht) in g_t
                .chunks_exact(4 * d)
                .zip(prev.chunks_exact(d))
                .zip(cur.chunks_exact_mut(d))
            {
                for j in 0..d {
                    let (z, n) = (g[d + j], g[2 * d + j]);
                    ht[j] = (1.0 - z) * n + z * hp[j];
                }
            }
        }
    });
}

/// The gates of every step t = 1 … T from the states `h` (h_0 … h_T) and the inputs `x`,
/// as `gru_forward_steps` keeps them: each step's from (h_{t−1}, x_t), so given h the steps
/// do not depend on each other and all T·B columns go at once, over the cores, with the
/// same arithmetic column by column. For the backward passes given states alone.
pub(crate) fn gate_history(params: &Params, x: &Steps, h: &Steps) -> Steps {
    let (d, p) = (params.w_hh.ncols(), params.w_ih.ncols());
    let (t_len, b) = (x.steps(), x.batch());
    let mut gates = Steps::zeros(t_len, b, 4 * d);
    let columns = t_len * b;
    let groups = core_groups(columns, columns * 3 * d * (d + p));
    let (h_prev, xs) = (h.span(0..t_len), x.span(0..t_len));
    let mut work = Vec::with_capacity(groups.len());
    let mut rest = gates.data.as_mut_slice();
    for g in groups {
        let (mine, others) = rest.split_at_mut(g.len() * 4 * d);
        work.push((g, mine));
        rest = others;
    }
    in_parallel(work, |(g, out)| {
        let (h_g, x_g) = (&h_prev[g.start * d..g.end * d], &xs[g.start * p..g.end * p]);
        gates_into(params, h_g, x_g, &mut Vec::new(), out);
    });
    gates
}

/// `gates` where the forward pass kept them, else formed from the states
/// (`gate_history`).
pub(crate) fn kept_or_formed<'a>(
    params: &Params,
    x: &Steps,
    h: &Steps,
    gates: Option<&'a Steps>,
) -> Cow<'a, Steps> {
    match gates {
        Some(g) => Cow::Borrowed(g),
        None => Cow::Owned(gate_history(params, x, h)),
    }
}

/// Back through one step at one unit (the twin of include/gru.wgsl's): the pre-activation
/// gradients (da_r, da_z, da_n) from e = ∂ℓ/∂h_t, the unit's gates (r, z, n, hn) and its
/// h_{t−1}. They are the unit's dgi (gi = U x + b_ih); its dgh (gh = W h + b_hh) is
/// (da_r, da_z, da_n r), and ∂ℓ/∂h_{t−1} = z e + (Wᵀ dgh) at the unit.
pub(crate) fn gru_step_backward(
    e: f64,
    (r, z, n, hn): (f64, f64, f64, f64),
    h_prev: f64,
) -> [f64; 3] {
    // n's pre-activation is gi_n + r ⊙ hn, so r and hn both see it.
    let da_n = e * (1.0 - z) * (1.0 - n * n);
    let da_r = da_n * hn * r * (1.0 - r);
    let da_z = e * (h_prev - n) * z * (1.0 - z);
    [da_r, da_z, da_n]
}

/// Gradients of the recurrent tensors w_hh, w_ih, b (b_ih) and b_hh given the states `h`
/// (h_0 … h_T from `gru_forward`) and the inputs `x`, from what `injection` puts into the
/// backward recursion: BP's `g_T = ∂ℓ/∂h_T`, or the TP surrogate's `h_t − v_t` at every
/// step, carried back through the cell (`through_time`) or not (local mode), as
/// `cpu::bptt` does for the tanh RNN. The head's gradients come from the head alone.
/// The result's `b` holds ∂/∂b_ih; `GruGrads::b_hh` the other bias.
pub fn gru_bptt(
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<GruGrads> {
    let cell = (params, CellKind::Gru, "gru_bptt");
    in_working_layout(cell, x, h, injection, |x, h, injection| {
        gru_bptt_steps(params, x, (h, None), injection, through_time)
    })
}

/// `gru_bptt` in the working layout, at the states h and their gates (those the forward
/// pass kept, or `None` to form them from h: `gate_history`). For t = T … 1 each group of
/// sequences forms e_t (the injection plus, through time, J_{t+1}ᵀ e_{t+1}), dgi_t and
/// dgh_t at the step's gates, and J_tᵀ e_t = z ⊙ e_t + Wᵀ dgh_t for the step below; the
/// sums over steps and sequences follow, one product each.
pub(crate) fn gru_bptt_steps(
    params: &Params,
    x: &Steps,
    (h, gates): (&Steps, Option<&Steps>),
    injection: Injection<Steps>,
    through_time: bool,
) -> GruGrads {
    let gates = kept_or_formed(params, x, h, gates);
    let d = params.w_hh.ncols();
    let (t_len, b) = (x.steps(), x.batch());
    let (mut dgi, mut dgh) = (Steps::zeros(t_len, b, 3 * d), Steps::zeros(t_len, b, 3 * d));
    // ‖e_t‖² per sequence: sequence i, step t at i·T + t − 1.
    let mut e_sq = vec![0.0; b * t_len];
    // Wᵀ [d, 3d] column-major, so that each step's product reads it in place.
    let w_t = params.w_hh.transpose();
    let groups = core_groups(b, t_len * b * 6 * d * d);
    let work: Vec<_> = dgi
        .parts_mut(&groups)
        .into_iter()
        .zip(dgh.parts_mut(&groups))
        .zip(split_by_groups(&mut e_sq, &groups, t_len))
        .collect();
    in_parallel(work, |((mut gi_part, mut gh_part), e_sq)| {
        let seqs = gi_part.seqs.clone();
        let n = seqs.len();
        let (mut e, mut carried) = (vec![0.0; d * n], vec![0.0; d * n]);
        for t in (1..=t_len).rev() {
            inject(&mut e, injection, (t, t_len), h, &seqs);
            if through_time && t < t_len {
                for (ej, &cj) in e.iter_mut().zip(&carried) {
                    *ej += cj;
                }
            }
            record_squares(e_sq, &e, d, (t, t_len));
            let (h_prev, gates) = (h.at(t - 1, &seqs), gates.at(t - 1, &seqs));
            let (gi_t, gh_t) = (gi_part.step_mut(t - 1), gh_part.step_mut(t - 1));
            for c in 0..n {
                let g = &gates[c * 4 * d..(c + 1) * 4 * d];
                let (gi_c, gh_c) = (
                    &mut gi_t[c * 3 * d..(c + 1) * 3 * d],
                    &mut gh_t[c * 3 * d..(c + 1) * 3 * d],
                );
                for j in 0..d {
                    let unit = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                    let da = gru_step_backward(e[c * d + j], unit, h_prev[c * d + j]);
                    for (k, &a) in da.iter().enumerate() {
                        gi_c[k * d + j] = a;
                        gh_c[k * d + j] = a;
                    }
                    gh_c[2 * d + j] = da[2] * unit.0;
                    // The direct path of h_t = … + z ⊙ h_{t−1}; Wᵀ dgh follows.
                    carried[c * d + j] = unit.1 * e[c * d + j];
                }
            }
            if through_time && t > 1 {
                step_product(w_t.as_slice(), d, gh_t, true, &mut carried);
            }
        }
    });
    GruGrads {
        rnn: RnnGrads {
            w_hh: weight_grad(&dgh, h),
            w_ih: input_grads(&dgi, x),
            b: column_sums(&dgi),
            error_norms: error_norms(&e_sq, t_len, b),
        },
        b_hh: column_sums(&dgh),
    }
}
