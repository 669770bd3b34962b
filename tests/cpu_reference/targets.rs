//! Properties of the backward target sweep (docs/ALGORITHM.md §2 steps 3–5) and of the regularized
//! inverse f_t⁻¹ it is built from.

use nalgebra::{DMatrix, DVector};
use rand::Rng;

use tpri::config::{Hyper, Loss, Method, Solver, TargetMode, TpGrad, CLAMP_EPS};
use tpri::cpu::forward::forward;
use tpri::cpu::head::head;
use tpri::cpu::inverse::inverse_cholesky;
use tpri::cpu::iteration::iteration;
use tpri::cpu::target_sweep::{clamp, f_inverse, target_sweep};
use tpri::model::{CellKind, Params};
use tpri::plan::PER_STEP_PENALTY;
use tpri::tasks::Batch;

use crate::support::*;

const MODES: [TargetMode; 3] = [
    TargetMode::Linearized,
    TargetMode::Difference,
    TargetMode::Plain,
];

/// Shapes for the sweep properties (T ≥ 2 so that there is something to sweep).
const SWEEP_SHAPES: [Shape; 3] = [
    Shape::new(3, 6, 2, 5, 3),
    Shape::new(2, 4, 1, 1, 2),
    Shape::new(1, 3, 3, 8, 2),
];

/// Every model here starts from Gaussian weights with unit gain.
const GAUSSIAN: Init = Init::Gaussian { w_gain: 1.0 };

/// Small, well-conditioned weights: W = Q₁ diag(s) Q₂ᵀ with singular values s in
/// [0.4, 0.9], so W is invertible with condition number ≤ 2.25, and |h_t| stays far from 1
/// (the clamp in the sweep is then inactive and docs/ALGORITHM.md's formulas hold unclamped).
fn gentle_params(rng: &mut rand_chacha::ChaCha8Rng, s: Shape) -> Params {
    let svd = gaussian(rng, s.d, s.d, 1.0).svd(true, true);
    let sv = DMatrix::from_diagonal(&DVector::from_fn(s.d, |_, _| rng.random_range(0.4..0.9)));
    let mut params = random_params(rng, CellKind::Tanh, s.dims(), GAUSSIAN);
    params.w_hh = svd.u.unwrap() * sv * svd.v_t.unwrap();
    params.w_ih *= 0.3;
    // b = b_ih + b_hh ~ N(0, 0.1²): each half scaled by 0.5/√2.
    params.b *= 0.5 / 2f64.sqrt();
    params.b_hh *= 0.5 / 2f64.sqrt();
    params
}

fn case(seed: u64, s: Shape) -> (Params, Batch, Vec<DMatrix<f64>>) {
    let mut rng = rng(seed);
    let params = gentle_params(&mut rng, s);
    let batch = random_batch(&mut rng, s, Loss::CrossEntropy);
    let h = forward(&params, &batch.x).unwrap();
    // The premise of the exact properties below: the clamp never bites.
    let hmax = h.iter().map(|m| m.amax()).fold(0.0, f64::max);
    assert!(hmax < 0.9, "states reach {hmax}: the clamp could be active");
    (params, batch, h)
}

/// Property 1: as r → 0 the linearized sweep applies the exact inverse Jacobian,
/// v_{t−1} − h_{t−1} = J_t⁻¹(v_t − h_t) with J_t = D_t W, D_t = diag(1 − h_t²).
/// Also: v_T = h_T − γ_h g_T, and v_0 = h_0.
#[test]
fn linearized_sweep_inverts_the_jacobian_as_r_vanishes() {
    let lr_target = 0.3;
    for (k, s) in SWEEP_SHAPES.into_iter().enumerate() {
        let (params, batch, h) = case(20 + k as u64, s);
        let out = head(&params, &h[s.t], &batch.y, Loss::CrossEntropy).unwrap();
        // P = W⁻¹ + O(r/σ_min²): 1e-10 leaves an error near 1e-9.
        let p_inv = inverse_cholesky(&params.w_hh, 1e-10).unwrap();
        let v = target_sweep(
            &params,
            &p_inv,
            &batch.x,
            &h,
            &out.grad_h,
            lr_target,
            TargetMode::Linearized,
        )
        .unwrap();
        assert_eq!(v.len(), s.t + 1);
        assert_eq!(v[0], h[0]);
        assert_eq!(v[s.t], &h[s.t] - &out.grad_h * lr_target);
        for t in (2..=s.t).rev() {
            for i in 0..s.b {
                let h_t = h[t].row(i).transpose();
                let dv_t = (&v[t] - &h[t]).row(i).transpose();
                let dv_prev = (&v[t - 1] - &h[t - 1]).row(i).transpose();
                let jac = DMatrix::from_diagonal(&h_t.map(|x| 1.0 - x * x)) * &params.w_hh;
                let want = jac.lu().solve(&dv_t).expect("J_t is invertible");
                check(&format!("{s:?} t={t} seq {i}"), &dv_prev, &want, 1e-8);
            }
        }
    }
}

/// Property 2: f_t(f_t⁻¹(v)) ≈ v for a reachable v = f_t(h), and f_t⁻¹(v) ≈ h, as r → 0.
/// With r = 1 the inverse is visibly shrunk toward 0 instead.
#[test]
fn inverse_of_a_reachable_target_round_trips_as_r_vanishes() {
    for (k, s) in SWEEP_SHAPES.into_iter().enumerate() {
        let mut rng = rng(30 + k as u64);
        let params = gentle_params(&mut rng, s);
        let x_t = uniform(&mut rng, s.b, s.p, -1.0, 1.0);
        let h = uniform(&mut rng, s.b, s.d, -0.8, 0.8);
        let f = |h: &DMatrix<f64>| {
            let mut a = h * params.w_hh.transpose() + &x_t * params.w_ih.transpose();
            for mut row in a.row_iter_mut() {
                row += params.tanh_bias().unwrap().transpose();
            }
            a.map(f64::tanh)
        };
        let v = f(&h);
        let p_exact = inverse_cholesky(&params.w_hh, 1e-10).unwrap();
        let back = f_inverse(&params, &p_exact, &x_t, &v).unwrap();
        check(&format!("{s:?}: f⁻¹(f(h)) vs h"), &back, &h, 1e-8);
        check(&format!("{s:?}: f(f⁻¹(v)) vs v"), &f(&back), &v, 1e-8);
        let p_reg = inverse_cholesky(&params.w_hh, 1.0).unwrap();
        let shrunk = f_inverse(&params, &p_reg, &x_t, &v).unwrap();
        assert!(shrunk.norm() < h.norm() && rel_err("f⁻¹ at r = 1", &shrunk, &h) > 0.1);
    }
}

/// Property 3: with γ_h = 0, v_T = h_T and the linearized and difference sweeps return the
/// hidden states exactly, so the surrogate gradient is exactly zero in either gradient mode.
/// The plain sweep does not: v_{t−1} = P W h_{t−1} = (WᵀW + rI)⁻¹WᵀW h_{t−1}, which is
/// h_{t−1} only as r → 0 — at r = 1 it is far off (relative gap ~1), at r = 1e-12 close.
/// (Each step's error is carried down by J_t⁻¹, growing ~2.5× a step here: at r = 1e-10
/// the gap after five steps is already ~6e-9.)
#[test]
fn zero_target_step_keeps_the_hidden_states() {
    let s = SWEEP_SHAPES[0];
    let (params, batch, h) = case(40, s);
    for mode in MODES {
        for tp_grad in [TpGrad::ThroughTime, TpGrad::Local] {
            for reg in [1.0, 1e-12] {
                let mut hyper = Hyper {
                    method: Method::Tp,
                    loss: Loss::CrossEntropy,
                    ..Hyper::default()
                };
                hyper.tp.lr_target = 0.0;
                hyper.tp.reg = reg;
                hyper.tp.target_mode = mode;
                hyper.tp.tp_grad = tp_grad;
                hyper.tp.solver = Solver::Cg;
                let trace = iteration(&params, &batch, &hyper, None).unwrap();
                let v = trace.v.unwrap();
                let g = &trace.grads;
                let what = format!("{mode:?} {tp_grad:?} r={reg}");
                assert_eq!(v[s.t], h[s.t], "{what}: v_T");
                let gap = (1..s.t)
                    .map(|t| rel_err(&format!("v_{t}"), &v[t], &h[t]))
                    .fold(0.0, f64::max);
                let gnorm = [&g.w_hh, &g.w_ih, &g.b].map(|m| m.norm());
                match mode {
                    TargetMode::Linearized | TargetMode::Difference => {
                        assert_eq!(v, h, "{what}: targets");
                        assert_eq!(gnorm, [0.0; 3], "{what}: surrogate gradient");
                    }
                    TargetMode::Plain if reg < 1e-6 => {
                        assert!(gap <= 1e-8, "{what}: targets off by {gap:.2e}");
                        assert!(gnorm.iter().all(|&n| n <= 1e-8), "{what}: {gnorm:?}");
                    }
                    TargetMode::Plain => {
                        assert!(gap > 1e-2, "{what}: expected a biased target, {gap:.2e}");
                    }
                }
            }
        }
    }
}

/// Property 4: the difference sweep equals the linearized one to first order in γ_h
/// (atanh(v) − atanh(h) = (v − h)/(1 − h²) + O((v − h)²)), while the linearized deviation
/// v − h is exactly linear in γ_h.
#[test]
fn difference_equals_linearized_to_first_order() {
    for (k, s) in SWEEP_SHAPES.into_iter().enumerate() {
        let (params, batch, h) = case(50 + k as u64, s);
        let out = head(&params, &h[s.t], &batch.y, Loss::CrossEntropy).unwrap();
        let p_inv = inverse_cholesky(&params.w_hh, 1.0).unwrap();
        let sweep = |gamma: f64, mode| {
            target_sweep(&params, &p_inv, &batch.x, &h, &out.grad_h, gamma, mode).unwrap()
        };
        // Largest deviation over steps, relative to the size of the linearized move.
        let rel_gap = |gamma: f64| {
            let lin = sweep(gamma, TargetMode::Linearized);
            let dif = sweep(gamma, TargetMode::Difference);
            let twice = sweep(2.0 * gamma, TargetMode::Linearized);
            let (mut gap, mut size) = (0.0f64, 0.0f64);
            for t in 1..=s.t {
                let d_lin = &lin[t] - &h[t];
                let linearity = (&twice[t] - &h[t] - &d_lin * 2.0).norm();
                // Round-off: v − h loses the digits of h that v shares (~1e-16/|v − h|).
                assert!(linearity <= 1e-9 * d_lin.norm(), "{s:?}: not linear in γ_h");
                gap = gap.max((&dif[t] - &lin[t]).norm());
                size = size.max(d_lin.norm());
            }
            gap / size
        };
        // From γ_h = 1e-2 down: at 1e-1 the third-order terms still show on some draws
        // (the relative gap fell 45-fold over the first decade on one, d = 1).
        let gaps = [1e-2, 1e-3, 1e-4].map(rel_gap);
        for w in gaps.windows(2) {
            // Each decade of γ_h shrinks the relative gap by a decade (second order).
            let ratio = w[1] / w[0];
            assert!((0.05..0.2).contains(&ratio), "{s:?}: gaps {gaps:?}");
        }
        assert!(gaps[2] < 1e-4, "{s:?}: gaps {gaps:?}");
    }
}

/// The clamp keeps every mode finite where the formulas alone would not be: saturated
/// states (|h_t| = 1 in f64, so 1 − h_t² = 0) and targets pushed outside (−1, 1) (atanh = ±∞).
#[test]
fn clamp_keeps_saturated_sweeps_finite() {
    let s = Shape::new(2, 5, 3, 4, 3);
    let mut rng = rng(60);
    let mut params = random_params(&mut rng, CellKind::Tanh, s.dims(), GAUSSIAN);
    // |W h + U x| stays below 5 while b = b_ih + b_hh = 30: every pre-activation exceeds
    // 25, and tanh(25) rounds to 1.
    params.w_ih *= 0.5;
    params.b.fill(30.0);
    params.b_hh.fill(0.0);
    let batch = random_batch(&mut rng, s, Loss::CrossEntropy);
    let h = forward(&params, &batch.x).unwrap();
    assert!(h[1..].iter().all(|m| m.iter().all(|&x| x == 1.0)));
    let out = head(&params, &h[s.t], &batch.y, Loss::CrossEntropy).unwrap();
    let p_inv = inverse_cholesky(&params.w_hh, 1.0).unwrap();
    for mode in MODES {
        let v = target_sweep(&params, &p_inv, &batch.x, &h, &out.grad_h, 1e3, mode).unwrap();
        assert!(v[s.t].amax() > 1.0, "the top target should leave (−1, 1)");
        for (t, v_t) in v.iter().enumerate() {
            assert!(
                v_t.iter().all(|x| x.is_finite()),
                "{mode:?}: v_{t} not finite"
            );
        }
    }
    assert_eq!(clamp(2.0), 1.0 - CLAMP_EPS);
    assert_eq!(clamp(-1.0), -1.0 + CLAMP_EPS);
    assert_eq!(clamp(0.25), 0.25);
}

/// docs/ALGORITHM.md §4's alternative: never forming P and solving `(WᵀW + rI) z = Wᵀ s` per step gives
/// the targets and gradients of forming P, in every mode; `auto` picks per-step solves
/// exactly when PER_STEP_PENALTY·(T − 1)·B < d, and reports their worst CG.
#[test]
fn per_step_solves_match_forming_p() {
    for (seed, s) in [
        (1, Shape::new(3, 6, 2, 5, 3)),
        (2, Shape::new(2, 4, 1, 9, 2)),
        (3, Shape::new(1, 3, 3, 8, 2)),
        (4, Shape::new(1, 2, 1, 9, 2)),
    ] {
        let (params, batch, _) = case(seed, s);
        for mode in MODES {
            let run = |solver| {
                let mut hyper = Hyper {
                    method: Method::Tp,
                    loss: Loss::CrossEntropy,
                    ..Hyper::default()
                };
                hyper.tp.target_mode = mode;
                hyper.tp.reg = 0.3;
                hyper.tp.lr_target = 0.2;
                hyper.tp.solver = solver;
                iteration(&params, &batch, &hyper, None).unwrap()
            };
            let (formed, per_step, auto) = (
                run(Solver::Cholesky),
                run(Solver::PerStep),
                run(Solver::Auto),
            );
            assert!(per_step.p_inv.is_none());
            let cg = per_step.cg.expect("per-step solves report their CG");
            assert!(cg.iterations > 0 && cg.residual <= 1e-12, "{cg:?}");
            let what = format!("{mode:?} {s:?}");
            let (fv, pv) = (formed.v.unwrap(), per_step.v.unwrap());
            for t in 1..=s.t {
                assert_close(&format!("v_{t} {what}"), &pv[t], &fv[t], 1e-10);
            }
            assert_close(&what, &per_step.grads.w_hh, &formed.grads.w_hh, 1e-10);
            let picks_per_step = PER_STEP_PENALTY * (s.t - 1) * s.b < s.d;
            assert_eq!(auto.p_inv.is_none(), picks_per_step, "{what}");
        }
    }
}
