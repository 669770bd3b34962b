//! The whole iteration on the GPU backend against the f64 CPU reference, through the
//! `Backend` trait both implement, over the matrix cell (tanh RNN, GRU) × inversion
//! (analytic, tanh RNN only; jacobian) × method (TP, BP): traces over sizes, target modes,
//! gradient modes and losses, and 50 training steps on each backend from the same start.
//! Then the tanh RNN's own: per-step solves, one long sequence, diagnostics, CG failures,
//! the solve for P past llvmpipe's loop cap, and misuse. Segmented launches are
//! tests/gpu_segments.rs. f16 storage is tests/gpu_f16.rs.

mod gpu_support;
mod support;

use gpu_support::{
    analytic_tp, compare_traces, ctx, hyper, packing_options, start, train_side_by_side, TOL,
};
use support::{check, column, dims, random, random_batch, rng, scalar, seeded_params, Shape};
use tpri::backend::Backend;
use tpri::config::{
    Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode, TpConfig,
    TpGrad,
};
use tpri::cpu::CpuBackend;
use tpri::gpu::GpuBackend;
use tpri::model::CellKind;

/// Every trace of the matrix: (cell, inversion, d, T, B, method, target mode, gradient
/// mode, loss), with p = 3 and q = 4. Sizes off the workgroup grid, without the full
/// product (lavapipe is slow):
/// - tanh RNN, analytic inversion (P formed by CG): every size of d ∈ {1, 7, 100, 257},
///   T ∈ {1, 2, 33}, B ∈ {1, 3, 16}, both methods, every target mode, both gradient modes
///   and both losses;
/// - tanh RNN, jacobian inversion (TP only: BP inverts nothing): d ∈ {1, 7, 33, 100},
///   T ∈ {2, 7, 33}, B ∈ {1, 3, 16}, both gradient modes and both losses;
/// - GRU (the jacobian inversion, its only one): d ∈ {1, 7, 33, 100}, T ∈ {1, 2, 7, 33},
///   B ∈ {1, 3, 16}, both methods, both gradient modes and both losses.
#[test]
fn traces_match_reference_for_every_cell_inversion_and_method() {
    use CellKind::{Gru, Tanh};
    use Inversion::{Analytic as An, Jacobian as Jac};
    use Loss::{CrossEntropy as Ce, Mse};
    use Method::{Bp, Tp};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    let cases = [
        (Tanh, An, 1, 1, 1, Bp, Lin, Tt, Ce),
        (Tanh, An, 1, 2, 3, Tp, Lin, Tt, Mse),
        (Tanh, An, 7, 2, 3, Tp, Diff, Local, Ce),
        (Tanh, An, 7, 33, 1, Tp, Plain, Tt, Mse),
        (Tanh, An, 7, 33, 16, Tp, Lin, Local, Ce),
        (Tanh, An, 100, 33, 16, Tp, Lin, Tt, Ce),
        (Tanh, An, 100, 33, 3, Bp, Lin, Tt, Mse),
        (Tanh, An, 100, 2, 16, Tp, Diff, Tt, Mse),
        (Tanh, An, 100, 1, 3, Tp, Plain, Local, Ce),
        (Tanh, An, 257, 2, 3, Tp, Lin, Tt, Mse),
        (Tanh, An, 257, 33, 1, Bp, Lin, Tt, Ce),
        (Tanh, Jac, 1, 2, 1, Tp, Lin, Tt, Mse),
        (Tanh, Jac, 7, 33, 3, Tp, Lin, Local, Ce),
        (Tanh, Jac, 33, 7, 16, Tp, Lin, Tt, Ce),
        (Tanh, Jac, 100, 33, 16, Tp, Lin, Tt, Mse),
        (Tanh, Jac, 100, 2, 3, Tp, Lin, Local, Mse),
        (Gru, Jac, 1, 1, 1, Bp, Lin, Tt, Ce),
        (Gru, Jac, 1, 2, 3, Tp, Lin, Tt, Mse),
        (Gru, Jac, 7, 2, 3, Tp, Lin, Local, Ce),
        (Gru, Jac, 7, 33, 1, Tp, Lin, Tt, Mse),
        (Gru, Jac, 33, 7, 16, Bp, Lin, Tt, Mse),
        (Gru, Jac, 33, 33, 3, Tp, Lin, Local, Ce),
        (Gru, Jac, 100, 33, 16, Tp, Lin, Tt, Ce),
        (Gru, Jac, 100, 7, 3, Bp, Lin, Tt, Ce),
        (Gru, Jac, 100, 2, 16, Tp, Lin, Local, Mse),
    ];
    let mut worst: f64 = 0.0;
    for (i, &(cell, inversion, d, t, b, method, mode, grad, loss)) in cases.iter().enumerate() {
        let what = format!(
            "({cell:?}, {inversion:?}, d={d}, T={t}, B={b}, {method:?}, {mode:?}, {grad:?}, {loss:?})"
        );
        let shape = Shape::new(b, t, 3, d, 4);
        // Noise off orthogonality gives the solve for P work; the jacobian inversion's
        // per-step solves have D_t's for that.
        let w_noise = if (cell, inversion) == (Tanh, An) {
            0.3
        } else {
            0.0
        };
        let p = start(cell, shape.dims(), i as u64, w_noise);
        let batch = random_batch(&mut rng(10 + i as u64), shape, loss);
        let h = hyper(inversion, method, mode, grad, loss);
        worst = worst.max(compare_traces(&what, &p, &batch, &h));
    }
    eprintln!("worst over all traces: {worst:.2e}");
}

/// TP-RI's backward pass in one loop (sweep_bptt.wgsl) against the two loops it fuses
/// (target_sweep.wgsl, then bptt.wgsl): the same trace bit for bit (states, targets, P,
/// every gradient, the per-step error norms), and within `TOL` of the reference, over
/// sizes off the workgroup grid, both offset modes, lanes per unit, several sequences per
/// workgroup and launches of a few steps (segments that hand dv and δ on). Each case first
/// checks that the fused loop runs there, and the plain mode, the local gradient and d ·
/// lanes past a workgroup that it does not (f16 storage: gpu_f16.rs).
#[test]
fn fused_backward_equals_the_two_loops_bit_for_bit() {
    use tpri::gpu::{one_shot, Backward, GpuOptions, Storage};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    // (d, T, B, mode, lanes, sequences per workgroup, steps per launch)
    let cases = [
        (1, 9, 1, Lin, 1, 1, None),
        (7, 33, 7, Diff, 2, 4, Some(5)),
        (33, 20, 7, Lin, 1, 2, Some(3)),
        (100, 17, 7, Lin, 4, 2, Some(4)),
        (100, 33, 1, Diff, 1, 1, None),
        (200, 7, 3, Lin, 1, 1, Some(2)),
    ];
    let mut worst: f64 = 0.0;
    for (i, &(d, t, b, mode, lanes, seqs, k)) in cases.iter().enumerate() {
        let what = format!("fused backward d={d} T={t} B={b} {mode:?} L={lanes} S={seqs} K={k:?}");
        let shape = Shape::new(b, t, 3, d, 4);
        let p = start(CellKind::Tanh, shape.dims(), 40 + i as u64, 0.3);
        let batch = random_batch(&mut rng(60 + i as u64), shape, Loss::CrossEntropy);
        let h = analytic_tp(mode);
        let fused = packing_options(Storage::F32, (lanes, seqs), k, Backward::Fused);
        worst = worst.max(gpu_support::fused_equals_separate(
            &what, &p, &batch, &h, fused,
        ));
    }
    eprintln!("fused backward, worst against the reference: {worst:.2e}");
    // Where it does not apply, both options run the two loops.
    let shape = Shape::new(3, 5, 3, 7, 4);
    let p = start(CellKind::Tanh, shape.dims(), 90, 0.3);
    let batch = random_batch(&mut rng(91), shape, Loss::CrossEntropy);
    let plain = analytic_tp(Plain);
    let local = hyper(
        Inversion::Analytic,
        Method::Tp,
        Lin,
        TpGrad::Local,
        Loss::CrossEntropy,
    );
    let lin = analytic_tp(Lin);
    for (h, o, what) in [
        (&plain, GpuOptions::default(), "plain targets"),
        (
            &local,
            GpuOptions::default(),
            "the surrogate differentiated locally",
        ),
    ] {
        assert!(
            !one_shot::fused_backward(&ctx(), &p, &batch, h, o).unwrap(),
            "{what}"
        );
    }
    let wide = Shape::new(2, 3, 3, 257, 4);
    let p = start(CellKind::Tanh, wide.dims(), 92, 0.3);
    let batch = random_batch(&mut rng(93), wide, Loss::CrossEntropy);
    assert!(
        !one_shot::fused_backward(&ctx(), &p, &batch, &lin, GpuOptions::default()).unwrap(),
        "d = 257"
    );
}

/// Loss curves of 50 training steps on each backend from the same parameters and batches,
/// over the matrix: both methods for the tanh RNN's analytic inversion and the GRU, TP for
/// the tanh RNN's jacobian inversion (BP with a momentum-free optimizer, TP with Nesterov).
///
/// Why 1e-3 relative: each GPU step computes its update with a relative error of about
/// 1e-6 (the kernel tests measure 1e-7–1e-6). Two runs of plain or momentum gradient descent
/// whose updates differ by ε drift apart by at most ε·Σ_k (1 + lr·L)^k for a loss whose
/// gradient is L-Lipschitz; with lr·L well below 0.1 for this small, smooth problem, 50
/// steps amplify ε by at most about (1.1)^50 ≈ 120 → ~1e-4, and 1e-3 leaves a margin of
/// ten without hiding a real discrepancy (one wrong step changes the loss by ~1e-2).
/// The jacobian inversion adds one source to ε: the per-step CG solves, here stopped at a
/// relative residual of 1e-6 on both backends (so ε stays at the f32 level of about 1e-6:
/// the default 1e-5 of the f32 solve would by itself make ε ≈ 1e-5 and the bound 1.2e-3).
/// Adam is left out on purpose: it divides by √v, so on entries whose gradient is near
/// zero f32 noise alone changes the step by O(lr), a legitimate divergence.
#[test]
fn fifty_training_steps_agree_with_reference() {
    use CellKind::{Gru, Tanh};
    use Inversion::{Analytic as An, Jacobian as Jac};
    use OptimizerKind::{Nesterov, Sgd};
    // Two runs with a gradient-norm limit (`--clip-norm`) below their gradients' norms, so
    // that every step is scaled, after the whole gradient is summed.
    let runs = [
        (Tanh, An, Method::Tp, Nesterov, None),
        (Tanh, An, Method::Bp, Sgd, Some(0.01)),
        (Tanh, Jac, Method::Tp, Nesterov, None),
        (Gru, Jac, Method::Tp, Nesterov, Some(0.01)),
        (Gru, Jac, Method::Bp, Sgd, None),
    ];
    for (cell, inversion, method, kind, clip_norm) in runs {
        let mut hyper = Hyper {
            opt: OptimizerConfig {
                kind,
                lr: 0.02,
                clip_norm,
                ..OptimizerConfig::default()
            },
            ..hyper(
                inversion,
                method,
                TargetMode::Linearized,
                TpGrad::ThroughTime,
                Loss::Mse,
            )
        };
        // The published adding-task target step.
        hyper.tp.lr_target = 0.1;
        if inversion == Jac {
            // A tolerance both backends reach.
            hyper.tp.cg_tol = Some(1e-6);
            hyper.tp.cg_max_iter = 100;
        }
        let what = format!("{cell:?} {inversion:?} {method:?}/{kind:?}, clip {clip_norm:?}");
        let run = train_side_by_side(&start(cell, dims(2, 16, 1), 5, 0.0), &hyper, &what);
        eprintln!(
            "{what}: worst relative loss gap over 50 steps {:.2e}, CG ≤ {} iterations per step",
            run.worst, run.cg_most
        );
    }
}

/// `--solver per-step` (docs/ALGORITHM.md §4's alternative to forming P): the GPU's per-step CG inside
/// the fused sweep against the reference's per-step solves, in both gradient modes and at
/// sizes off the workgroup grid; no P is formed on either side.
#[test]
fn per_step_solves_match_reference() {
    for (i, (d, t, b, grad, loss)) in [
        (7, 33, 4, TpGrad::ThroughTime, Loss::CrossEntropy),
        (100, 33, 16, TpGrad::Local, Loss::Mse),
        (1, 2, 1, TpGrad::ThroughTime, Loss::Mse),
        (257, 7, 3, TpGrad::ThroughTime, Loss::CrossEntropy),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = Shape::new(b, t, 3, d, 4);
        let mut h = hyper(
            Inversion::Analytic,
            Method::Tp,
            TargetMode::Linearized,
            grad,
            loss,
        );
        h.tp.solver = Solver::PerStep;
        h.tp.lr_target = 0.1;
        // About six suffice at r = 1.
        h.tp.cg_max_iter = 16;
        let seed = 70 + i as u64;
        let batch = random_batch(&mut rng(seed), shape, loss);
        let what = format!("per-step d={d} T={t} B={b} {grad:?} {loss:?}");
        compare_traces(
            &what,
            &start(CellKind::Tanh, shape.dims(), seed, 0.3),
            &batch,
            &h,
        );
    }
    // What the GPU's per-step sweep does not do is an error that says so.
    let shape = Shape::new(2, 3, 3, 5, 4);
    let mut h = hyper(
        Inversion::Analytic,
        Method::Tp,
        TargetMode::Difference,
        TpGrad::ThroughTime,
        Loss::Mse,
    );
    h.tp.solver = Solver::PerStep;
    let p = seeded_params(CellKind::Tanh, shape.dims(), 1, 1.0);
    let err = GpuBackend::new(ctx())
        .trace(&p, &random_batch(&mut rng(1), shape, Loss::Mse), &h)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("linearized targets only"),
        "{err:#}"
    );
}

#[test]
fn long_sequence_trace_matches_reference() {
    let shape = Shape::new(2, 784, 1, 8, 3);
    let batch = random_batch(&mut rng(7), shape, Loss::CrossEntropy);
    for method in [Method::Tp, Method::Bp] {
        let h = hyper(
            Inversion::Analytic,
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        compare_traces(
            &format!("(T=784, d=8, B=2, {method:?})"),
            &start(CellKind::Tanh, shape.dims(), 3, 0.0),
            &batch,
            &h,
        );
    }
}

#[test]
fn cg_failure_surfaces_at_readback_as_cg_error() {
    let shape = Shape::new(2, 3, 2, 12, 2);
    let mut p = seeded_params(CellKind::Tanh, shape.dims(), 8, 1.0);
    p.w_hh = random(&mut rng(8), 12, 12, 0.8);
    let hyper = Hyper {
        tp: TpConfig {
            reg: 1e-3,
            cg_tol: Some(1e-7),
            cg_max_iter: 2,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let b = random_batch(&mut rng(8), shape, Loss::CrossEntropy);
    let mut gpu = GpuBackend::new(ctx());
    gpu.load(&p, None, &hyper).unwrap();
    gpu.step(&b).unwrap();
    gpu.step(&b).unwrap();
    let err = gpu.last_stats().unwrap_err();
    let cg =
        tpri::error::cg_error(&err).unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
    assert_eq!(cg.report.iterations, 2);
    assert!(GpuBackend::new(ctx()).trace(&p, &b, &hyper).is_err());
}

/// The solve for P at d = 300 (two units per invocation) with cg_max_iter = 1000: in the
/// worst case each column's CG passes llvmpipe's loop cap in one invocation, which the
/// backend refused there before segments; in launches of a bounded number of iterations it
/// runs and agrees with the reference on every adapter.
#[test]
fn solve_for_p_past_the_loop_cap_matches_reference() {
    let shape = Shape::new(1, 2, 1, 300, 2);
    let mut hyper = hyper(
        Inversion::Analytic,
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    hyper.tp.cg_max_iter = 1000;
    let b = random_batch(&mut rng(7), shape, Loss::CrossEntropy);
    let p = start(CellKind::Tanh, shape.dims(), 7, 0.3);
    compare_traces("(d = 300, cg_max_iter = 1000)", &p, &b, &hyper);
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let mut gpu = GpuBackend::new(ctx());
    let b = random_batch(&mut rng(1), Shape::new(2, 2, 2, 4, 2), Loss::CrossEntropy);
    assert!(gpu.step(&b).is_err(), "step before load");
    let p = seeded_params(CellKind::Tanh, dims(3, 4, 2), 1, 1.0);
    gpu.load(&p, None, &Hyper::default()).unwrap();
    assert!(gpu.last_stats().is_err(), "stats before any step");
    let err = gpu.step(&b).unwrap_err().to_string();
    assert!(err.contains("expected"), "input size mismatch: {err}");
    let too_big = tpri::model::Dims {
        input: 1,
        hidden: tpri::gpu::MAX_HIDDEN + 1,
        output: 1,
    };
    let err = gpu.load(
        &tpri::model::Params::zeros(too_big).unwrap(),
        None,
        &Hyper::default(),
    );
    assert!(format!("{:#}", err.unwrap_err()).contains("hidden size"));
    let err = tpri::gpu::GpuContext::new(&"no-such-adapter-xyz".parse().unwrap());
    assert!(format!("{:#}", err.err().unwrap()).contains("no adapter named"));
    let adapters = tpri::gpu::list_adapters();
    assert!(!adapters.is_empty());
    for a in &adapters {
        // Subgroup sizes are powers of two, the least no more than the most.
        if let Some((least, most)) = a.subgroups {
            assert!(
                least.is_power_of_two() && most.is_power_of_two() && least <= most,
                "{a}"
            );
        }
        assert!(a.to_string().contains("subgroups: "), "{a}");
    }
}

/// One step from the same parameters on each backend: the per-step norms (TP: ‖v_t − h_t‖,
/// BP: ‖∂ℓ/∂h_t‖) and the gradient norm agree, and asking twice gives the same answer.
#[test]
fn diagnostics_match_reference() {
    let shape = Shape::new(7, 20, 3, 33, 4);
    let b = random_batch(&mut rng(77), shape, Loss::CrossEntropy);
    for method in [Method::Tp, Method::Bp] {
        let hyper = hyper(
            Inversion::Analytic,
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        let start = seeded_params(CellKind::Tanh, shape.dims(), 8, 1.0);
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
        assert_eq!(got.step_norms.len(), 20);
        check(
            &format!("{method:?} step norms"),
            &column(&got.step_norms),
            &column(&want.step_norms),
            TOL,
        );
        check(
            &format!("{method:?} gradient norm"),
            &scalar(got.grad_norm),
            &scalar(want.grad_norm),
            TOL,
        );
    }
}
