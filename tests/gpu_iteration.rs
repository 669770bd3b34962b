//! The whole iteration on the GPU backend against the f64 CPU reference, through the
//! `Backend` trait both implement: traces over sizes, target modes, gradient modes and
//! losses; one long sequence; and 50 training steps on each backend from the same start.

mod gpu_support;

use gpu_support::{
    batch, check, check_all, ctx, integer_f16_ctx, params, random, rel_err, rng,
    train_side_by_side, TOL,
};
use nalgebra::DMatrix;
use tpri::backend::Backend;
use tpri::config::{
    Hyper, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode, TpConfig, TpGrad,
};
use tpri::cpu::CpuBackend;
use tpri::gpu::GpuBackend;
use tpri::model::Dims;
use tpri::tasks::Batch;

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
        assert_eq!(
            got.p_inv.is_some(),
            want.p_inv.is_some(),
            "{what}: P formed"
        );
        if let (Some(gp), Some(wp)) = (&got.p_inv, &want.p_inv) {
            worst = worst.max(check(&format!("P {what}"), gp, wp, TOL));
        }
        let cg = got.cg.unwrap();
        assert!(
            cg.residual <= tpri::gpu::GPU_CG_TOL && cg.iterations >= 1,
            "{what}: {cg:?}"
        );
    }
    eprintln!("{what}: worst relative error {worst:.2e}");
    worst
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
        let dims = Dims {
            input: 3,
            hidden: d,
            output: 4,
        };
        let mut h = hyper(Method::Tp, TargetMode::Linearized, grad, loss);
        h.tp.solver = Solver::PerStep;
        h.tp.lr_target = 0.1;
        // llvmpipe's loop limit counts every capped iteration; about six suffice at r = 1.
        h.tp.cg_max_iter = 16;
        let batch = batch(t, b, 3, 4, loss, 70 + i as u64);
        let what = format!("per-step d={d} T={t} B={b} {grad:?} {loss:?}");
        compare_traces(&what, dims, &batch, &h, 70 + i as u64, 0.3);
    }
    // What the GPU's per-step sweep does not do is an error that says so.
    let dims = Dims {
        input: 3,
        hidden: 5,
        output: 4,
    };
    let mut h = hyper(
        Method::Tp,
        TargetMode::Difference,
        TpGrad::ThroughTime,
        Loss::Mse,
    );
    h.tp.solver = Solver::PerStep;
    let err = GpuBackend::new(ctx())
        .trace(&params(dims, 1), &batch(3, 2, 3, 4, Loss::Mse, 1), &h)
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("linearized targets only"),
        "{err:#}"
    );
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
        let what = format!("{method:?}/{kind:?}");
        let (worst, _) = train_side_by_side(&params(dims, 5), &hyper, &what);
        eprintln!("{what}: worst relative loss gap over 50 steps {worst:.2e}");
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
        .downcast_ref::<tpri::cg::CgError>()
        .unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
    assert_eq!(cg.report.iterations, 2);
    assert!(GpuBackend::new(ctx()).trace(&p, &b, &hyper).is_err());
}

/// The solve for P runs each column's whole CG in one invocation: at d = 1024 its
/// cg_max_iter = 100 iterations pass llvmpipe's loop cap, and the backend must say so
/// instead of returning a truncated P. Elsewhere the shape must simply work.
#[test]
fn loop_cap_guard_names_the_solve_for_p_on_llvmpipe() {
    let dims = Dims {
        input: 1,
        hidden: 1024,
        output: 2,
    };
    let hyper = hyper(
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    let b = batch(2, 1, 1, 2, Loss::CrossEntropy, 7);
    if ctx().info.name.contains("llvmpipe") {
        let err = GpuBackend::new(ctx())
            .trace(&params(dims, 7), &b, &hyper)
            .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("solve for P") && err.contains("--cg-max-iter"),
            "{err}"
        );
    } else {
        compare_traces("(d = 1024)", dims, &b, &hyper, 7, 0.3);
    }
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

// ---------------------------------------------------------------------------------------
// f16 storage of the histories h and v − h (`gpu::Storage::F16`).
//
// What F16 changes: every value of h and of v − h is rounded to f16 where a kernel stores
// it (round to nearest even with the integer code of shaders/include/f16_bits.wgsl; with
// WGSL's `f16` where the adapter has SHADER_F16, which may round either way) and read
// back exactly; arithmetic stays f32, and the two recursions that write the histories
// (forward pass, target sweep) run on their f32 values, never on what they stored. So:
//
// - `f16_storage_rounds_each_stored_value_once` checks that exactly (integer conversions,
//   whose rounding is known): h is the f32 path's h rounded to nearest, and every kernel, run in f64 on the very values the f16 path
//   stored, gives what the f16 path gave to the f32 tolerance TOL — the sweep's v − h up
//   to its own rounding (one more u).
// - `f16_storage_traces_match_reference_within_unit_roundoff_bounds` bounds the error
//   against the f64 reference a priori, from f16's unit roundoff u = 2⁻¹¹ (see
//   `f16_bound`), and checks the f16 path is the one taken (its error on h exceeds f32's).
// - `native_f16_conversions_store_what_the_integer_code_stores` ties the native path to
//   the integer one, value by value.

use tpri::check::amplification;

use tpri::backend::Trace;
use tpri::gpu::Storage;
use tpri::kernel_io::Injection;

/// f16's unit roundoff 2⁻¹¹: round to nearest stores x as x(1 + ε), |ε| ≤ u.
const U16: f64 = 1.0 / 2048.0;

/// The a-priori bound on ‖f16 − ref‖/‖ref‖ of `quantity`, from u and the amplification
/// `amp` of the reference's h: u + TOL for h (one rounding of an f32 value), and
/// u·(4 + 2A) + TOL for everything else (first order; the argument is at
/// `tpri::check::storage_bound`).
fn f16_bound(quantity: &str, amp: f64) -> f64 {
    assert_eq!(tpri::check::CHECK_TOL, TOL);
    tpri::check::storage_bound(Storage::F16, quantity, amp)
}

/// Each compared quantity of a trace, as one stacked column, by name.
fn quantities(t: &Trace) -> Vec<(&'static str, DMatrix<f64>)> {
    let column = |ms: &[DMatrix<f64>]| {
        let all: Vec<_> = ms.iter().flat_map(|m| m.iter().copied()).collect();
        DMatrix::from_vec(all.len(), 1, all)
    };
    let mut out = vec![
        ("h", column(&t.h)),
        ("loss", DMatrix::from_element(1, 1, t.loss)),
        (
            "‖e_t‖",
            DMatrix::from_column_slice(t.error_norms.len(), 1, &t.error_norms),
        ),
    ];
    out.extend(
        t.grads
            .tensors()
            .into_iter()
            .map(|(name, g)| (name, g.clone())),
    );
    if let Some(v) = &t.v {
        let dv: Vec<_> = v.iter().zip(&t.h).map(|(v_t, h_t)| v_t - h_t).collect();
        out.push(("v − h", column(&dv)));
    }
    out
}

/// A TP or BP case of the f16 tests: (d, T, B, method, target mode, gradient mode, loss,
/// target step γ_h).
type F16Case = (usize, usize, usize, Method, TargetMode, TpGrad, Loss, f64);

/// Odd sizes d ∈ {1, 7, 33}, B ∈ {1, 3}, T ∈ {1, 2, 17}, every mode, both losses, and the
/// published pixel-MNIST target step γ_h = 1e-4 (its offsets v − h ≈ 1e-6 would be f16
/// subnormals without the storage's power-of-two scale).
fn f16_cases() -> Vec<F16Case> {
    use Loss::{CrossEntropy as Ce, Mse};
    use Method::{Bp, Tp};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    vec![
        (1, 1, 1, Tp, Lin, Tt, Ce, 0.5),
        (1, 17, 3, Bp, Lin, Tt, Mse, 0.5),
        (1, 17, 3, Tp, Diff, Tt, Ce, 0.5),
        (7, 2, 3, Tp, Diff, Tt, Mse, 0.5),
        (7, 17, 1, Tp, Plain, Tt, Ce, 0.5),
        (7, 17, 3, Tp, Lin, Local, Mse, 0.5),
        (33, 17, 3, Tp, Lin, Tt, Ce, 0.5),
        (33, 17, 1, Bp, Lin, Tt, Ce, 0.5),
        (33, 2, 3, Tp, Diff, Local, Ce, 0.5),
        (33, 17, 3, Tp, Lin, Tt, Ce, 1e-4),
    ]
}

/// Parameters, batch and settings of case `i`.
fn f16_problem(i: usize, case: &F16Case) -> (tpri::model::Params, Batch, Hyper) {
    let &(d, t, b, method, mode, grad, loss, lr_target) = case;
    let dims = Dims {
        input: 3,
        hidden: d,
        output: 4,
    };
    let mut p = params(dims, 60 + i as u64);
    p.w_hh = &p.w_hh * 0.9 + random(d, d, 0.3 / (d as f64).sqrt(), &mut rng(i as u64));
    let mut h = hyper(method, mode, grad, loss);
    h.tp.lr_target = lr_target;
    (p, batch(t, b, 3, 4, loss, 50 + i as u64), h)
}

fn describe(case: &F16Case) -> String {
    let (d, t, b, method, mode, grad, loss, lr_target) = case;
    format!("(d={d}, T={t}, B={b}, {method:?}, {mode:?}, {grad:?}, {loss:?}, γ_h={lr_target})")
}

#[test]
fn f16_storage_traces_match_reference_within_unit_roundoff_bounds() {
    // The largest share of its bound an f16 error used: on h, on the rest.
    let mut worst_share = [0.0f64; 2];
    for (i, case) in f16_cases().iter().enumerate() {
        let (p, batch, hyper) = f16_problem(i, case);
        let what = describe(case);
        let want = CpuBackend::new().trace(&p, &batch, &hyper).unwrap();
        // Both GPU traces start from poisoned outputs (NaN, in f16 too): `rel_err` fails on
        // any element a kernel left unwritten.
        let f32_trace = GpuBackend::new(ctx()).trace(&p, &batch, &hyper).unwrap();
        let f16_trace = GpuBackend::with_storage(ctx(), Storage::F16)
            .trace(&p, &batch, &hyper)
            .unwrap();
        let amp = amplification(&want.h);
        let mut line = format!("{what} A={amp:.0}:");
        let (w, a, c) = (
            quantities(&want),
            quantities(&f32_trace),
            quantities(&f16_trace),
        );
        assert_eq!((w.len(), a.len()), (c.len(), c.len()), "{what}: quantities");
        for (((name, want), (_, got32)), (_, got16)) in w.iter().zip(&a).zip(&c) {
            let e32 = rel_err(&format!("{name} f32 {what}"), got32, want);
            let e16 = rel_err(&format!("{name} f16 {what}"), got16, want);
            let bound = f16_bound(name, amp);
            assert!(
                e16 <= bound,
                "{name} {what}: f16 relative error {e16:.3e} > bound {bound:.3e}"
            );
            if *name == "h" {
                // The f16 path is the one taken: rounding h to f16 costs ~u/2, the f32
                // path's own error is ~1e-7.
                assert!(
                    e16 > e32,
                    "{what}: f16 error {e16:.2e} ≤ f32 error {e32:.2e} on h"
                );
            }
            let share = &mut worst_share[usize::from(*name != "h")];
            *share = share.max(e16 / bound);
            line += &format!(" {name} {:.2}u", e16 / U16);
        }
        eprintln!("{line}");
    }
    eprintln!(
        "largest share of its bound an f16 error used: {:.2} on h, {:.2} on the rest",
        worst_share[0], worst_share[1]
    );
}

/// The f16 result of every kernel is its f64 twin's on the values the f16 path stored.
#[test]
fn f16_storage_rounds_each_stored_value_once() {
    for (i, case) in f16_cases().iter().enumerate() {
        let (p, batch, hyper) = f16_problem(i, case);
        let what = describe(case);
        let got = GpuBackend::with_storage(integer_f16_ctx(), Storage::F16)
            .trace(&p, &batch, &hyper)
            .unwrap();
        let f32_h = GpuBackend::new(ctx()).trace(&p, &batch, &hyper).unwrap().h;
        // h: the f32 path's h (the same f32 recursion) rounded to nearest, each value within
        // half an f16 spacing of it (2⁻²⁵ among subnormals), plus a few f32 ulps of slack
        // in case a compiler schedules the two variants' identical arithmetic differently.
        for (t, (h16, h32)) in got.h.iter().zip(&f32_h).enumerate() {
            for (&a, &b) in h16.iter().zip(h32.iter()) {
                let spacing = f64::max(b.abs(), 2f64.powi(-14)) * 2f64.powi(-10);
                let slack = b.abs() * 2f64.powi(-22);
                assert!(
                    (a - b).abs() <= 0.5 * spacing + slack && half::f16::from_f64(a).to_f64() == a,
                    "{what}: h_{t} stored as {a:e}, not {b:e} rounded to nearest f16"
                );
            }
        }
        // The head, the sweep and BPTT in f64 on the stored h (and, for BPTT, the stored
        // targets v = h + (v − h)).
        let h = &got.h;
        let t_len = batch.x.len();
        let head = tpri::cpu::head::head(&p, &h[t_len], &batch.y, hyper.loss).unwrap();
        let scalar = |v: f64| DMatrix::from_element(1, 1, v);
        check(
            &format!("loss {what}"),
            &scalar(got.loss),
            &scalar(head.loss),
            TOL,
        );
        check(&format!("∇V {what}"), &got.grads.head_w, &head.grad_w, TOL);
        check(&format!("∇c {what}"), &got.grads.head_b, &head.grad_b, TOL);
        let through_time = hyper.method == Method::Bp || hyper.tp.tp_grad == TpGrad::ThroughTime;
        let rnn = match &got.v {
            None => tpri::cpu::bptt::bptt(&p, &batch.x, h, Injection::Top(&head.grad_h), true),
            Some(v) => {
                let p_inv = CpuBackend::new()
                    .trace(&p, &batch, &hyper)
                    .unwrap()
                    .p_inv
                    .unwrap();
                let want_v = tpri::cpu::target_sweep::target_sweep(
                    &p,
                    &p_inv,
                    &batch.x,
                    h,
                    &head.grad_h,
                    hyper.tp.lr_target,
                    hyper.tp.target_mode,
                );
                let offsets = |v: &[DMatrix<f64>]| -> Vec<_> {
                    v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect()
                };
                // One rounding of each stored offset (≤ u), on top of f32 arithmetic.
                check_all(
                    &format!("v − h {what}"),
                    &offsets(v),
                    &offsets(&want_v),
                    U16 + TOL,
                );
                tpri::cpu::bptt::bptt(&p, &batch.x, h, Injection::Targets(v), through_time)
            }
        };
        check(&format!("∇W {what}"), &got.grads.w_hh, &rnn.w_hh, TOL);
        check(&format!("∇U {what}"), &got.grads.w_ih, &rnn.w_ih, TOL);
        check(&format!("∇b {what}"), &got.grads.b, &rnn.b, TOL);
        let norms = |n: &[f64]| DMatrix::from_column_slice(n.len(), 1, n);
        check(
            &format!("‖e_t‖ {what}"),
            &norms(&got.error_norms),
            &norms(&rnn.error_norms),
            TOL,
        );
    }
}

/// Native f16 conversions (WGSL's `f16`, on adapters with SHADER_F16) store what the
/// integer code stores, up to the rounding direction WGSL leaves open: every stored value
/// of h and v − h is the integer path's or its f16 neighbour, and everything computed from
/// them agrees within a few u.
#[test]
fn native_f16_conversions_store_what_the_integer_code_stores() {
    use tpri::gpu::F16Conversions;
    let native = ctx();
    let offered = tpri::gpu::list_adapters()
        .iter()
        .any(|a| a.name == native.info.name && a.shader_f16);
    assert_eq!(
        native.f16_conversions() == F16Conversions::Native,
        offered,
        "native f16 conversions are used exactly where the adapter offers SHADER_F16"
    );
    if !offered {
        eprintln!(
            "{}: no SHADER_F16, both paths are the integer code",
            native.describe()
        );
    }
    let (mut same, mut total) = (0usize, 0usize);
    for (i, case) in f16_cases().iter().enumerate() {
        let (p, batch, hyper) = f16_problem(i, case);
        let what = describe(case);
        let trace = |ctx| {
            GpuBackend::with_storage(ctx, Storage::F16)
                .trace(&p, &batch, &hyper)
                .unwrap()
        };
        let (a, b) = (trace(native.clone()), trace(integer_f16_ctx()));
        // One f16 spacing at |y|, in the units of the stored value (dv is stored times
        // `scale`, a power of two); a little slack for v − h re-formed in f64.
        let mut within_a_spacing =
            |name: &str, x: &[DMatrix<f64>], y: &[DMatrix<f64>], scale: f64| {
                for (t, (xt, yt)) in x.iter().zip(y).enumerate() {
                    for (&u, &v) in xt.iter().zip(yt.iter()) {
                        let spacing =
                            f64::max(v.abs() * scale, 2f64.powi(-14)) * 2f64.powi(-10) / scale;
                        assert!(
                        u.is_finite() && (u - v).abs() <= spacing * (1.0 + 1e-9) + 1e-15,
                        "{what}: {name}_{t} native {u:e}, integer {v:e}: more than one f16 apart"
                    );
                        same += usize::from(u == v);
                        total += 1;
                    }
                }
            };
        within_a_spacing("h", &a.h, &b.h, 1.0);
        if let (Some(va), Some(vb)) = (&a.v, &b.v) {
            let offsets = |v: &[DMatrix<f64>], h: &[DMatrix<f64>]| -> Vec<DMatrix<f64>> {
                v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect()
            };
            let scale = f64::from(Storage::F16.dv_scale(&hyper.tp));
            within_a_spacing("v − h", &offsets(va, &a.h), &offsets(vb, &b.h), scale);
        }
        for ((name, x), (_, y)) in quantities(&a).iter().zip(quantities(&b)) {
            check(
                &format!("{name} native vs integer {what}"),
                x,
                &y,
                4.0 * U16,
            );
        }
    }
    eprintln!("native vs integer f16 conversions: {same} of {total} stored values identical");
}

/// Training steps with f16 storage: the per-step target norms (read through the scaled f16
/// history) and the evaluation agree with the reference within the f16 bound.
#[test]
fn f16_storage_steps_and_diagnostics_match_reference() {
    let dims = Dims {
        input: 3,
        hidden: 33,
        output: 4,
    };
    let b = batch(20, 7, 3, 4, Loss::CrossEntropy, 77);
    for (method, lr_target) in [(Method::Tp, 0.5), (Method::Tp, 1e-4), (Method::Bp, 0.5)] {
        let mut hyper = hyper(
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        hyper.tp.lr_target = lr_target;
        let start = params(dims, 8);
        let amp = amplification(&CpuBackend::new().trace(&start, &b, &hyper).unwrap().h);
        let mut cpu = CpuBackend::new();
        let mut gpu = GpuBackend::with_storage(ctx(), Storage::F16);
        assert!(gpu.name().contains("f16 storage"), "{}", gpu.name());
        cpu.load(&start, None, &hyper).unwrap();
        gpu.load(&start, None, &hyper).unwrap();
        cpu.step(&b).unwrap();
        gpu.step(&b).unwrap();
        let what = format!("{method:?} γ_h={lr_target}");
        let want = cpu.last_diagnostics().unwrap().unwrap();
        let got = gpu.last_diagnostics().unwrap().unwrap();
        let norms = |n: &[f64]| DMatrix::from_column_slice(n.len(), 1, n);
        let e = check(
            &format!("{what} step norms"),
            &norms(&got.step_norms),
            &norms(&want.step_norms),
            f16_bound("step norms", amp),
        );
        let scalar = |v: f64| DMatrix::from_element(1, 1, v);
        let bound = f16_bound("loss", amp);
        let (c, g) = (cpu.last_stats().unwrap(), gpu.last_stats().unwrap());
        check(
            &format!("{what} loss"),
            &scalar(g.loss),
            &scalar(c.loss),
            bound,
        );
        // After one update from the same start, the model is the same to within the
        // update's f16 error; evaluating it reads h_T once more.
        let (ce, ge) = (cpu.evaluate(&b).unwrap(), gpu.evaluate(&b).unwrap());
        check(
            &format!("{what} eval loss"),
            &scalar(ge.loss),
            &scalar(ce.loss),
            bound,
        );
        eprintln!("{what}: step norms {:.2}u (A = {amp:.0})", e / U16);
    }
}

/// f16 storage is the tanh RNN's analytic inversion only: the GRU's kernels and the
/// jacobian sweep read and write f32 histories, so the backend refuses them with f16 (at
/// `load` and at `trace`) and still runs them with f32.
#[test]
fn f16_storage_refuses_the_gru_and_the_jacobian_inversion() {
    use tpri::config::Inversion;
    use tpri::model::{CellKind, Params};
    let dims = Dims {
        input: 3,
        hidden: 5,
        output: 4,
    };
    let b = batch(3, 2, 3, 4, Loss::CrossEntropy, 5);
    let bp = hyper(
        Method::Bp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    let mut jacobian = hyper(
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    jacobian.tp.inversion = Inversion::Jacobian;
    jacobian.tp.solver = Solver::Auto;
    jacobian.tp.cg_max_iter = 16;
    let gru = Params::init_of(CellKind::Gru, dims, 3);
    let tanh = params(dims, 3);
    let refused = [
        ("GRU, BP", &gru, &bp, "the GRU cell"),
        (
            "GRU, jacobian",
            &gru,
            &jacobian,
            "the GRU cell with --inversion jacobian",
        ),
        ("tanh, jacobian", &tanh, &jacobian, "--inversion jacobian"),
    ];
    for (what, p, h, asked) in refused {
        let expect = |e: anyhow::Error, call: &str| {
            let msg = format!("{e:#}");
            assert!(
                msg.contains(
                    "f16 storage is implemented for the tanh RNN's analytic inversion only"
                ) && msg.contains(asked),
                "{what} {call}: {msg}"
            );
        };
        let mut gpu = GpuBackend::with_storage(ctx(), Storage::F16);
        expect(gpu.load(p, None, h).unwrap_err(), "load");
        expect(gpu.trace(p, &b, h).unwrap_err(), "trace");
        // f32 storage runs the same.
        let mut gpu = GpuBackend::new(ctx());
        gpu.load(p, None, h).unwrap();
        gpu.step(&b).unwrap();
        gpu.trace(p, &b, h).unwrap();
    }
    // The tanh RNN's analytic inversion and BP run with f16.
    let mut analytic = jacobian.clone();
    analytic.tp.inversion = Inversion::Analytic;
    analytic.tp.solver = Solver::Cg;
    for h in [&bp, &analytic] {
        let mut gpu = GpuBackend::with_storage(ctx(), Storage::F16);
        gpu.load(&tanh, None, h).unwrap();
        gpu.step(&b).unwrap();
    }
}

/// The f16 and f32 errors against the reference at the paper's size (T = 784, d = 100,
/// B = 16, p = 1, q = 10; `tpri bench`'s problem), for TP with the bench's target step
/// 1e-2 and the published pixel-MNIST one 1e-4, and for BP. Minutes on lavapipe:
/// `cargo test --release --test gpu_iteration -- --ignored --nocapture`.
#[test]
#[ignore = "minutes on a software rasterizer; prints the numbers of docs/PERFORMANCE.md"]
fn f16_storage_error_at_the_papers_size() {
    use tpri::bench::{problem, Size};
    let runs = [(Method::Tp, 1e-2), (Method::Tp, 1e-4), (Method::Bp, 1e-2)];
    for (method, lr_target) in runs {
        let (p, batch, mut hyper) = problem(Size::PAPER, method, 1);
        hyper.tp.lr_target = lr_target;
        let want = CpuBackend::new().trace(&p, &batch, &hyper).unwrap();
        let amp = amplification(&want.h);
        let traces = Storage::ALL.map(|s| {
            GpuBackend::with_storage(ctx(), s)
                .trace(&p, &batch, &hyper)
                .unwrap()
        });
        println!("{method:?}, γ_h = {lr_target}, A = {amp:.0}:");
        println!(
            "{:>10} {:>10} {:>10} {:>8} {:>10}",
            "quantity", "f32", "f16", "f16 / u", "bound"
        );
        let w = quantities(&want);
        let [q32, q16] = traces.map(|t| quantities(&t));
        for (((name, want), (_, got32)), (_, got16)) in w.iter().zip(&q32).zip(&q16) {
            let e32 = rel_err(name, got32, want);
            let e16 = rel_err(name, got16, want);
            let bound = f16_bound(name, amp);
            println!(
                "{name:>10} {e32:>10.2e} {e16:>10.2e} {:>8.2} {bound:>10.1e}",
                e16 / U16
            );
            assert!(e16 <= bound, "{name}: {e16:.3e} > {bound:.3e}");
        }
    }
}
