//! The GRU cell of docs/ALGORITHM.md §5 in the PyTorch convention: forward pass, BP gradients, and the
//! per-step cache that `jacobian` linearizes at.
//!
//! Layout as in the rest of `cpu`: sequences are rows, so per-step states are B×d and the
//! gate pre-activations of all three gates are one B×3d product, columns stacked r, z, n
//! exactly as PyTorch stacks the rows of `weight_hh_l0` / `weight_ih_l0`.

use nalgebra::DMatrix;

use crate::kernel_io::{GruGrads, GruStep, Injection, RnnGrads};
use crate::model::Params;

fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

/// `m + 1 bᵀ`: the bias column `b` added to every row.
fn add_bias(mut m: DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    for mut row in m.row_iter_mut() {
        row += b.transpose();
    }
    m
}

/// The gates of one step at (h_{t−1}, x_t), both batched as rows.
pub fn gru_gates(params: &Params, h_prev: &DMatrix<f64>, x_t: &DMatrix<f64>) -> GruStep {
    let d = params.dims().hidden;
    let gi = add_bias(x_t * params.w_ih.transpose(), &params.b);
    let gh = add_bias(h_prev * params.w_hh.transpose(), &params.b_hh);
    let b = h_prev.nrows();
    let r = (gi.columns(0, d) + gh.columns(0, d)).map(sigmoid);
    let z = (gi.columns(d, d) + gh.columns(d, d)).map(sigmoid);
    let hn = gh.columns(2 * d, d).into_owned();
    let n = DMatrix::from_fn(b, d, |i, j| {
        (gi[(i, 2 * d + j)] + r[(i, j)] * hn[(i, j)]).tanh()
    });
    GruStep { r, z, n, hn }
}

/// `h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}` from the step's gates.
pub fn gru_output(step: &GruStep, h_prev: &DMatrix<f64>) -> DMatrix<f64> {
    step.z
        .zip_zip_map(&step.n, h_prev, |z, n, h| (1.0 - z) * n + z * h)
}

/// Hidden states h_0 = 0, h_1 … h_T (each B×d) for inputs `x` (T matrices B×p).
pub fn gru_forward(params: &Params, x: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let b = x.first().map_or(0, |m| m.nrows());
    let mut h = vec![DMatrix::zeros(b, params.dims().hidden)];
    for x_t in x {
        let prev = h.last().expect("h_0");
        let next = gru_output(&gru_gates(params, prev, x_t), prev);
        h.push(next);
    }
    h
}

/// Back through one step: given δ = ∂ℓ/∂h_t (B×d), the pre-activation gradients
/// `(∂ℓ/∂gi, ∂ℓ/∂gh)` (each B×3d, gi = U x + b_ih, gh = W h + b_hh) and ∂ℓ/∂h_{t−1}
/// through this step. `jacobian` uses the last for Jᵀ w; `gru_bptt` uses all three.
pub fn gru_step_backward(
    params: &Params,
    step: &GruStep,
    h_prev: &DMatrix<f64>,
    delta: &DMatrix<f64>,
) -> (DMatrix<f64>, DMatrix<f64>, DMatrix<f64>) {
    let (b, d) = delta.shape();
    let mut dgi = DMatrix::zeros(b, 3 * d);
    let mut dgh = DMatrix::zeros(b, 3 * d);
    for i in 0..b {
        for j in 0..d {
            let (r, z, n, hn) = (
                step.r[(i, j)],
                step.z[(i, j)],
                step.n[(i, j)],
                step.hn[(i, j)],
            );
            let g = delta[(i, j)];
            // n's pre-activation is gi_n + r ⊙ hn, so r and hn both see it.
            let da_n = g * (1.0 - z) * (1.0 - n * n);
            let da_r = da_n * hn * r * (1.0 - r);
            let da_z = g * (h_prev[(i, j)] - n) * z * (1.0 - z);
            dgi[(i, j)] = da_r;
            dgi[(i, d + j)] = da_z;
            dgi[(i, 2 * d + j)] = da_n;
            dgh[(i, j)] = da_r;
            dgh[(i, d + j)] = da_z;
            dgh[(i, 2 * d + j)] = da_n * r;
        }
    }
    // Direct path z ⊙ δ plus the path through all three gates: dgh W.
    let dh_prev = delta.component_mul(&step.z) + &dgh * &params.w_hh;
    (dgi, dgh, dh_prev)
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
) -> GruGrads {
    let t_len = x.len();
    let inject = |t: usize| match injection {
        Injection::Top(g) => (t == t_len).then(|| g.clone()),
        Injection::Targets(v) => Some(&h[t] - &v[t]),
        Injection::Steps(g) => Some(g[t].clone()),
    };
    let mut rnn = RnnGrads {
        w_hh: DMatrix::zeros(params.w_hh.nrows(), params.w_hh.ncols()),
        w_ih: DMatrix::zeros(params.w_ih.nrows(), params.w_ih.ncols()),
        b: DMatrix::zeros(params.b.nrows(), 1),
        error_norms: vec![0.0; t_len],
    };
    let mut b_hh = DMatrix::zeros(params.b_hh.nrows(), 1);
    let mut carried: Option<DMatrix<f64>> = None;
    for t in (1..=t_len).rev() {
        let delta = match (carried.take(), inject(t)) {
            (Some(c), Some(i)) => c + i,
            (Some(c), None) => c,
            (None, Some(i)) => i,
            (None, None) => DMatrix::zeros(h[t].nrows(), h[t].ncols()),
        };
        rnn.error_norms[t - 1] = delta.norm();
        // Recomputed rather than stored: one step's gates cost as much as its backward,
        // and the reference favours plain code over memory tricks.
        let step = gru_gates(params, &h[t - 1], &x[t - 1]);
        let (dgi, dgh, dh_prev) = gru_step_backward(params, &step, &h[t - 1], &delta);
        rnn.w_ih += dgi.tr_mul(&x[t - 1]);
        rnn.w_hh += dgh.tr_mul(&h[t - 1]);
        rnn.b += dgi.row_sum().transpose();
        b_hh += dgh.row_sum().transpose();
        if through_time {
            carried = Some(dh_prev);
        }
    }
    GruGrads { rnn, b_hh }
}
