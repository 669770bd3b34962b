//! The whole iteration on the GPU backend against the f64 CPU reference, through the
//! `Backend` trait both implement: traces over sizes, target modes, gradient modes and
//! losses; one long sequence; and 50 training steps on each backend from the same start.

mod gpu_support;

use gpu_support::{check, check_all, ctx, inputs, params, random, rng, TOL};
use nalgebra::DMatrix;
use tpri::backend::Backend;
use tpri::config::{
    Hyper, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode, TpConfig, TpGrad,
};
use tpri::cpu::CpuBackend;
use tpri::gpu::GpuBackend;
use tpri::model::Dims;
use tpri::tasks::{build_task, Batch, Targets, TaskSpec};

/// A random batch: inputs in [−1, 1], labels or values in [0, 1).
fn batch(t: usize, b: usize, p: usize, q: usize, loss: Loss, seed: u64) -> Batch {
    let mut r = rng(seed);
    let x = inputs(t, b, p, &mut r);
    let y = match loss {
        Loss::CrossEntropy => {
            Targets::Labels((0..b).map(|s| (s * 5 + seed as usize) % q).collect())
        }
        Loss::Mse => Targets::Values(random(b, q, 0.5, &mut r).add_scalar(0.5)),
    };
    Batch { x, y }
}

fn hyper(method: Method, mode: TargetMode, grad: TpGrad, loss: Loss) -> Hyper {
    Hyper {
        method,
        loss,
        tp: TpConfig {
            lr_target: 0.5,
            reg: 1.0,
            target_mode: mode,
            tp_grad: grad,
            // P is compared, so the reference forms it too (auto may not at small T·B).
            solver: Solver::Cg,
            ..TpConfig::default()
        },
        ..Hyper::default()
    }
}

/// Compares every quantity of a GPU trace with the CPU trace; returns the worst error.
/// W is orthogonal·0.9 plus uniform noise of scale `w_noise`/√d: off orthogonality, CG has
/// real work to do, but too far off, targets grow geometrically backwards in time (a
/// property of TP, not of either backend) and every rounding error with them.
fn compare_traces(
    what: &str,
    dims: Dims,
    batch: &Batch,
    hyper: &Hyper,
    seed: u64,
    w_noise: f64,
) -> f64 {
    let mut p = params(dims, seed);
    let d = dims.hidden;
    p.w_hh = &p.w_hh * 0.9 + random(d, d, w_noise / (d as f64).sqrt(), &mut rng(seed));
    let want = CpuBackend::new().trace(&p, batch, hyper).unwrap();
    let got = GpuBackend::new(ctx()).trace(&p, batch, hyper).unwrap();
    let scalar = |v: f64| DMatrix::from_element(1, 1, v);
    let mut worst = check_all(&format!("h {what}"), &got.h, &want.h, TOL);
    worst = worst.max(check(
        &format!("loss {what}"),
        &scalar(got.loss),
        &scalar(want.loss),
        TOL,
    ));
    for ((name, g), (_, w)) in got.grads.tensors().into_iter().zip(want.grads.tensors()) {
        worst = worst.max(check(&format!("∇{name} {what}"), g, w, TOL));
    }
    let norms = |n: &[f64]| DMatrix::from_column_slice(n.len(), 1, n);
    let e_norms = check(
        &format!("‖e_t‖ {what}"),
        &norms(&got.error_norms),
        &norms(&want.error_norms),
        TOL,
    );
    worst = worst.max(e_norms);
    assert_eq!(got.v.is_some(), want.v.is_some(), "{what}: targets present");
    if let (Some(gv), Some(wv)) = (&got.v, &want.v) {
        worst = worst.max(check_all(&format!("v {what}"), gv, wv, TOL));
        let offsets = |v: &[DMatrix<f64>], h: &[DMatrix<f64>]| -> Vec<_> {
            v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect()
        };
        let off = check_all(
            &format!("v − h {what}"),
            &offsets(gv, &got.h),
            &offsets(wv, &want.h),
            TOL,
        );
        worst = worst.max(off);
        let p_err = check(
            &format!("P {what}"),
            got.p_inv.as_ref().unwrap(),
            want.p_inv.as_ref().unwrap(),
            TOL,
        );
        worst = worst.max(p_err);
        let cg = got.cg.unwrap();
        assert!(
            cg.residual <= tpri::gpu::GPU_CG_TOL && cg.iterations >= 1,
            "{what}: {cg:?}"
        );
    }
    eprintln!("{what}: worst relative error {worst:.2e}");
    worst
}

#[test]
fn traces_match_reference_across_sizes_and_modes() {
    use Loss::{CrossEntropy as Ce, Mse};
    use Method::{Bp, Tp};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    // (d, T, B, method, target mode, gradient mode, loss): every size of
    // d ∈ {1, 7, 100, 257}, T ∈ {1, 2, 33}, B ∈ {1, 3, 16}, every mode and loss, without
    // the full product (lavapipe is slow).
    let cases = [
        (1, 1, 1, Bp, Lin, Tt, Ce),
        (1, 2, 3, Tp, Lin, Tt, Mse),
        (7, 2, 3, Tp, Diff, Local, Ce),
        (7, 33, 1, Tp, Plain, Tt, Mse),
        (7, 33, 16, Tp, Lin, Local, Ce),
        (100, 33, 16, Tp, Lin, Tt, Ce),
        (100, 33, 3, Bp, Lin, Tt, Mse),
        (100, 2, 16, Tp, Diff, Tt, Mse),
        (100, 1, 3, Tp, Plain, Local, Ce),
        (257, 2, 3, Tp, Lin, Tt, Mse),
        (257, 33, 1, Bp, Lin, Tt, Ce),
    ];
    let mut worst: f64 = 0.0;
    for (i, &(d, t, b, method, mode, grad, loss)) in cases.iter().enumerate() {
        let dims = Dims {
            input: 3,
            hidden: d,
            output: 4,
        };
        let what = format!("(d={d}, T={t}, B={b}, {method:?}, {mode:?}, {grad:?}, {loss:?})");
        let batch = batch(t, b, 3, 4, loss, 10 + i as u64);
        let h = hyper(method, mode, grad, loss);
        worst = worst.max(compare_traces(&what, dims, &batch, &h, i as u64, 0.3));
    }
    eprintln!("worst over all traces: {worst:.2e}");
}

#[test]
fn long_sequence_trace_matches_reference() {
    let dims = Dims {
        input: 1,
        hidden: 8,
        output: 3,
    };
    let batch = batch(784, 2, 1, 3, Loss::CrossEntropy, 7);
    for method in [Method::Tp, Method::Bp] {
        let h = hyper(
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        compare_traces(
            &format!("(T=784, d=8, B=2, {method:?})"),
            dims,
            &batch,
            &h,
            3,
            0.0,
        );
    }
}

/// Loss curves of 50 training steps on each backend from the same parameters and batches.
///
/// Why 1e-3 relative: each GPU step computes its update with a relative error of about
/// 1e-6 (the kernel tests measure 1e-7–1e-6). Two runs of plain or momentum gradient descent
/// whose updates differ by ε drift apart by at most ε·Σ_k (1 + lr·L)^k for a loss whose
/// gradient is L-Lipschitz; with lr·L well below 0.1 for this small, smooth problem, 50
/// steps amplify ε by at most about (1.1)^50 ≈ 120 → ~1e-4, and 1e-3 leaves a margin of
/// ten without hiding a real discrepancy (one wrong step changes the loss by ~1e-2).
/// Adam is left out on purpose: it divides by √v, so on entries whose gradient is near
/// zero f32 noise alone changes the step by O(lr), a legitimate divergence.
#[test]
fn fifty_training_steps_agree_with_reference() {
    let dims = Dims {
        input: 2,
        hidden: 16,
        output: 1,
    };
    // The adding task (T = 10, same seed on both backends): p = 2, q = 1, squared error.
    let task = build_task(&TaskSpec::Adding { seq_len: 10 }, 7, 5).unwrap();
    let batches: Vec<_> = (0..50).map(|k| task.train_batch(k, 8)).collect();
    let eval_batch = task.eval_batches(5).remove(0);
    for (method, kind) in [
        (Method::Tp, OptimizerKind::Nesterov),
        (Method::Bp, OptimizerKind::Sgd),
    ] {
        let mut hyper = Hyper {
            opt: OptimizerConfig {
                kind,
                lr: 0.02,
                ..OptimizerConfig::default()
            },
            ..hyper(
                method,
                TargetMode::Linearized,
                TpGrad::ThroughTime,
                Loss::Mse,
            )
        };
        // The published adding-task target step.
        hyper.tp.lr_target = 0.1;
        let start = params(dims, 5);
        let mut cpu = CpuBackend::new();
        let mut gpu = GpuBackend::new(ctx());
        cpu.load(&start, None, &hyper).unwrap();
        gpu.load(&start, None, &hyper).unwrap();
        let mut worst: f64 = 0.0;
        for (k, b) in batches.iter().enumerate() {
            cpu.step(b).unwrap();
            gpu.step(b).unwrap();
            // Reading every few steps exercises both the lazy and the immediate path.
            if k % 5 == 4 {
                let (c, g) = (cpu.last_stats().unwrap(), gpu.last_stats().unwrap());
                let rel = (g.loss - c.loss).abs() / c.loss;
                assert!(
                    rel <= 1e-3,
                    "{method:?} step {k}: loss {} vs {} ({rel:.1e})",
                    g.loss,
                    c.loss
                );
                assert_eq!(g.cg.is_some(), method == Method::Tp);
                worst = worst.max(rel);
            }
        }
        let (ce, ge) = (
            cpu.evaluate(&eval_batch).unwrap(),
            gpu.evaluate(&eval_batch).unwrap(),
        );
        assert!(
            (ge.loss - ce.loss).abs() <= 1e-3 * ce.loss,
            "eval {ge:?} vs {ce:?}"
        );
        let ((cp, cs), (gp, gs)) = (cpu.state().unwrap(), gpu.state().unwrap());
        assert_eq!(cs.step, gs.step);
        for ((name, g), (_, c)) in gp.tensors().into_iter().zip(cp.tensors()) {
            check(&format!("{name} after 50 {method:?} steps"), g, c, 1e-3);
        }
        eprintln!("{method:?}/{kind:?}: worst relative loss gap over 50 steps {worst:.2e}");
    }
}

#[test]
fn cg_failure_surfaces_at_readback_as_cg_error() {
    let dims = Dims {
        input: 2,
        hidden: 12,
        output: 2,
    };
    let mut p = params(dims, 8);
    p.w_hh = random(12, 12, 0.8, &mut rng(8));
    let hyper = Hyper {
        tp: TpConfig {
            reg: 1e-3,
            cg_tol: Some(1e-7),
            cg_max_iter: 2,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let b = batch(3, 2, 2, 2, Loss::CrossEntropy, 8);
    let mut gpu = GpuBackend::new(ctx());
    gpu.load(&p, None, &hyper).unwrap();
    gpu.step(&b).unwrap();
    gpu.step(&b).unwrap();
    let err = gpu.last_stats().unwrap_err();
    let cg = err
        .downcast_ref::<tpri::cpu::inverse::CgError>()
        .unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
    assert_eq!(cg.report.iterations, 2);
    assert!(GpuBackend::new(ctx()).trace(&p, &b, &hyper).is_err());
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut gpu = GpuBackend::new(ctx());
    let b = batch(2, 2, 2, 2, Loss::CrossEntropy, 1);
    assert!(gpu.step(&b).is_err(), "step before load");
    let dims = Dims {
        input: 3,
        hidden: 4,
        output: 2,
    };
    gpu.load(&params(dims, 1), None, &Hyper::default()).unwrap();
    assert!(gpu.last_stats().is_err(), "stats before any step");
    let err = gpu.step(&b).unwrap_err().to_string();
    assert!(err.contains("expected"), "input size mismatch: {err}");
    let too_big = Dims {
        input: 1,
        hidden: tpri::gpu::MAX_HIDDEN + 1,
        output: 1,
    };
    let err = gpu.load(
        &tpri::model::Params::zeros(too_big),
        None,
        &Hyper::default(),
    );
    assert!(format!("{:#}", err.unwrap_err()).contains("hidden size"));
    let err = tpri::gpu::GpuContext::new(&"no-such-adapter-xyz".parse().unwrap());
    assert!(format!("{:#}", err.err().unwrap()).contains("no adapter named"));
    assert!(!tpri::gpu::list_adapters().is_empty());
}

/// One step from the same parameters on each backend: the per-step norms (TP: ‖v_t − h_t‖,
/// BP: ‖∂ℓ/∂h_t‖) and the gradient norm agree, and asking twice gives the same answer.
#[test]
fn diagnostics_match_reference() {
    let dims = Dims {
        input: 3,
        hidden: 33,
        output: 4,
    };
    let b = batch(20, 7, 3, 4, Loss::CrossEntropy, 77);
    for method in [Method::Tp, Method::Bp] {
        let hyper = hyper(
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        let start = params(dims, 8);
        let mut cpu = CpuBackend::new();
        let mut gpu = GpuBackend::new(ctx());
        cpu.load(&start, None, &hyper).unwrap();
        gpu.load(&start, None, &hyper).unwrap();
        assert!(gpu.last_diagnostics().is_err(), "no step yet");
        cpu.step(&b).unwrap();
        gpu.step(&b).unwrap();
        let want = cpu.last_diagnostics().unwrap().unwrap();
        let got = gpu.last_diagnostics().unwrap().unwrap();
        assert_eq!(got, gpu.last_diagnostics().unwrap().unwrap());
        let norms = |n: &[f64]| DMatrix::from_column_slice(n.len(), 1, n);
        assert_eq!(got.step_norms.len(), 20);
        check(
            &format!("{method:?} step norms"),
            &norms(&got.step_norms),
            &norms(&want.step_norms),
            TOL,
        );
        let scalar = |v: f64| DMatrix::from_element(1, 1, v);
        check(
            &format!("{method:?} gradient norm"),
            &scalar(got.grad_norm),
            &scalar(want.grad_norm),
            TOL,
        );
    }
}
