//! The gradient of DTP's reconstruction loss in the reverse layer's parameters
//! (docs/ALGORITHM.md §14; twin of `shaders/dtp_reverse.wgsl`).

use crate::cpu::forward::{affine_into, input_term_into, tanh_step_into};
use crate::cpu::steps::{gemm, Mat, Steps};
use crate::dtp::{Noise, ReverseLayer};
use crate::model::Params;

/// ∇V and ∇c (as a `ReverseLayer`) of the reconstruction loss
///
/// ```text
/// L = Σ_{t=1..T} ½ ‖g(F(h̃_{t−1}, x_t), x_t) − h̃_{t−1}‖² / B,   h̃_{t−1} = h_{t−1} + η_t
/// ```
///
/// with the cell's step F of `params`, the reverse layer `g(h, x) = tanh(V h + c + U x)` of
/// `reverse` (U the cell's, held fixed), the states `h` (h_0 … h_T) of this iteration's
/// forward pass, the inputs `x` (x_1 … x_T) and the noise η of `noise` (element
/// `((t−1)·B + i)·d + j` of its stream for sequence i, unit j). No step depends on another:
/// every product runs over all T·B columns at once.
pub fn reverse_gradient_steps(
    params: &Params,
    reverse: &ReverseLayer,
    x: &Steps,
    h: &Steps,
    noise: Noise,
) -> ReverseLayer {
    let (d, t_len, b) = (h.width(), x.steps(), x.batch());
    let cols = t_len * b;
    // h̃_{t−1} for t = 1 … T: steps 0 … T−1 of h, column (t−1)·B + i.
    let mut h_in = h.span(0..t_len).to_vec();
    if noise.sigma > 0.0 {
        for (n, hi) in h_in.iter_mut().enumerate() {
            *hi += noise.at(n);
        }
    }
    let x_all = x.span(0..t_len);
    // y = F(h̃_{t−1}, x_t) = tanh(W h̃ + U x + b).
    let mut y = vec![0.0; d * cols];
    input_term_into(params, x_all, &mut y);
    tanh_step_into(&params.w_hh, &h_in, &mut y);
    // g(y, x_t) = tanh(V y + U x + c), then in place δ = (g − h̃) ⊙ (1 − g²) / B.
    let mut delta = vec![0.0; d * cols];
    affine_into(&params.w_ih, reverse.b_rev.as_slice(), x_all, &mut delta);
    tanh_step_into(&reverse.w_rev, &y, &mut delta);
    for (g, &hi) in delta.iter_mut().zip(&h_in) {
        *g = (*g - hi) * (1.0 - *g * *g) / b as f64;
    }
    // ∇V = Δ Yᵀ, ∇c = Δ 1 over all T·B columns.
    let mut grad = ReverseLayer::zeros(d);
    gemm(
        1.0,
        Mat::cols(&delta, d, cols),
        Mat::cols(&y, d, cols).t(),
        0.0,
        grad.w_rev.as_mut_slice(),
    );
    for col in delta.chunks_exact(d) {
        for (c, &dj) in grad.b_rev.iter_mut().zip(col) {
            *c += dj;
        }
    }
    grad
}
