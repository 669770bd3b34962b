//! SGD, SGD with Nesterov momentum and Adam, in PyTorch's conventions
//! (twin of `shaders/optimizer.wgsl`).

use anyhow::Result;

use crate::arguments::like_params;
use crate::config::{OptimizerConfig, OptimizerKind};
use crate::dtp::REVERSE_NAMES;
use crate::model::{Params, HEAD_NAMES};
use crate::optimizer_state::OptState;

/// Applies one step of `cfg` to `params` with gradients `grads`; `grads` and the state's
/// slots must hold the tensors of `params`, each of its shape (an error naming the first
/// that does not, with nothing changed).
pub fn optimizer_step(
    cfg: &OptimizerConfig,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
) -> Result<()> {
    like_params("grads", grads, params)?;
    like_params("OptState::m", &state.m, params)?;
    like_params("OptState::v", &state.v, params)?;
    state.step += 1;
    update(cfg, cfg.lr, state, params, grads, |_| true);
    Ok(())
}

/// DTP's first step of an iteration (docs/ALGORITHM.md §14): the reverse layer alone,
/// with learning rate `lr_reverse` and the rest of `cfg`, before the targets are computed.
/// It counts the iteration's step; [`forward_step`] then moves the other tensors at the
/// same count, as the published code's two parameter groups of one optimizer do.
pub(crate) fn reverse_layer_step(
    cfg: &OptimizerConfig,
    lr_reverse: f64,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
) {
    state.step += 1;
    update(cfg, lr_reverse, state, params, grads, |name| {
        REVERSE_NAMES.contains(&name)
    });
}

/// DTP's second step of an iteration: every tensor but the reverse layer's, at the step
/// count [`reverse_layer_step`] set.
pub(crate) fn forward_step(
    cfg: &OptimizerConfig,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
) {
    update(cfg, cfg.lr, state, params, grads, |name| {
        !REVERSE_NAMES.contains(&name)
    });
}

/// One update of the tensors whose names `which` accepts, at the step count `state.step`:
/// with learning rate `lr`, the head's with `cfg.head_lr()`, their gradient first scaled
/// by `cfg.clip_scale` of its norm over those tensors.
fn update(
    cfg: &OptimizerConfig,
    lr: f64,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
    which: impl Fn(&str) -> bool,
) {
    let t = state.step as i32;
    let clip = cfg.clip_norm.map(|_| {
        let sq: f64 = grads
            .tensors()
            .into_iter()
            .filter(|(name, _)| which(name))
            .map(|(_, g)| g.norm_squared())
            .sum();
        cfg.clip_scale(sq.sqrt())
    });
    let slots = params
        .tensors_mut()
        .into_iter()
        .zip(grads.tensors())
        .zip(state.m.tensors_mut())
        .zip(state.v.tensors_mut());
    for (((theta, (name, g)), m), v) in slots {
        if !which(name) {
            continue;
        }
        let clipped;
        let g = match clip {
            Some(scale) if scale < 1.0 => {
                clipped = g * scale;
                &clipped
            }
            _ => g,
        };
        let lr = if HEAD_NAMES.contains(&name) {
            cfg.head_lr()
        } else {
            lr
        };
        match cfg.kind {
            OptimizerKind::Sgd => *theta -= g * lr,
            OptimizerKind::Nesterov => {
                // buf ← μ buf + g;  θ ← θ − lr (g + μ buf)
                *m *= cfg.momentum;
                *m += g;
                *theta -= (g + &*m * cfg.momentum) * lr;
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
                    *th -= lr * (mi / c1) / ((vi / c2).sqrt() + cfg.eps)
                });
            }
        }
    }
}
