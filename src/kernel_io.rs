//! The inputs and outputs that a kernel's CPU reference and its GPU twin share, so that the
//! two have one signature and the tests compare like with like: what the backward
//! recursion is given (`Injection`), the gradients it returns (`RnnGrads`, `GruGrads`),
//! a GRU step's gates (`GruStep`) and the head's outputs (`HeadOut`, and `StepHeadOut` for
//! the heads at every step).

use nalgebra::DMatrix;

/// What is injected into the backward recursion; `V` holds the targets v_0 … v_T (one
/// B×d matrix per step in the public signatures; the CPU reference's working layout
/// inside it).
#[derive(Debug)]
pub enum Injection<'a, V: ?Sized = [DMatrix<f64>]> {
    /// BP: `e_T = g_T = ∇_{h_T} ℓ`, nothing at other steps.
    Top(&'a DMatrix<f64>),
    /// TP surrogate: `h_t − v_t` at every step, targets v_0 … v_T.
    Targets(&'a V),
    /// BP with an output at every step: `g_t = ∇_{h_t} ℓ` at every step, shaped like h
    /// (g_0 … g_T; g_0 is never read).
    Steps(&'a V),
}

impl<V: ?Sized> Clone for Injection<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V: ?Sized> Copy for Injection<'_, V> {}

/// Gradients of the recurrent parameters W (d×d), U (d×p), b (d×1), and the size of the
/// error at each step.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnGrads {
    /// ∇W (the GRU: ∇w_hh, 3d×d).
    pub w_hh: DMatrix<f64>,
    /// ∇U (the GRU: ∇w_ih, 3d×p).
    pub w_ih: DMatrix<f64>,
    /// ∇b (the GRU: ∇b_ih).
    pub b: DMatrix<f64>,
    /// ‖e_t‖_F over the batch for t = 1 … T (for BP, the norm of ∂ℓ/∂h_t): how far back
    /// in time the training signal reaches.
    pub error_norms: Vec<f64>,
}

/// Gradients of the GRU's recurrent tensors: `rnn` holds w_hh, w_ih, b_ih (as `b`) and the
/// per-step error norms, `b_hh` the hidden bias.
#[derive(Clone, Debug, PartialEq)]
pub struct GruGrads {
    /// ∇w_hh, ∇w_ih, ∇b_ih and the error norms.
    pub rnn: RnnGrads,
    /// ∇b_hh.
    pub b_hh: DMatrix<f64>,
}

/// What one step keeps for its derivatives, each B×d: the gates r, z, the candidate n and
/// `hn = W_n h_{t−1} + b_hn` (needed because ∂n/∂r = (1 − n²) ⊙ hn).
#[derive(Clone, Debug)]
pub struct GruStep {
    /// The reset gate r_t.
    pub r: DMatrix<f64>,
    /// The update gate z_t.
    pub z: DMatrix<f64>,
    /// The candidate n_t.
    pub n: DMatrix<f64>,
    /// `W_n h_{t−1} + b_hn`.
    pub hn: DMatrix<f64>,
}

/// Loss, its gradients and the outputs of the head `z = V h_T + c`.
#[derive(Clone, Debug)]
pub struct HeadOut {
    /// ℓ, a mean (docs/ALGORITHM.md §1).
    pub loss: f64,
    /// Share of correct predictions.
    pub accuracy: f64,
    /// Outputs z, B×q.
    pub z: DMatrix<f64>,
    /// g_T = ∇_{h_T} ℓ, B×d.
    pub grad_h: DMatrix<f64>,
    /// ∇_V ℓ, q×d.
    pub grad_w: DMatrix<f64>,
    /// ∇_c ℓ, q×1.
    pub grad_b: DMatrix<f64>,
}

/// Loss and gradients of the heads at every step (docs/ALGORITHM.md §13).
#[derive(Clone, Debug)]
pub struct StepHeadOut {
    /// ℓ, the mean cross-entropy over all B·T predictions.
    pub loss: f64,
    /// The share of the B·T predictions whose first arg-max is the label.
    pub accuracy: f64,
    /// ℓ_t for t = 1 … T, each the mean over the B sequences (ℓ is their mean).
    pub step_losses: Vec<f64>,
    /// g_t = ∇_{h_t} ℓ through the head of step t alone, B×d, shaped like h: g_0 … g_T
    /// (g_0 = 0).
    pub grad_h: Vec<DMatrix<f64>>,
    /// ∇_V ℓ = Σ_t (∂ℓ/∂z_t)ᵀ h_t, q×d.
    pub grad_w: DMatrix<f64>,
    /// ∇_c ℓ, q×1.
    pub grad_b: DMatrix<f64>,
}
