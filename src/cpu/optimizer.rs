//! SGD, SGD with Nesterov momentum and Adam, in PyTorch's conventions
//! (twin of `shaders/optimizer.wgsl`).

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::model::Params;
use crate::optimizer_state::OptState;

/// Applies one step of `cfg` to `params` with gradients `grads`.
pub fn optimizer_step(
    cfg: &OptimizerConfig,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
) {
    state.step += 1;
    let t = state.step as i32;
    let slots = params
        .tensors_mut()
        .into_iter()
        .zip(grads.tensors())
        .zip(state.m.tensors_mut())
        .zip(state.v.tensors_mut());
    for (((theta, (_, g)), m), v) in slots {
        match cfg.kind {
            OptimizerKind::Sgd => *theta -= g * cfg.lr,
            OptimizerKind::Nesterov => {
                // buf ← μ buf + g;  θ ← θ − lr (g + μ buf)
                *m *= cfg.momentum;
                *m += g;
                *theta -= (g + &*m * cfg.momentum) * cfg.lr;
            }
            OptimizerKind::Adam => {
                *m *= cfg.beta1;
                *m += g * (1.0 - cfg.beta1);
                v.zip_apply(g, |vi, gi| {
                    *vi = cfg.beta2 * *vi + (1.0 - cfg.beta2) * gi * gi
                });
                let c1 = 1.0 - cfg.beta1.powi(t);
                let c2 = 1.0 - cfg.beta2.powi(t);
                theta.zip_zip_apply(m, v, |th, mi, vi| {
                    *th -= cfg.lr * (mi / c1) / ((vi / c2).sqrt() + cfg.eps)
                });
            }
        }
    }
}
