//! Optimizer steps (docs/ALGORITHM.md §2 step 7, §8) against hand-computed ones, in PyTorch's conventions,
//! entry by entry over three steps with a different gradient each step.

use tpri::config::{OptimizerConfig, OptimizerKind};
use tpri::cpu::optimizer::optimizer_step;
use tpri::model::{CellKind, Dims, Params, GRU_PARAM_NAMES, HEAD_NAMES, PARAM_NAMES};
use tpri::optimizer_state::OptState;

use crate::support::*;

const DIMS: Dims = Dims {
    input: 1,
    hidden: 2,
    output: 1,
};

/// Every entry of every tensor, in `PARAM_NAMES` order.
fn flat(p: &Params) -> Vec<f64> {
    p.tensors()
        .iter()
        .flat_map(|(_, m)| m.iter().copied())
        .collect()
}

/// Parameters and three gradients, all random.
fn start(seed: u64) -> (Params, [Params; 3]) {
    let mut rng = rng(seed);
    let init = Init::Gaussian { w_gain: 1.0 };
    let params = random_params(&mut rng, CellKind::Tanh, DIMS, init);
    let grads = [(); 3].map(|_| random_params(&mut rng, CellKind::Tanh, DIMS, init));
    (params, grads)
}

/// Runs three steps of `cfg` and, after each, compares every entry with `by_hand`, which
/// updates one scalar θ with its gradient g, step number t and its own two slots.
fn three_steps(
    cfg: OptimizerConfig,
    seed: u64,
    mut by_hand: impl FnMut(&mut f64, f64, i32, &mut f64, &mut f64),
) -> OptState {
    let (mut params, grads) = start(seed);
    let mut state = OptState::new(&params);
    let mut theta = flat(&params);
    let mut slots = vec![(0.0, 0.0); theta.len()];
    for (t, g) in (1..).zip(&grads) {
        optimizer_step(&cfg, &mut state, &mut params, g).unwrap();
        for ((th, gi), (a, b)) in theta.iter_mut().zip(flat(g)).zip(slots.iter_mut()) {
            by_hand(th, gi, t, a, b);
        }
        for (k, (got, want)) in flat(&params).iter().zip(&theta).enumerate() {
            assert!(
                (got - want).abs() <= 1e-15 * want.abs().max(1.0),
                "{:?} step {t}, entry {k}: {got} vs {want}",
                cfg.kind
            );
        }
    }
    assert_eq!(state.step, 3);
    state
}

#[test]
fn sgd_matches_hand_computed_steps() {
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Sgd,
        lr: 0.07,
        ..OptimizerConfig::default()
    };
    three_steps(cfg, 70, |th, g, _, _, _| *th -= 0.07 * g);
}

/// PyTorch's Nesterov (dampening 0): buf ← μ·buf + g (buf = g at the first step);
/// θ ← θ − lr·(g + μ·buf).
#[test]
fn nesterov_matches_hand_computed_steps() {
    let (lr, mu) = (0.07, 0.85);
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Nesterov,
        lr,
        momentum: mu,
        ..OptimizerConfig::default()
    };
    let mut bufs = Vec::new();
    let state = three_steps(cfg.clone(), 71, |th, g, _, buf, _| {
        *buf = mu * *buf + g;
        *th -= lr * (g + mu * *buf);
        bufs.push(*buf);
    });
    // The buffer kept is the last step's.
    let n = bufs.len() / 3;
    assert_eq!(flat(&state.m), bufs[2 * n..].to_vec());

    // By hand, one scalar with g = 1, lr = 0.1, μ = 0.9 from θ = 1:
    // buf 1, 1.9, 2.71 and θ 1 − 0.19 = 0.81, 0.81 − 0.271 = 0.539, 0.539 − 0.3439 = 0.1951.
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Nesterov,
        lr: 0.1,
        momentum: 0.9,
        ..OptimizerConfig::default()
    };
    let ones = Params {
        w_hh: nalgebra::DMatrix::from_element(2, 2, 1.0),
        w_ih: nalgebra::DMatrix::from_element(2, 1, 1.0),
        b: nalgebra::DMatrix::from_element(2, 1, 1.0),
        b_hh: nalgebra::DMatrix::from_element(2, 1, 1.0),
        head_w: nalgebra::DMatrix::from_element(1, 2, 1.0),
        head_b: nalgebra::DMatrix::from_element(1, 1, 1.0),
        ..Params::zeros(DIMS).unwrap()
    };
    let (mut params, mut state) = (ones.clone(), OptState::new(&ones));
    for want in [0.81, 0.539, 0.1951] {
        optimizer_step(&cfg, &mut state, &mut params, &ones).unwrap();
        assert!(flat(&params).iter().all(|th| (th - want).abs() < 1e-14));
    }
}

/// PyTorch's Adam: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// θ ← θ − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + eps). Betas and eps away from their
/// defaults, so that a swap or a misplaced eps shows.
#[test]
fn adam_matches_hand_computed_steps() {
    let (lr, b1, b2, eps) = (0.05, 0.8, 0.95, 1e-2);
    let cfg = OptimizerConfig {
        kind: OptimizerKind::Adam,
        lr,
        beta1: b1,
        beta2: b2,
        eps,
        ..OptimizerConfig::default()
    };
    three_steps(cfg.clone(), 72, |th, g, t, m, v| {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let step_size = lr / (1.0 - b1.powi(t));
        let denom = v.sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
        *th -= step_size * *m / denom;
    });

    // By hand: with a constant gradient g the bias-corrected moments are exactly g and g²,
    // so every step moves θ by lr·g / (|g| + eps).
    let (mut params, grads) = start(73);
    let g = grads[0].clone();
    let want: Vec<f64> = flat(&params)
        .iter()
        .zip(flat(&g))
        .map(|(th, gi)| th - 3.0 * lr * gi / (gi.abs() + eps))
        .collect();
    let mut state = OptState::new(&params);
    for _ in 0..3 {
        optimizer_step(&cfg, &mut state, &mut params, &g).unwrap();
    }
    for (got, want) in flat(&params).iter().zip(&want) {
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }
}

/// `lr_head` steps the head's V and c at their own rate and nothing else: unset or equal to
/// lr, every tensor is what it was without it, bit for bit; set to 3·lr, the head's tensors
/// (and their slots) are those of a run at 3·lr throughout and the others those of lr.
#[test]
fn head_learning_rate_steps_the_head_alone() {
    assert_eq!(PARAM_NAMES[4..], HEAD_NAMES);
    assert_eq!(GRU_PARAM_NAMES[4..], HEAD_NAMES);
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
    ] {
        let lr = 0.05;
        let run = |lr: f64, lr_head: Option<f64>| {
            let cfg = OptimizerConfig {
                kind,
                lr,
                lr_head,
                ..OptimizerConfig::default()
            };
            let (mut params, grads) = start(73);
            let mut state = OptState::new(&params);
            for g in &grads {
                optimizer_step(&cfg, &mut state, &mut params, g).unwrap();
            }
            (params, state)
        };
        let (plain, plain_state) = run(lr, None);
        let (same, _) = run(lr, Some(lr));
        assert_eq!(flat(&same), flat(&plain), "{kind:?}: lr_head = lr");
        let (split, split_state) = run(lr, Some(3.0 * lr));
        let (fast, fast_state) = run(3.0 * lr, None);
        let tensors = |p: &Params, s: &OptState| {
            let slots = s.m.tensors().into_iter().zip(s.v.tensors());
            p.tensors()
                .into_iter()
                .zip(slots)
                .map(|((name, t), ((_, m), (_, v)))| (name, [t.clone(), m.clone(), v.clone()]))
                .collect::<Vec<_>>()
        };
        let moved = tensors(&split, &split_state).into_iter();
        let plain = tensors(&plain, &plain_state);
        let fast = tensors(&fast, &fast_state);
        for (k, (name, got)) in moved.enumerate() {
            let (from, want) = if HEAD_NAMES.contains(&name) {
                ("3·lr", &fast[k].1)
            } else {
                ("lr", &plain[k].1)
            };
            assert_eq!(&got, want, "{kind:?}: {name} must be stepped at {from}");
        }
        // And the head did move differently from the plain run's.
        assert_ne!(flat(&split), flat(&run(lr, None).0), "{kind:?}");
    }
}

/// `clip_norm` is PyTorch's `clip_grad_norm_` before the step: a gradient whose norm over
/// all tensors passes the limit takes the step of that gradient times
/// max / (‖g‖ + 1e-6), for every optimizer and its slots; one below it takes the
/// unclipped step bit for bit.
#[test]
fn clip_norm_scales_large_gradients_as_pytorch() {
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
    ] {
        let run = |clip_norm: Option<f64>, scale_by_hand: Option<f64>| {
            let cfg = OptimizerConfig {
                kind,
                lr: 0.05,
                lr_head: Some(0.2),
                clip_norm,
                ..OptimizerConfig::default()
            };
            let (mut params, grads) = start(91);
            let mut state = OptState::new(&params);
            for g in &grads {
                let norm = flat(g).iter().map(|x| x * x).sum::<f64>().sqrt();
                assert!(norm > 1.0, "the test's gradients must pass the limit");
                let mut g = g.clone();
                if let Some(max) = scale_by_hand {
                    for t in g.tensors_mut() {
                        *t *= max / (norm + 1e-6);
                    }
                }
                optimizer_step(&cfg, &mut state, &mut params, &g).unwrap();
            }
            let slots = flat(&state.m).into_iter().chain(flat(&state.v));
            flat(&params).into_iter().chain(slots).collect::<Vec<_>>()
        };
        let plain = run(None, None);
        assert_eq!(
            run(Some(1e3), None),
            plain,
            "{kind:?}: a limit never reached"
        );
        let clipped = run(Some(0.3), None);
        let by_hand = run(None, Some(0.3));
        for (k, (got, want)) in clipped.iter().zip(&by_hand).enumerate() {
            assert!(
                (got - want).abs() <= 1e-15 * want.abs().max(1.0),
                "{kind:?} entry {k}: {got} vs {want}"
            );
        }
        assert_ne!(clipped, plain, "{kind:?}: the limit must change the steps");
    }
}
