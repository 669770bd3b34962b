//! DTP's backward sweep of difference targets through the learned reverse layer
//! (docs/ALGORITHM.md §14; twin of `shaders/dtp_targets.wgsl`).

use nalgebra::DMatrix;

use crate::cpu::forward::{affine_into, tanh_step_into};
use crate::cpu::steps::Steps;
use crate::cpu::target_sweep::sweep_ends;
use crate::dtp::ReverseLayer;
use crate::model::Params;

/// DTP's targets into `v` (shaped like `h`): `v_T = h_T − γ_h g_T`, then for t = T … 2
///
/// ```text
/// v_{t−1} = h_{t−1} − g(h_t, x_t) + g(v_t, x_t),    g(h, x) = tanh(V h + c + U x)
/// ```
///
/// with the reverse layer `reverse` and the cell's U of `params`; `v_0 = h_0` (never used).
/// Both terms of a step are computed by the same products, so `v_t = h_t` gives exactly
/// `v_{t−1} = h_{t−1}`.
pub fn dtp_targets_steps(
    params: &Params,
    reverse: &ReverseLayer,
    x: &Steps,
    h: &Steps,
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    v: &mut Steps,
) {
    sweep_ends(h, grad_h, lr_target, v);
    let n = h.width() * h.batch();
    let (mut g_h, mut g_v) = (vec![0.0; n], vec![0.0; n]);
    for t in (2..x.steps() + 1).rev() {
        affine_into(
            &params.w_ih,
            reverse.b_rev.as_slice(),
            x.step(t - 1),
            &mut g_h,
        );
        g_v.copy_from_slice(&g_h);
        tanh_step_into(&reverse.w_rev, h.step(t), &mut g_h);
        tanh_step_into(&reverse.w_rev, v.step(t), &mut g_v);
        let h_prev = h.step(t - 1);
        let out = v.step_mut(t - 1);
        // The difference first, as in the difference mode of TP-RI.
        for ((o, &hp), (&gv, &gh)) in out.iter_mut().zip(h_prev).zip(g_v.iter().zip(&g_h)) {
            *o = hp + (gv - gh);
        }
    }
}
