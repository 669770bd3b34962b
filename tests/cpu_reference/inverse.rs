//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ (docs/ALGORITHM.md §4): batched CG against the exact
//! Cholesky solve, its iteration counts, warm starts and failures.

use nalgebra::DMatrix;

use tpri::config::{Hyper, Loss, Method, Solver};
use tpri::cpu::inverse::{inverse_cg, inverse_cholesky};
use tpri::cpu::iteration::iteration;
use tpri::model::CellKind;

use crate::support::*;

const REGS: [f64; 5] = [1e-3, 1e-2, 0.1, 1.0, 10.0];
const SIZES: [usize; 9] = [1, 2, 3, 5, 8, 13, 21, 34, 60];
const TIGHT: f64 = 1e-13;
/// A cap no converging solve in these tests comes near.
const CAP: usize = 10_000;

/// The random W of each size: gaussian with unit gain, and uniform in [−1, 1) unscaled
/// (σ_max ≈ 1.15√d: up to ~9 at d = 60, so A's condition number reaches ~1e4 at r = 1e-3).
fn random_ws(rng: &mut rand_chacha::ChaCha8Rng, d: usize) -> [(&'static str, DMatrix<f64>); 2] {
    [
        ("gaussian", gaussian(rng, d, d, 1.0 / (d as f64).sqrt())),
        ("uniform", uniform(rng, d, d, -1.0, 1.0)),
    ]
}

/// ‖Wᵀ − (WᵀW + rI) X‖_F / ‖Wᵀ‖_F, computed afresh (CG reports its recursively updated
/// residual).
fn true_residual(w: &DMatrix<f64>, reg: f64, x: &DMatrix<f64>) -> f64 {
    let rhs = w.transpose();
    (&rhs - w.tr_mul(&(w * x)) - x * reg).norm() / rhs.norm()
}

/// Iterations within which CG must reach `tol` in exact arithmetic, from the classical
/// bound ‖R_k‖_F ≤ 2√κ ρᵏ ‖R_0‖_F with ρ = (√κ − 1)/(√κ + 1), κ = (σ_max² + r)/(σ_min² + r),
/// and R_0 = Wᵀ when starting from 0.
fn cg_bound(w: &DMatrix<f64>, reg: f64, tol: f64) -> usize {
    let s = w.singular_values();
    let kappa = (s.max().powi(2) + reg) / (s.min().powi(2) + reg);
    let sk = kappa.sqrt();
    let rho = (sk - 1.0) / (sk + 1.0);
    if rho <= 0.0 {
        return 1;
    }
    ((2.0 * sk / tol).ln() / (1.0 / rho).ln()).ceil() as usize
}

/// CG at a tight tolerance agrees with Cholesky to 1e-9 over random W and r, reports
/// a residual that is the true one, and needs no more iterations than theory allows and
/// no fewer as r shrinks (A's spectrum [σ_min² + r, σ_max² + r] only widens).
#[test]
fn cg_matches_cholesky() {
    let mut rng = rng(10);
    for d in SIZES {
        for (kind, w) in random_ws(&mut rng, d) {
            let mut prev_iters = 0;
            // Largest r first, so the iteration counts must not decrease.
            for &reg in REGS.iter().rev() {
                let what = format!("{kind} d={d} r={reg}");
                let exact = inverse_cholesky(&w, reg).unwrap();
                let (p, rep) = inverse_cg(&w, reg, TIGHT, CAP, None).unwrap();
                check(&format!("{what}: CG vs Cholesky"), &p, &exact, 1e-9);
                assert!(rep.iterations >= 1, "{what}: X = 0 does not solve it");
                assert!(rep.residual <= TIGHT, "{what}: reported {:e}", rep.residual);
                let truth = true_residual(&w, reg, &p);
                assert!(truth <= 10.0 * TIGHT, "{what}: true residual {truth:e}");
                // At r = 10 (κ near 1) CG follows the bound within an iteration: leave two
                // for round-off.
                let bound = cg_bound(&w, reg, TIGHT) + 2;
                assert!(
                    rep.iterations <= bound,
                    "{what}: {} iterations, theory allows {bound}",
                    rep.iterations
                );
                assert!(
                    rep.iterations >= prev_iters,
                    "{what}: {} iterations, fewer than the {prev_iters} of a larger r",
                    rep.iterations
                );
                prev_iters = rep.iterations;
            }
        }
    }
}

/// Started from the exact answer, CG has (next to) nothing left to do.
#[test]
fn cg_warm_start_from_the_answer() {
    let mut rng = rng(11);
    for d in [1, 7, 40] {
        for (kind, w) in random_ws(&mut rng, d) {
            for reg in REGS {
                let exact = inverse_cholesky(&w, reg).unwrap();
                let (p, rep) = inverse_cg(&w, reg, 1e-12, CAP, Some(&exact)).unwrap();
                assert!(
                    rep.iterations <= 1,
                    "{kind} d={d} r={reg}: {} iterations from the answer",
                    rep.iterations
                );
                check(&format!("{kind} d={d} r={reg}: P"), &p, &exact, 1e-11);
            }
        }
    }
}

/// A solve that cannot reach its tolerance within the cap is an error carrying the numbers,
/// and the residual it carries is that of the iterate it refused to return.
#[test]
fn cg_missing_the_tolerance_is_an_error() {
    let mut rng = rng(12);
    let w = gaussian(&mut rng, 8, 8, 0.4);
    let err = inverse_cg(&w, 0.1, 1e-300, 2, None).unwrap_err();
    let cg = tpri::error::cg_error(&err).expect("the error is a CgError");
    assert_eq!(cg.report.iterations, 2);
    assert_eq!(cg.max_iter, 2);
    assert_eq!(cg.tol, 1e-300);
    let res = cg.report.residual;
    assert!(res.is_finite() && res > 0.0 && res < 1.0, "residual {res}");
    let msg = err.to_string();
    assert!(msg.contains("after 2 iterations"), "{msg}");
    // Asking for exactly that residual, the same two iterations succeed.
    let (p, rep) = inverse_cg(&w, 0.1, res, 2, None).unwrap();
    assert_eq!(rep, cg.report);
    assert!((true_residual(&w, 0.1, &p) - res).abs() <= 1e-12);
}

/// W = 0: P = 0 at once, by either path.
#[test]
fn zero_w_gives_zero_p() {
    for d in [1, 5] {
        let w = DMatrix::zeros(d, d);
        let (p, rep) = inverse_cg(&w, 1.0, TIGHT, CAP, None).unwrap();
        assert_eq!(p, DMatrix::zeros(d, d));
        assert_eq!((rep.iterations, rep.residual), (0, 0.0));
        // Even a warm start elsewhere is discarded: P = 0 exactly.
        let warm = DMatrix::from_element(d, d, 3.0);
        assert_eq!(inverse_cg(&w, 1.0, TIGHT, CAP, Some(&warm)).unwrap().0, p);
        assert_eq!(inverse_cholesky(&w, 1.0).unwrap(), p);
    }
}

/// A non-finite W (a diverged model) must not yield a NaN P reported as converged.
#[test]
fn cg_rejects_non_finite_input() {
    for bad in [f64::NAN, f64::INFINITY] {
        let mut w = DMatrix::identity(4, 4);
        w[(1, 2)] = bad;
        let res = inverse_cg(&w, 1.0, TIGHT, CAP, None);
        assert!(res.is_err(), "W with {bad}: got {res:?}");
        assert!(inverse_cholesky(&w, 1.0).is_err(), "Cholesky, W with {bad}");
        // A finite W with a NaN warm start (the P of a diverged step) fails as a CgError.
        let warm = DMatrix::from_element(4, 4, bad);
        let err = inverse_cg(&DMatrix::identity(4, 4), 1.0, TIGHT, CAP, Some(&warm));
        let err = err.expect_err("NaN warm start");
        assert!(tpri::error::cg_error(&err).is_some(), "{err}");
    }
    let w = DMatrix::<f64>::identity(3, 3);
    for reg in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(inverse_cg(&w, reg, TIGHT, CAP, None).is_err(), "r = {reg}");
    }
}

/// A warm start of the wrong shape is an error, not a panic.
#[test]
fn cg_rejects_a_misshapen_warm_start() {
    let w = DMatrix::<f64>::identity(3, 3);
    let warm = DMatrix::zeros(4, 4);
    assert!(inverse_cg(&w, 1.0, TIGHT, CAP, Some(&warm)).is_err());
}

/// A whole TP iteration gives the same targets and gradients with either solver, and
/// reports the CG solve only when there was one.
#[test]
fn tp_iteration_agrees_across_solvers() {
    let s = Shape::new(3, 5, 4, 7, 3);
    let (params, batch) = random_problem(
        &mut rng(13),
        CellKind::Tanh,
        s,
        Loss::CrossEntropy,
        Init::Gaussian { w_gain: 1.0 },
    );
    let mut hyper = Hyper {
        method: Method::Tp,
        ..Hyper::default()
    };
    let cg = iteration(&params, &batch, &hyper, None).unwrap();
    hyper.tp.solver = Solver::Cholesky;
    let chol = iteration(&params, &batch, &hyper, None).unwrap();
    assert!(cg.cg.is_some() && chol.cg.is_none());
    check(
        "P",
        cg.p_inv.as_ref().unwrap(),
        chol.p_inv.as_ref().unwrap(),
        1e-10,
    );
    for ((name, a), (_, b)) in cg.grads.tensors().into_iter().zip(chol.grads.tensors()) {
        check(name, a, b, 1e-9);
    }
}
