//! The GRU cell of SPEC §5 in the PyTorch convention: forward pass, BP gradients, and the
//! per-step cache that `jacobian` linearizes at.
//!
//! Layout as in the rest of `cpu`: sequences are rows, so per-step states are B×d and the
//! gate pre-activations of all three gates are one B×3d product, columns stacked r, z, n
//! exactly as PyTorch stacks the rows of `weight_hh_l0` / `weight_ih_l0`.

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Names of the GRU's recurrent tensors, in the order of `GruGrads`' fields.
pub const GRU_PARAM_NAMES: [&str; 4] = ["gru.w_hh", "gru.w_ih", "gru.b_ih", "gru.b_hh"];

/// Parameters of a GRU with a linear head. Gates are stacked r, z, n along the first axis.
#[derive(Clone, Debug, PartialEq)]
pub struct GruParams {
    /// [W_r; W_z; W_n]: 3d×d.
    pub w_hh: DMatrix<f64>,
    /// [U_r; U_z; U_n]: 3d×p.
    pub w_ih: DMatrix<f64>,
    /// [b_ir; b_iz; b_in]: 3d×1.
    pub b_ih: DMatrix<f64>,
    /// [b_hr; b_hz; b_hn]: 3d×1. Kept apart from `b_ih` because b_hn sits inside r ⊙ (…).
    pub b_hh: DMatrix<f64>,
    /// V: q×d.
    pub head_w: DMatrix<f64>,
    /// c: q×1.
    pub head_b: DMatrix<f64>,
}

impl GruParams {
    /// Seeded initialisation as PyTorch does it: every tensor uniform in ±1/√d.
    pub fn init(input: usize, hidden: usize, output: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = 1.0 / (hidden.max(1) as f64).sqrt();
        let mut u = |r: usize, c: usize| DMatrix::from_fn(r, c, |_, _| rng.random_range(-k..k));
        Self {
            w_hh: u(3 * hidden, hidden),
            w_ih: u(3 * hidden, input),
            b_ih: u(3 * hidden, 1),
            b_hh: u(3 * hidden, 1),
            head_w: u(output, hidden),
            head_b: u(output, 1),
        }
    }

    /// Hidden size d.
    pub fn hidden(&self) -> usize {
        self.w_hh.ncols()
    }
}

/// Gradients of the GRU's recurrent tensors (same shapes as in `GruParams`).
#[derive(Clone, Debug, PartialEq)]
pub struct GruGrads {
    pub w_hh: DMatrix<f64>,
    pub w_ih: DMatrix<f64>,
    pub b_ih: DMatrix<f64>,
    pub b_hh: DMatrix<f64>,
    /// ‖∂ℓ/∂h_t‖_F over the batch for t = 1 … T, as in `RnnGrads::error_norms`.
    pub error_norms: Vec<f64>,
}

/// What one step keeps for its derivatives, each B×d: the gates r, z, the candidate n and
/// `hn = W_n h_{t−1} + b_hn` (needed because ∂n/∂r = (1 − n²) ⊙ hn).
#[derive(Clone, Debug)]
pub struct GruStep {
    pub r: DMatrix<f64>,
    pub z: DMatrix<f64>,
    pub n: DMatrix<f64>,
    pub hn: DMatrix<f64>,
}

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
pub fn gru_gates(params: &GruParams, h_prev: &DMatrix<f64>, x_t: &DMatrix<f64>) -> GruStep {
    let d = params.hidden();
    let gi = add_bias(x_t * params.w_ih.transpose(), &params.b_ih);
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
pub fn gru_forward(params: &GruParams, x: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let b = x.first().map_or(0, |m| m.nrows());
    let mut h = vec![DMatrix::zeros(b, params.hidden())];
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
    params: &GruParams,
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

/// BP gradients of w_hh, w_ih, b_ih, b_hh given the states `h` (h_0 … h_T from
/// `gru_forward`), the inputs `x` and `g_T = ∂ℓ/∂h_T` (B×d). The head's own gradients come
/// from the head alone (the same linear head as the RNN's, `cpu::head`).
pub fn gru_bptt(
    params: &GruParams,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    g_t: &DMatrix<f64>,
) -> GruGrads {
    let t_len = x.len();
    let mut grads = GruGrads {
        w_hh: DMatrix::zeros(params.w_hh.nrows(), params.w_hh.ncols()),
        w_ih: DMatrix::zeros(params.w_ih.nrows(), params.w_ih.ncols()),
        b_ih: DMatrix::zeros(params.b_ih.nrows(), 1),
        b_hh: DMatrix::zeros(params.b_hh.nrows(), 1),
        error_norms: vec![0.0; t_len],
    };
    let mut delta = g_t.clone();
    for t in (1..=t_len).rev() {
        grads.error_norms[t - 1] = delta.norm();
        // Recomputed rather than stored: one step's gates cost as much as its backward,
        // and the reference favours plain code over memory tricks.
        let step = gru_gates(params, &h[t - 1], &x[t - 1]);
        let (dgi, dgh, dh_prev) = gru_step_backward(params, &step, &h[t - 1], &delta);
        grads.w_ih += dgi.tr_mul(&x[t - 1]);
        grads.w_hh += dgh.tr_mul(&h[t - 1]);
        grads.b_ih += dgi.row_sum().transpose();
        grads.b_hh += dgh.row_sum().transpose();
        delta = dh_prev;
    }
    grads
}
