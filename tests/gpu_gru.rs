//! The GRU and the jacobian inversion (docs/ALGORITHM.md §5) on the GPU against the f64 CPU reference:
//! every new kernel (GRU forward, GRU backward recursion, the Jacobian products of both
//! cells, the jacobian target sweep with its per-step CG), and what the backend refuses or
//! reports about them. Whole iterations and training runs of both cells are
//! tests/gpu_iteration.rs's matrix.
//!
//! Fresh random inputs; sizes off the workgroup grid, covering d ∈ {1, 7, 33, 100},
//! B ∈ {1, 3, 16}, T ∈ {1, 2, 7, 33}. The one-shot wrappers poison every output with NaN
//! before the launch, and every comparison fails on a non-finite GPU value, so an element
//! a kernel fails to write fails the test.

mod gpu_support;
mod support;

use gpu_support::{compare_traces, compare_traces_with, ctx, hyper, start, SWEEP_MAX_ITER, TOL};
use nalgebra::DMatrix;
use rand::Rng;
use support::{
    check, check_all, check_targets, column, dims, inputs, random, random_batch, rng,
    seeded_params, Shape,
};
use tpri::backend::Backend;
use tpri::config::Preconditioner::{self, Jacobi};
use tpri::config::{Hyper, Inversion, Loss, Method, TargetMode, TpConfig, TpGrad};
use tpri::cpu;
use tpri::cpu::jacobian::{Cell, GruCell, TanhCell};
use tpri::cpu::CpuBackend;
use tpri::gpu;
use tpri::gpu::{GpuBackend, GpuOptions, LanesPerUnit};
use tpri::kernel_io::Injection;
use tpri::model::{CellKind, Params};

/// (d, T, B) covering d ∈ {1, 7, 33, 100}, T ∈ {1, 2, 7, 33}, B ∈ {1, 3, 16}, and d = 257,
/// where an invocation owns two units (the kernels' workgroups have 256).
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (7, 2, 3),
    (33, 7, 16),
    (100, 33, 16),
    (7, 33, 1),
    (100, 7, 3),
    (257, 2, 3),
];

fn states(params: &Params, x: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    match params.cell {
        CellKind::Tanh => cpu::forward::forward(params, x).unwrap(),
        CellKind::Gru => cpu::gru::gru_forward(params, x).unwrap(),
    }
}

/// The GRU's forward pass against the reference, its states and the gates it keeps, with
/// 1, 2, 4 and 8 lanes per unit (each unit's three sums split over that many invocations;
/// `--lanes-per-unit`) wherever their partial sums fit (3 · lanes · d ≤ 2048 and lanes · d
/// ≤ the adapter's invocations per workgroup); a count that does not fit is refused, naming
/// `lanes_per_unit`.
#[test]
fn gru_forward_matches_reference() {
    let ctx = ctx();
    let max_invocations = ctx.max_invocations_per_workgroup();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = start(CellKind::Gru, dims(3, d, 2), i as u64, 0.0);
        let x = inputs(&mut rng(100 + i as u64), t, b, 3);
        let want = cpu::gru::gru_forward(&params, &x).unwrap();
        for lanes in [1, 2, 4, 8] {
            let options = GpuOptions {
                lanes_per_unit: LanesPerUnit::Fixed(lanes),
                ..GpuOptions::default()
            };
            let run = gpu::one_shot::gru_forward_gates_with(&ctx, &params, &x, options);
            if lanes > 1 && (3 * lanes * d > 2048 || lanes * d > max_invocations) {
                let e = format!("{:#}", run.unwrap_err());
                assert!(e.contains("lanes_per_unit"), "{e}");
                continue;
            }
            let (h, gates) = run.unwrap();
            let what = |n: &str| format!("{n} (d={d}, T={t}, B={b}, {lanes} lane(s))");
            let e = check_all(&what("h"), &h, &want, TOL);
            assert_eq!(gates.len(), t);
            let mut worst: f64 = 0.0;
            for (step, got) in gates.iter().enumerate() {
                let exp = cpu::gru::gru_gates(&params, &want[step], &x[step]).unwrap();
                for (name, g, w) in [
                    ("r", &got.r, &exp.r),
                    ("z", &got.z, &exp.z),
                    ("n", &got.n, &exp.n),
                    ("hn", &got.hn, &exp.hn),
                ] {
                    worst = worst.max(check(&what(&format!("{name}_{}", step + 1)), g, w, TOL));
                }
            }
            if lanes == 1 {
                let h_only = gpu::one_shot::gru_forward(&ctx, &params, &x).unwrap();
                assert_eq!(h_only, h, "the default is one lane, bit for bit");
            }
            eprintln!("{}: h {e:.2e}, gates {worst:.2e}", what("GRU forward"));
        }
    }
}

/// The GRU's backward recursion against the reference with each injection (BP's g_T,
/// TP's targets through time and locally), with one lane per unit and, where dgh and the
/// lanes' parts fit ((3 + lanes)·d ≤ 2048), two and four (forward pass and recursion both:
/// `--lanes-per-unit`); a count that does not fit is refused naming `lanes_per_unit`.
#[test]
fn gru_bptt_matches_reference_in_every_mode() {
    let ctx = ctx();
    let max_invocations = ctx.max_invocations_per_workgroup();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = start(CellKind::Gru, dims(3, d, 2), 20 + i as u64, 0.0);
        let mut r = rng(400 + i as u64);
        let x = inputs(&mut r, t, b, 3);
        let h = cpu::gru::gru_forward(&params, &x).unwrap();
        let g_top = random(&mut r, b, d, 0.5);
        let v: Vec<_> = h
            .iter()
            .map(|h_t| h_t + random(&mut r, b, d, 0.1))
            .collect();
        let cases = [
            ("BP", Injection::Top(&g_top), true),
            ("TP through time", Injection::Targets(&v[..]), true),
            ("TP local", Injection::Targets(&v[..]), false),
        ];
        for ((name, injection, through_time), lanes) in cases
            .into_iter()
            .flat_map(|case| [1, 2, 4].map(|lanes| (case, lanes)))
        {
            let want = cpu::gru::gru_bptt(&params, &x, &h, injection, through_time).unwrap();
            let options = GpuOptions {
                lanes_per_unit: LanesPerUnit::Fixed(lanes),
                ..GpuOptions::default()
            };
            let run = gpu::one_shot::gru_bptt_with(
                &ctx,
                &params,
                &x,
                &h,
                (injection, through_time),
                options,
            );
            if lanes > 1
                && ((3 + lanes) * d > 2048 || 3 * lanes * d > 2048 || lanes * d > max_invocations)
            {
                let e = format!("{:#}", run.unwrap_err());
                assert!(e.contains("lanes_per_unit"), "{e}");
                continue;
            }
            let got = run.unwrap();
            if lanes == 1 {
                let default =
                    gpu::one_shot::gru_bptt(&ctx, &params, &x, &h, injection, through_time)
                        .unwrap();
                assert_eq!(default, got, "the default is one lane, bit for bit");
            }
            let what = |n: &str| format!("{n} ({name}, {lanes} lane(s), d={d}, T={t}, B={b})");
            let mut worst = check(&what("∇w_hh"), &got.rnn.w_hh, &want.rnn.w_hh, TOL);
            worst = worst.max(check(&what("∇w_ih"), &got.rnn.w_ih, &want.rnn.w_ih, TOL));
            worst = worst.max(check(&what("∇b_ih"), &got.rnn.b, &want.rnn.b, TOL));
            worst = worst.max(check(&what("∇b_hh"), &got.b_hh, &want.b_hh, TOL));
            worst = worst.max(check(
                &what("‖e_t‖"),
                &column(&got.rnn.error_norms),
                &column(&want.rnn.error_norms),
                TOL,
            ));
            eprintln!("{}: worst {worst:.2e}", what("GRU bptt"));
        }
    }
}

#[test]
fn jacobian_products_match_reference_for_both_cells() {
    let ctx = ctx();
    for cell in [CellKind::Tanh, CellKind::Gru] {
        for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
            let params = start(cell, dims(3, d, 2), 30 + i as u64, 0.0);
            let mut r = rng(500 + i as u64);
            let x = inputs(&mut r, t, b, 3);
            let h = states(&params, &x);
            let tanh;
            let gru;
            let reference: &dyn Cell = match cell {
                CellKind::Tanh => {
                    tanh = TanhCell::new(&params, &h).unwrap();
                    &tanh
                }
                CellKind::Gru => {
                    gru = GruCell::new(&params, &x, &h).unwrap();
                    &gru
                }
            };
            let mut worst: f64 = 0.0;
            // The first, the last and a middle step.
            let mut steps = vec![1, t, t.div_ceil(2)];
            steps.dedup();
            for step in steps {
                let u = random(&mut r, b, d, 1.0);
                let what = |n: &str| format!("{n} ({cell:?}, t={step}, d={d}, T={t}, B={b})");
                let got = gpu::one_shot::jvp(&ctx, &params, &x, step, &u).unwrap();
                worst = worst.max(check(
                    &what("J u"),
                    &got,
                    &reference.jvp(step, &u).unwrap(),
                    TOL,
                ));
                let got = gpu::one_shot::vjp(&ctx, &params, &x, step, &u).unwrap();
                worst = worst.max(check(
                    &what("Jᵀ w"),
                    &got,
                    &reference.vjp(step, &u).unwrap(),
                    TOL,
                ));
            }
            eprintln!("products {cell:?} d={d} T={t} B={b}: worst {worst:.2e}");
        }
        let params = start(cell, dims(3, 4, 2), 1, 0.0);
        let x = inputs(&mut rng(1), 3, 2, 3);
        let u = DMatrix::zeros(2, 4);
        assert!(
            gpu::one_shot::jvp(&ctx, &params, &x, 0, &u).is_err(),
            "step 0"
        );
        assert!(
            gpu::one_shot::vjp(&ctx, &params, &x, 4, &u).is_err(),
            "step T + 1"
        );
    }
}

#[test]
fn jacobian_sweep_matches_reference_for_both_cells() {
    let ctx = ctx();
    let tol = gpu::GPU_CG_TOL;
    for cell in [CellKind::Tanh, CellKind::Gru] {
        for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
            let params = start(cell, dims(3, d, 2), 40 + i as u64, 0.0);
            let mut r = rng(700 + i as u64);
            let x = inputs(&mut r, t, b, 3);
            let h = states(&params, &x);
            let reference: Box<dyn Cell> = match cell {
                CellKind::Tanh => Box::new(TanhCell::new(&params, &h).unwrap()),
                CellKind::Gru => Box::new(GruCell::new(&params, &x, &h).unwrap()),
            };
            // γ_h = 1e-4 (the published pixel-MNIST step) puts v − h far below f32's
            // resolution of h: the offsets are what the kernel carries; check those too.
            // Plain CG too, where the targets are large enough to move every step.
            let cases = [(0.5, Jacobi), (0.5, Preconditioner::None), (1e-4, Jacobi)];
            for (lr_target, pc) in cases {
                let v_top = &h[t] - random(&mut r, b, d, 1.0) * lr_target;
                let reg = 1.0;
                // The reference solves to 1e-12: the comparison is with the exact targets.
                let (want, want_reps) = cpu::jacobian::jacobian_sweep(
                    reference.as_ref(),
                    &h,
                    &v_top,
                    reg,
                    1e-12,
                    100,
                    Jacobi,
                )
                .unwrap();
                let (got, reps) = gpu::one_shot::jacobian_sweep(
                    &ctx,
                    &params,
                    &x,
                    &h,
                    &v_top,
                    reg,
                    tol,
                    SWEEP_MAX_ITER,
                    pc,
                )
                .unwrap();
                let what = format!("({cell:?}, γ_h={lr_target}, {pc:?}, d={d}, T={t}, B={b})");
                let e = check_targets(&what, &got, &want, &h, TOL);
                assert_eq!(reps.len(), want_reps.len(), "{what}: one report per step");
                for rep in &reps {
                    assert!(
                        rep.residual <= tol && (1..=SWEEP_MAX_ITER).contains(&rep.iterations),
                        "{what}: {rep:?}"
                    );
                }
                let most = reps.iter().map(|r| r.iterations).max().unwrap_or(0);
                let cpu_most = want_reps.iter().map(|r| r.iterations).max().unwrap_or(0);
                eprintln!(
                    "sweep {what}: v − h {e:.2e}, CG ≤ {most} iterations (reference at 1e-12: ≤ {cpu_most})"
                );
            }
        }
    }
}

/// The GRU's preconditioner shares its three gate vectors a chunk of MAX_HIDDEN / 3 units
/// at a time (jacobian.wgsl's GATE_CHUNK): past 682 units it takes two chunks.
#[test]
fn preconditioned_gru_sweep_past_one_gate_chunk_matches_reference() {
    let ctx = ctx();
    let (d, t, b) = (700, 3, 2);
    let mut params = start(CellKind::Gru, dims(2, d, 2), 51, 0.0);
    let mut r = rng(52);
    // Update gates z spread over (0.02, 0.98), as training leaves them: J_t's columns then
    // differ in length, which is what a diagonal preconditioner evens out.
    for i in d..2 * d {
        params.b[(i, 0)] = r.random_range(-4.0..4.0);
    }
    let x = inputs(&mut r, t, b, 2);
    let h = states(&params, &x);
    let reference = GruCell::new(&params, &x, &h).unwrap();
    let v_top = &h[t] - random(&mut r, b, d, 0.5);
    let reg = 0.1;
    let (want, _) =
        cpu::jacobian::jacobian_sweep(&reference, &h, &v_top, reg, 1e-12, 100, Jacobi).unwrap();
    let tol = gpu::GPU_CG_TOL;
    let (got, reps) =
        gpu::one_shot::jacobian_sweep(&ctx, &params, &x, &h, &v_top, reg, tol, 100, Jacobi)
            .unwrap();
    check_targets("GRU d = 700, Jacobi", &got, &want, &h, TOL);
    assert!(reps.iter().all(|rep| rep.residual <= tol), "{reps:?}");
    // The preconditioner is the diagonal's: the same solves without it take more iterations.
    let (_, plain) = gpu::one_shot::jacobian_sweep(
        &ctx,
        &params,
        &x,
        &h,
        &v_top,
        reg,
        tol,
        100,
        Preconditioner::None,
    )
    .unwrap();
    let total = |reps: &[tpri::cg::CgReport]| reps.iter().map(|r| r.iterations).sum::<usize>();
    eprintln!(
        "d = 700: {} CG iterations with Jacobi, {} plain",
        total(&reps),
        total(&plain)
    );
    assert!(total(&reps) < total(&plain), "{reps:?} against {plain:?}");
}

#[test]
fn jacobian_sweep_that_misses_its_tolerance_is_an_error_with_the_numbers() {
    let ctx = ctx();
    for cell in [CellKind::Tanh, CellKind::Gru] {
        let params = start(cell, dims(2, 12, 2), 8, 0.0);
        let x = inputs(&mut rng(8), 4, 3, 2);
        let h = states(&params, &x);
        let v_top = &h[4] + random(&mut rng(9), 3, 12, 0.5);
        let err =
            gpu::one_shot::jacobian_sweep(&ctx, &params, &x, &h, &v_top, 1e-3, 1e-7, 2, Jacobi)
                .unwrap_err();
        let cg = tpri::error::cg_error(&err)
            .unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
        assert_eq!(cg.report.iterations, 2, "{cell:?}: {cg:?}");
        assert!(
            cg.report.residual > 1e-7 && cg.report.residual.is_finite(),
            "{cell:?}: {cg:?}"
        );
        // A non-finite model fails too, instead of passing a NaN residual for converged.
        let mut bad = params.clone();
        bad.w_hh[(1, 2)] = f64::NAN;
        let err = gpu::one_shot::jacobian_sweep(&ctx, &bad, &x, &h, &v_top, 1.0, 1e-5, 10, Jacobi)
            .unwrap_err();
        assert!(tpri::error::cg_error(&err).is_some(), "{cell:?}: {err:#}");
    }
}

/// TP with the jacobian inversion through time, cross-entropy (`gpu_support::hyper`).
fn jacobian_tp() -> Hyper {
    hyper(
        Inversion::Jacobian,
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    )
}

/// A per-step solve that misses its tolerance during training surfaces when the statistics
/// are read, even a step later (the failure record is sticky until read).
#[test]
fn per_step_cg_failure_surfaces_at_readback_as_cg_error() {
    let p = start(CellKind::Gru, dims(2, 12, 2), 8, 0.0);
    let mut h = jacobian_tp();
    h.tp.reg = 1e-3;
    h.tp.cg_tol = Some(1e-7);
    h.tp.cg_max_iter = 2;
    let b = random_batch(&mut rng(8), Shape::new(2, 3, 2, 12, 2), Loss::CrossEntropy);
    let mut gpu = GpuBackend::new(ctx());
    gpu.load(&p, None, &h).unwrap();
    gpu.step(&b).unwrap();
    gpu.step(&b).unwrap();
    let err = gpu.last_stats().unwrap_err();
    let cg =
        tpri::error::cg_error(&err).unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
    assert_eq!(cg.report.iterations, 2);
    assert!(cg.report.residual > 1e-7, "{cg:?}");
    // Read once, the record is cleared; the next failing step raises it again.
    gpu.step(&b).unwrap();
    assert!(gpu.last_stats().is_err());
    assert!(GpuBackend::new(ctx()).trace(&p, &b, &h).is_err());
}

/// The sweep's report counts the steps it solved (docs/ALGORITHM.md §5, "The report"). On
/// the CPU a step is solved exactly when the target carried to it differs from its state;
/// at r = 10⁴ the correction shrinks at least 200-fold a step, so on both backends it
/// rounds away (or underflows, on the GPU, which carries offsets) long before step 2,
/// where at r = 1/4 it reaches further back.
#[test]
fn jacobian_sweep_reports_the_steps_it_solved() {
    let t = 60;
    for cell in [CellKind::Tanh, CellKind::Gru] {
        let p = start(cell, dims(3, 33, 4), 5, 0.0);
        let b = random_batch(&mut rng(5), Shape::new(3, t, 3, 33, 4), Loss::CrossEntropy);
        let mut solved = Vec::new();
        for reg in [0.25, 1e4] {
            let mut h = jacobian_tp();
            h.tp.reg = reg;
            h.tp.cg_max_iter = 100;
            let want = CpuBackend::new().trace(&p, &b, &h).unwrap();
            let got = GpuBackend::new(ctx()).trace(&p, &b, &h).unwrap();
            let (cpu, gpu) = (want.cg.unwrap(), got.cg.unwrap());
            let v = want.v.as_ref().unwrap();
            let moved = (2..=t).filter(|&s| v[s] != want.h[s]).count();
            let what = format!("{cell:?}, r = {reg}: CPU {cpu:?}, GPU {gpu:?}");
            eprintln!("{what}; targets off their states at {moved} of steps 2 … {t}");
            assert_eq!(cpu.solves, moved, "{what}");
            for r in [cpu, gpu] {
                assert!((1..t).contains(&r.solves), "{what}");
                assert!(r.total_iterations >= r.iterations.max(r.solves), "{what}");
            }
            solved.push((cpu.solves, gpu.solves));
        }
        assert!(
            solved[0].0 > solved[1].0 && solved[0].1 > solved[1].1,
            "{cell:?}: {solved:?}"
        );
    }
}

/// A sweep whose worst case (T − 1)·cg_max_iter iterations passes llvmpipe's loop cap in
/// one invocation (the backend refused it there before segments) runs in bounded launches
/// on every adapter and agrees with the reference.
#[test]
fn jacobian_sweep_with_a_large_cg_cap_matches_reference() {
    let p = start(CellKind::Gru, dims(3, 33, 4), 3, 0.0);
    let b = random_batch(&mut rng(3), Shape::new(2, 33, 3, 33, 4), Loss::CrossEntropy);
    let mut h = jacobian_tp();
    h.tp.cg_max_iter = 1000;
    compare_traces("(cg_max_iter = 1000)", &p, &b, &h);
}

#[test]
fn gpu_backend_refuses_mismatched_gru_inputs() {
    let p = start(CellKind::Gru, dims(3, 5, 2), 1, 0.0);
    let mut gpu = GpuBackend::new(ctx());
    // The GRU has no closed form: the analytic inversion is refused before any upload.
    let analytic = Hyper {
        tp: TpConfig {
            inversion: Inversion::Analytic,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let b = random_batch(&mut rng(1), Shape::new(2, 2, 3, 5, 2), Loss::CrossEntropy);
    let err = format!("{:#}", gpu.trace(&p, &b, &analytic).unwrap_err());
    assert!(err.contains("jacobian"), "{err}");
    let h = jacobian_tp();
    gpu.load(&p, None, &h).unwrap();
    let wrong = random_batch(&mut rng(1), Shape::new(2, 2, 4, 5, 2), Loss::CrossEntropy);
    let err = gpu.step(&wrong).unwrap_err().to_string();
    assert!(err.contains("expected"), "input size mismatch: {err}");
    // Optimizer slots of the tanh RNN do not fit a GRU.
    let tanh_opt =
        tpri::optimizer_state::OptState::new(&seeded_params(CellKind::Tanh, dims(3, 5, 2), 1, 1.0));
    assert!(gpu.load(&p, Some(&tanh_opt), &h).is_err());
    assert!(CpuBackend::new().load(&p, Some(&tanh_opt), &h).is_err());
}

/// The per-gate inversion's settings (`gpu_support::hyper`): through time or local, the
/// three P_g by CG.
fn per_gate_tp(grad: TpGrad, loss: Loss) -> Hyper {
    hyper(
        Inversion::PerGate,
        Method::Tp,
        TargetMode::Linearized,
        grad,
        loss,
    )
}

/// The per-gate sweep (gru_per_gate_sweep.wgsl) from given P_r, P_z, P_n against its f64
/// twin, at every shape of `SHAPES` and at the published pixel step γ_h = 1e-4, where only
/// the offsets v − h carry information. The one-shot poisons dv before the launch.
#[test]
fn per_gate_sweep_matches_reference() {
    let ctx = ctx();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = start(CellKind::Gru, dims(3, d, 2), 60 + i as u64, 0.0);
        let mut r = rng(900 + i as u64);
        let x = inputs(&mut r, t, b, 3);
        let h = cpu::gru::gru_forward(&params, &x).unwrap();
        let tp = per_gate_tp(TpGrad::ThroughTime, Loss::CrossEntropy).tp;
        let (p_gates, _) = cpu::gru_per_gate::gate_inverses(&params, &tp, true).unwrap();
        for lr_target in [0.5, 1e-4] {
            let v_top = &h[t] - random(&mut r, b, d, 1.0) * lr_target;
            let want =
                cpu::gru_per_gate::gru_per_gate_sweep(&params, &p_gates, &x, &h, &v_top).unwrap();
            let got =
                gpu::one_shot::gru_per_gate_sweep(&ctx, &params, &p_gates, &x, &h, &v_top).unwrap();
            let what = format!("(γ_h={lr_target}, d={d}, T={t}, B={b})");
            let e = check_targets(&what, &got, &want, &h, TOL);
            eprintln!("per-gate sweep {what}: v − h {e:.2e}");
        }
    }
}

/// Whole per-gate iterations against the reference at odd sizes, d ∈ {1, 7, 33},
/// B ∈ {1, 3}: every quantity of the trace (h, v, v − h, the three P_g, the loss, every
/// gradient, the norms and the CG report) within 1e-4 (`compare_traces`).
#[test]
fn per_gate_iterations_match_reference() {
    let cases = [
        (1, 1, 4, TpGrad::ThroughTime, Loss::CrossEntropy),
        (7, 3, 6, TpGrad::Local, Loss::Mse),
        (33, 3, 5, TpGrad::ThroughTime, Loss::Mse),
        (33, 1, 2, TpGrad::Local, Loss::CrossEntropy),
        (7, 1, 1, TpGrad::ThroughTime, Loss::CrossEntropy),
    ];
    for (i, (d, b, t, grad, loss)) in cases.into_iter().enumerate() {
        let params = start(CellKind::Gru, dims(3, d, 4), 70 + i as u64, 0.0);
        let batch = random_batch(&mut rng(70 + i as u64), Shape::new(b, t, 3, d, 4), loss);
        let what = format!("per-gate {grad:?} {loss:?} d={d} B={b} T={t}");
        compare_traces(&what, &params, &batch, &per_gate_tp(grad, loss));
    }
}

/// Whole GRU iterations with lanes, against the reference: the jacobian inversion (lanes
/// in the forward pass and the surrogate's backward recursion) and the per-gate one (in
/// the forward pass; its one backward loop has none) with 4 lanes at d = 33 and 2 at
/// d = 100 (T = 6, B = 3), every quantity of the trace within 1e-4 (`compare_traces_with`).
#[test]
fn iterations_with_lanes_match_reference() {
    for (i, (d, lanes)) in [(33, 4), (100, 2)].into_iter().enumerate() {
        let params = start(CellKind::Gru, dims(3, d, 4), 90 + i as u64, 0.0);
        let batch = random_batch(
            &mut rng(90 + i as u64),
            Shape::new(3, 6, 3, d, 4),
            Loss::Mse,
        );
        let options = GpuOptions {
            lanes_per_unit: LanesPerUnit::Fixed(lanes),
            ..GpuOptions::default()
        };
        for (name, hyper) in [
            ("jacobian", jacobian_tp()),
            ("per-gate", per_gate_tp(TpGrad::ThroughTime, Loss::Mse)),
        ] {
            let hyper = Hyper {
                loss: Loss::Mse,
                ..hyper
            };
            let what = format!("({name}, {lanes} lanes, d={d})");
            compare_traces_with(&what, &params, &batch, &hyper, options);
        }
    }
}

/// Fifty training steps of the per-gate inversion side by side with the reference (the
/// GPU warm-starts each P_g from the last step's, the reference solves cold).
#[test]
fn per_gate_training_agrees_with_reference() {
    let p = start(CellKind::Gru, dims(2, 9, 1), 5, 0.0);
    let h = per_gate_tp(TpGrad::ThroughTime, Loss::Mse);
    let run = gpu_support::train_side_by_side(&p, &h, "per-gate GRU");
    eprintln!(
        "per-gate GRU, 50 steps: worst loss gap {:.2e}, CG ≤ {} iterations",
        run.worst, run.cg_most
    );
}

/// A P_g solve that misses its tolerance is a `CgError` with the numbers, on both
/// backends; the per-gate inversion of a tanh RNN, per-step P_g solves and f16 storage are
/// refused before anything runs.
#[test]
fn per_gate_failures_and_refusals_are_clear() {
    let p = start(CellKind::Gru, dims(2, 12, 2), 8, 0.0);
    let b = random_batch(&mut rng(8), Shape::new(3, 4, 2, 12, 2), Loss::CrossEntropy);
    let mut h = per_gate_tp(TpGrad::ThroughTime, Loss::CrossEntropy);
    h.tp.reg = 1e-3;
    h.tp.cg_tol = Some(1e-7);
    h.tp.cg_max_iter = 2;
    for err in [
        GpuBackend::new(ctx()).trace(&p, &b, &h).unwrap_err(),
        CpuBackend::new().trace(&p, &b, &h).unwrap_err(),
    ] {
        let cg = tpri::error::cg_error(&err)
            .unwrap_or_else(|| panic!("expected a CgError, got {err:#}"));
        assert_eq!(cg.report.iterations, 2, "{cg:?}");
        assert!(cg.report.residual > 1e-7, "{cg:?}");
    }
    let tanh = seeded_params(CellKind::Tanh, dims(2, 12, 2), 1, 1.0);
    let ok = per_gate_tp(TpGrad::ThroughTime, Loss::CrossEntropy);
    let err = format!(
        "{:#}",
        GpuBackend::new(ctx()).trace(&tanh, &b, &ok).unwrap_err()
    );
    assert!(
        err.contains("per-gate") && err.contains("Hyper::tp.inversion"),
        "{err}"
    );
    let mut per_step = ok.clone();
    per_step.tp.solver = tpri::config::Solver::PerStep;
    let err = format!(
        "{:#}",
        CpuBackend::new().trace(&p, &b, &per_step).unwrap_err()
    );
    assert!(err.contains("Hyper::tp.solver"), "{err}");
    let mut f16 = GpuBackend::with_storage(ctx(), gpu::Storage::F16);
    let err = format!("{:#}", f16.trace(&p, &b, &ok).unwrap_err());
    assert!(err.contains("Inversion::PerGate"), "{err}");
}

/// The P_g solves run in bounded launches like P's: a CG cap whose worst case passes
/// llvmpipe's loop cap in one invocation (refused there before segments) runs everywhere.
#[test]
fn per_gate_solves_with_a_large_cg_cap_run_in_segments() {
    let p = start(CellKind::Gru, dims(3, 33, 4), 3, 0.0);
    let b = random_batch(&mut rng(3), Shape::new(2, 3, 3, 33, 4), Loss::CrossEntropy);
    let mut h = per_gate_tp(TpGrad::ThroughTime, Loss::CrossEntropy);
    h.tp.cg_max_iter = 5000;
    GpuBackend::new(ctx()).trace(&p, &b, &h).unwrap();
}

/// The per-gate sweep and the surrogate's BPTT in one loop (gru_sweep_bptt.wgsl) against
/// the two loops it replaces (gru_per_gate_sweep.wgsl, then gru_bptt.wgsl): the same trace
/// bit for bit (states, targets, the P_g, every gradient, the per-step error norms), and
/// within `TOL` of the reference, over sizes off the workgroup grid (d = 257 and 341: two
/// units an invocation), both losses and launches of a few steps (segments that hand dv
/// on and form the carried vector again). Each case first checks that the fused loop runs
/// there; the local gradient and d = 342 (six vectors of a step past half the workgroup
/// memory) run the two loops.
#[test]
fn per_gate_fused_backward_equals_the_two_loops_bit_for_bit() {
    use gpu::{one_shot, GpuOptions, StepsPerDispatch};
    use std::num::NonZeroUsize;
    let options = |k: Option<usize>| GpuOptions {
        steps_per_dispatch: k.map_or(StepsPerDispatch::Auto, |k| {
            StepsPerDispatch::Fixed(NonZeroUsize::new(k).unwrap())
        }),
        ..GpuOptions::default()
    };
    // (d, T, B, loss, steps per launch)
    let cases = [
        (1, 9, 1, Loss::CrossEntropy, None),
        (7, 33, 3, Loss::Mse, Some(5)),
        (33, 20, 7, Loss::CrossEntropy, Some(3)),
        (100, 17, 3, Loss::Mse, Some(4)),
        (257, 7, 2, Loss::CrossEntropy, Some(2)),
        (341, 4, 2, Loss::Mse, None),
    ];
    let mut worst: f64 = 0.0;
    for (i, &(d, t, b, loss, k)) in cases.iter().enumerate() {
        let what = format!("GRU fused backward d={d} T={t} B={b} {loss:?} K={k:?}");
        let shape = Shape::new(b, t, 3, d, 4);
        let p = start(CellKind::Gru, shape.dims(), 140 + i as u64, 0.0);
        let batch = random_batch(&mut rng(160 + i as u64), shape, loss);
        let h = per_gate_tp(TpGrad::ThroughTime, loss);
        worst = worst.max(gpu_support::fused_equals_separate(
            &what,
            &p,
            &batch,
            &h,
            options(k),
        ));
    }
    eprintln!("GRU fused backward, worst against the reference: {worst:.2e}");
    let shape = Shape::new(3, 5, 3, 7, 4);
    let p = start(CellKind::Gru, shape.dims(), 190, 0.0);
    let batch = random_batch(&mut rng(191), shape, Loss::CrossEntropy);
    let local = per_gate_tp(TpGrad::Local, Loss::CrossEntropy);
    assert!(
        !one_shot::fused_backward(&ctx(), &p, &batch, &local, GpuOptions::default()).unwrap(),
        "the surrogate differentiated locally"
    );
    let wide = Shape::new(1, 2, 3, 342, 4);
    let p = start(CellKind::Gru, wide.dims(), 192, 0.0);
    let batch = random_batch(&mut rng(193), wide, Loss::CrossEntropy);
    let h = per_gate_tp(TpGrad::ThroughTime, Loss::CrossEntropy);
    assert!(
        !one_shot::fused_backward(&ctx(), &p, &batch, &h, GpuOptions::default()).unwrap(),
        "d = 342"
    );
}
