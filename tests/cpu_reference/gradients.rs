//! Gradients against finite differences of independently written objectives: the BP
//! gradient of ℓ (docs/ALGORITHM.md §3), the TP surrogate gradient through time and local (§2 step 6),
//! and the head's gradients (§2 step 2).

use nalgebra::DMatrix;
use rand_chacha::ChaCha8Rng;

use tpri::config::{Hyper, Loss, Method, Solver, TargetMode, TpGrad};
use tpri::cpu::bptt::bptt;
use tpri::cpu::forward::forward;
use tpri::cpu::head::head;
use tpri::cpu::iteration::iteration;
use tpri::kernel_io::{Injection, RnnGrads};
use tpri::model::{CellKind, Params, PARAM_NAMES};
use tpri::tasks::Batch;

use crate::common::*;
use crate::support::*;

/// What the checks demand of ‖g − fd‖ / ‖fd‖.
const FD_TOL: f64 = 1e-6;

/// The models the checks draw: W with gain 1.2 where the recurrence is differentiated, 1
/// where only the head is.
const STEEP: Init = Init::Gaussian { w_gain: 1.2 };
const GENTLE: Init = Init::Gaussian { w_gain: 1.0 };

/// Both losses, each with targets of its kind.
const LOSSES: [Loss; 2] = [Loss::CrossEntropy, Loss::Mse];

/// Compares the tensors numbered `which` of `got` with finite differences of `f` at
/// `params`. With T = 1 the W gradient vanishes identically (its factor h_0 is 0), so it is
/// checked to be exactly zero instead of relatively.
fn check_grads(
    got: &Params,
    params: &Params,
    t_len: usize,
    which: std::ops::Range<usize>,
    f: impl Fn(&Params) -> f64,
    what: &str,
) {
    for k in which {
        let name = PARAM_NAMES[k];
        let fd = fd_param_gradient(params, k, &f);
        let g = got.tensors()[k].1;
        if k == 0 && t_len == 1 {
            assert_eq!(g.norm(), 0.0, "{what}: {name} must vanish when T = 1");
            assert!(fd.norm() < 1e-9, "{what}: finite differences of {name}");
        } else {
            assert_close(&format!("{what}: {name}"), g, &fd, FD_TOL);
        }
    }
}

/// The recurrent gradients as a `Params` with a zero head, for `check_grads`.
fn as_params(g: RnnGrads, params: &Params) -> Params {
    Params {
        w_hh: g.w_hh,
        w_ih: g.w_ih,
        // The two biases enter as their sum: each has its gradient.
        b_hh: g.b.clone(),
        b: g.b,
        ..Params::zeros(params.dims()).unwrap()
    }
}

fn bp_hyper(loss: Loss) -> Hyper {
    Hyper {
        method: Method::Bp,
        loss,
        ..Hyper::default()
    }
}

/// TP-RI with target step `lr_target` and P formed by Cholesky (exact, whatever r).
fn tp_hyper(loss: Loss, lr_target: f64) -> Hyper {
    let mut hyper = Hyper {
        method: Method::Tp,
        ..bp_hyper(loss)
    };
    hyper.tp.lr_target = lr_target;
    hyper.tp.solver = Solver::Cholesky;
    hyper
}

/// The batched forward pass and head agree with the step-by-step column-vector versions
/// the finite differences are taken of.
#[test]
fn forward_and_loss_match_step_by_step() {
    let mut rng = rng(1);
    for s in SHAPES {
        for loss in LOSSES {
            let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, loss, STEEP);
            let h = forward(&params, &batch.x).unwrap();
            assert_eq!(h.len(), s.t + 1);
            assert_eq!(h[0], DMatrix::zeros(s.b, s.d));
            for i in 0..s.b {
                for (t, col) in naive_hidden(&params, &batch, i).iter().enumerate() {
                    let err = (h[t].row(i).transpose() - col).amax();
                    assert!(err < 1e-14, "{s:?}: h_{t} of sequence {i} off by {err:e}");
                }
            }
            let out = head(&params, &h[s.t], &batch.y, loss).unwrap();
            let want = naive_loss(&params, &batch, loss);
            assert!(
                (out.loss - want).abs() <= 1e-13 * want.abs().max(1.0),
                "{s:?} {loss:?}: loss {} vs {want}",
                out.loss
            );
        }
    }
}

/// docs/ALGORITHM.md §3: the BP gradient of ℓ in all five tensors, both losses, every shape.
#[test]
fn bp_gradient_matches_finite_differences() {
    let mut rng = rng(2);
    for s in SHAPES {
        for loss in LOSSES {
            // One class makes cross-entropy identically 0 (see `one_class_cross_entropy…`).
            if loss == Loss::CrossEntropy && s.q == 1 {
                continue;
            }
            let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, loss, STEEP);
            let trace = iteration(&params, &batch, &bp_hyper(loss), None).unwrap();
            assert!(trace.v.is_none() && trace.p_inv.is_none() && trace.cg.is_none());
            check_grads(
                &trace.grads,
                &params,
                s.t,
                0..5,
                |p| naive_loss(p, &batch, loss),
                &format!("BP {s:?} {loss:?}"),
            );
        }
    }
}

/// docs/ALGORITHM.md §13: with a head at every step, BP's gradient of ℓ (the mean over
/// all B·T predictions), injected at every step, in every tensor, every shape.
#[test]
fn bp_gradient_with_outputs_at_every_step_matches_finite_differences() {
    let mut rng = rng(12);
    let loss = Loss::CrossEntropySeq;
    for s in SHAPES.into_iter().filter(|s| s.q > 1) {
        let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, loss, STEEP);
        let trace = iteration(&params, &batch, &bp_hyper(loss), None).unwrap();
        assert_eq!(trace.step_losses.len(), s.t);
        let mean = trace.step_losses.iter().sum::<f64>() / s.t as f64;
        assert!((mean - trace.loss).abs() <= 1e-14 * trace.loss, "{s:?}");
        assert!((trace.loss - naive_loss(&params, &batch, loss)).abs() <= 1e-13 * trace.loss);
        check_grads(
            &trace.grads,
            &params,
            s.t,
            0..PARAM_NAMES.len(),
            |p| naive_loss(p, &batch, loss),
            &format!("BP every step {s:?}"),
        );
    }
}

/// With a single class the softmax is 1 whatever the logits: ℓ = 0 and every gradient is 0.
#[test]
fn one_class_cross_entropy_is_constant() {
    let mut rng = rng(3);
    let s = Shape::new(3, 4, 2, 5, 1);
    let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, Loss::CrossEntropy, STEEP);
    let trace = iteration(&params, &batch, &bp_hyper(Loss::CrossEntropy), None).unwrap();
    assert_eq!(trace.loss, 0.0);
    for (name, g) in trace.grads.tensors() {
        assert_eq!(g.norm(), 0.0, "{name}");
    }
}

/// docs/ALGORITHM.md §2 step 2: g_T = ∇_{h_T} ℓ, ∇_V ℓ and ∇_c ℓ, at last states anywhere in ℝ^d.
#[test]
fn head_gradients_match_finite_differences() {
    let mut rng = rng(4);
    for s in SHAPES {
        for loss in LOSSES {
            if loss == Loss::CrossEntropy && s.q == 1 {
                continue;
            }
            let params = random_params(&mut rng, CellKind::Tanh, s.dims(), GENTLE);
            let y = random_batch(&mut rng, s, loss).y;
            let h_last = gaussian(&mut rng, s.b, s.d, 1.0);
            let out = head(&params, &h_last, &y, loss).unwrap();
            let what = format!("head {s:?} {loss:?}");
            let fd_h = fd_gradient(&h_last, |h| naive_head_loss(&params, h, &y, loss));
            assert_close(&format!("{what}: g_T"), &out.grad_h, &fd_h, FD_TOL);
            let head_only = Params {
                head_w: out.grad_w.clone(),
                head_b: out.grad_b.clone(),
                ..Params::zeros(s.dims()).unwrap()
            };
            check_grads(
                &head_only,
                &params,
                s.t,
                4..6,
                |p| naive_head_loss(p, &h_last, &y, loss),
                &what,
            );
        }
    }
}

/// Targets near the hidden states, as a sweep would give, but otherwise arbitrary: the
/// surrogate gradient must be right for any fixed v.
fn random_targets(rng: &mut ChaCha8Rng, h: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    h.iter()
        .map(|h_t| h_t + gaussian(rng, h_t.nrows(), h_t.ncols(), 0.3))
        .collect()
}

/// A random model, batch and its hidden states for the surrogate checks.
fn surrogate_case(rng: &mut ChaCha8Rng, s: Shape) -> (Params, Batch, Vec<DMatrix<f64>>) {
    let (params, batch) = random_problem(rng, CellKind::Tanh, s, Loss::Mse, STEEP);
    let h = forward(&params, &batch.x).unwrap();
    (params, batch, h)
}

/// docs/ALGORITHM.md §2 step 6, through time: ∇S with S differentiated through h_t(θ) entirely.
#[test]
fn surrogate_gradient_through_time_matches_finite_differences() {
    let mut rng = rng(5);
    for s in SHAPES {
        let (params, batch, h) = surrogate_case(&mut rng, s);
        let v = random_targets(&mut rng, &h);
        let g = bptt(&params, &batch.x, &h, Injection::Targets(&v), true).unwrap();
        check_grads(
            &as_params(g, &params),
            &params,
            s.t,
            0..4,
            |p| naive_surrogate(p, &batch, &v),
            &format!("TP through time {s:?}"),
        );
    }
}

/// docs/ALGORITHM.md §2 step 6, local: every step's input h_{t−1} held at its stored value.
#[test]
fn surrogate_gradient_local_matches_finite_differences() {
    let mut rng = rng(6);
    for s in SHAPES {
        let (params, batch, h) = surrogate_case(&mut rng, s);
        let v = random_targets(&mut rng, &h);
        let g = bptt(&params, &batch.x, &h, Injection::Targets(&v), false).unwrap();
        // The two modes differ once there is a step to differentiate through.
        if s.t > 1 {
            let tt = bptt(&params, &batch.x, &h, Injection::Targets(&v), true).unwrap();
            assert!(
                rel_err("∇W", &g.w_hh, &tt.w_hh) > 1e-3,
                "{s:?}: local = through time"
            );
        }
        check_grads(
            &as_params(g, &params),
            &params,
            s.t,
            0..4,
            |p| naive_local_surrogate(p, &batch, &h, &v),
            &format!("TP local {s:?}"),
        );
    }
}

/// A whole TP iteration: the recurrent gradients are those of the surrogate at the
/// targets the sweep produced, the head's those of ℓ — in every target and gradient mode.
#[test]
fn tp_iteration_gradients_match_finite_differences() {
    let mut rng = rng(7);
    let shapes = [SHAPES[3], SHAPES[5]];
    for s in shapes {
        for mode in [
            TargetMode::Linearized,
            TargetMode::Difference,
            TargetMode::Plain,
        ] {
            for tp_grad in [TpGrad::ThroughTime, TpGrad::Local] {
                let loss = Loss::CrossEntropy;
                let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, loss, STEEP);
                let mut hyper = tp_hyper(loss, 0.5);
                hyper.tp.target_mode = mode;
                hyper.tp.tp_grad = tp_grad;
                let trace = iteration(&params, &batch, &hyper, None).unwrap();
                let v = trace.v.clone().unwrap();
                let what = format!("TP iteration {s:?} {mode:?} {tp_grad:?}");
                match tp_grad {
                    TpGrad::ThroughTime => check_grads(
                        &trace.grads,
                        &params,
                        s.t,
                        0..4,
                        |p| naive_surrogate(p, &batch, &v),
                        &what,
                    ),
                    TpGrad::Local => check_grads(
                        &trace.grads,
                        &params,
                        s.t,
                        0..4,
                        |p| naive_local_surrogate(p, &batch, &trace.h, &v),
                        &what,
                    ),
                }
                check_grads(
                    &trace.grads,
                    &params,
                    s.t,
                    4..6,
                    |p| naive_loss(p, &batch, loss),
                    &what,
                );
            }
        }
    }
}

/// As r grows, P = (WᵀW + rI)⁻¹Wᵀ ≈ Wᵀ/r vanishes, the targets below the top collapse onto
/// the states, and TP-RI's recurrent gradient through time tends to γ_h times BPTT's (S sums
/// over sequences, g_T = ∇_{h_T} ℓ carries the mean's 1/B; docs/ALGORITHM.md §2), while the
/// head's gradients are BPTT's exactly. docs/REPRODUCTION.md's temporal-order ablation rests
/// on this: TP-RI at r = 10⁶ is BPTT with the recurrent learning rate scaled by γ_h.
#[test]
fn tp_gradient_tends_to_scaled_bp_gradient_as_r_grows() {
    let mut rng = rng(8);
    let gamma = 0.01;
    // Shapes with T > 1 (targets below the top) and q > 1 (a one-class loss is constant).
    for s in [SHAPES[3], SHAPES[5], SHAPES[6]] {
        for loss in LOSSES {
            let (params, batch) = random_problem(&mut rng, CellKind::Tanh, s, loss, STEEP);
            let bp = iteration(&params, &batch, &bp_hyper(loss), None).unwrap();
            let deviation = |reg: f64| {
                let mut hyper = tp_hyper(loss, gamma);
                hyper.tp.reg = reg;
                let tp = iteration(&params, &batch, &hyper, None).unwrap();
                let tensors = tp.grads.tensors();
                let wanted = bp.grads.tensors();
                for k in 4..6 {
                    assert_eq!(tensors[k].1, wanted[k].1, "{s:?} {loss:?}: head {k}");
                }
                (0..4)
                    .map(|k| {
                        let what = format!("{s:?} {loss:?} r = {reg}: {}", tensors[k].0);
                        rel_err(&what, tensors[k].1, &(wanted[k].1 * gamma))
                    })
                    .fold(0.0, f64::max)
            };
            let (near, far, farther) = (deviation(1.0), deviation(1e8), deviation(1e10));
            // With T > 1 the targets below the top move the gradient at r = 1. What is left
            // of them at large r is of order ‖W‖/r times the top's, times 1/(1 − clamp(h)²)
            // (up to 500): it falls as 1/r.
            assert!(
                near > 1e-3,
                "{s:?} {loss:?}: r = 1 deviates by only {near:e}"
            );
            assert!(far < 1e-4, "{s:?} {loss:?}: r = 1e8 deviates by {far:e}");
            assert!(
                farther < 1e-6 && farther < far / 10.0,
                "{s:?} {loss:?}: r = 1e10 deviates by {farther:e} (1e8: {far:e})"
            );
        }
    }
}
