//! What the GPU tests share besides tests/support: one context per test binary, the
//! settings and starting points of their cases, and the two whole-backend comparisons with
//! the f64 reference (a trace, and 50 training steps). A machine without an adapter FAILS
//! these tests (with a hint) rather than skipping them: a silently skipped GPU suite proves
//! nothing. Each GPU test crate declares `mod support;` and `mod gpu_support;` at its root.

#![allow(dead_code)] // each test binary uses a different subset

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};

use tpri::backend::{Backend, Trace};
use tpri::config::{
    Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode, TpConfig,
    TpGrad,
};
use tpri::cpu::CpuBackend;
use tpri::gpu::{
    AdapterChoice, Backward, F16Conversions, GpuBackend, GpuContext, GpuOptions, LanesPerUnit,
    SequencesPerWorkgroup, StepsPerDispatch, Storage, GPU_CG_TOL,
};
use tpri::model::{CellKind, Dims, Params};
use tpri::tasks::{build_task, Batch, TaskSpec};

use crate::support::{
    check, check_all, column, offsets, random, random_batch, rng, scalar, seeded_params, Shape,
};

/// The shared context; panics with the reason when no adapter can be opened.
pub fn ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(&AdapterChoice::Auto) {
        Ok(ctx) => {
            eprintln!("GPU tests on {}", ctx.describe());
            Arc::new(ctx)
        }
        Err(e) => panic!(
            "GPU tests need a GPU adapter and found none usable: {e:#}\n\
             (no real GPU? `apt-get install mesa-vulkan-drivers` provides lavapipe)"
        ),
    })
    .clone()
}

/// A second context on the same adapter whose f16 storage converts with integer code
/// (round to nearest even everywhere), whatever the adapter offers.
pub fn integer_f16_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::with_f16(&AdapterChoice::Auto, F16Conversions::Integer)
            .expect("the adapter ctx() opened opens again");
        assert_eq!(ctx.f16_conversions(), F16Conversions::Integer);
        Arc::new(ctx)
    })
    .clone()
}

/// The bound of every GPU-vs-reference comparison: f32 keeps about 7 digits; sums of a few
/// thousand terms and T ≤ 784 steps of a contracting recursion lose one to two of them.
pub const TOL: f64 = 1e-4;

/// CG iterations the jacobian inversion's tests allow per step: CG on J_tᵀJ_t + rI at
/// r = 1 needs about ten here. A cap close to that keeps the worst case, and so the
/// launches the GPU records for it, small.
pub const SWEEP_MAX_ITER: usize = 16;

/// The settings of a GPU-vs-reference case: r = 1, γ_h = 0.5 and the given inversion,
/// method, target mode, gradient mode and loss. The analytic inversion forms P by CG (P is
/// compared, so the reference forms it too: auto may not at small T·B), the per-gate one
/// its three P_g by CG; the jacobian one solves each step with at most `SWEEP_MAX_ITER`
/// CG iterations.
pub fn hyper(
    inversion: Inversion,
    method: Method,
    mode: TargetMode,
    grad: TpGrad,
    loss: Loss,
) -> Hyper {
    let defaults = TpConfig::default();
    let (solver, cg_max_iter) = match inversion {
        Inversion::Analytic | Inversion::PerGate => (Solver::Cg, defaults.cg_max_iter),
        Inversion::Jacobian => (defaults.solver, SWEEP_MAX_ITER),
    };
    Hyper {
        method,
        loss,
        tp: TpConfig {
            lr_target: 0.5,
            reg: 1.0,
            target_mode: mode,
            tp_grad: grad,
            inversion,
            solver,
            cg_max_iter,
            ..defaults
        },
        ..Hyper::default()
    }
}

/// `hyper` for TP-RI with the analytic inversion, the surrogate differentiated through
/// time and cross-entropy: the settings of the fused backward loop's cases.
pub fn analytic_tp(mode: TargetMode) -> Hyper {
    hyper(
        Inversion::Analytic,
        Method::Tp,
        mode,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    )
}

/// GPU options with `storage`, `lanes` lanes per unit and `seqs` sequences per workgroup
/// in the tanh RNN's time loops, launches of at most `k` steps (`None`: as the adapter
/// allows) and TP-RI's backward pass as `backward` says.
pub fn packing_options(
    storage: Storage,
    (lanes, seqs): (usize, usize),
    k: Option<usize>,
    backward: Backward,
) -> GpuOptions {
    GpuOptions {
        storage,
        lanes_per_unit: LanesPerUnit::Fixed(lanes),
        sequences_per_workgroup: SequencesPerWorkgroup::Fixed(seqs),
        steps_per_dispatch: k.map_or(StepsPerDispatch::Auto, |k| {
            StepsPerDispatch::Fixed(NonZeroUsize::new(k).unwrap())
        }),
        backward,
        ..GpuOptions::default()
    }
}

/// The starting parameters of a GPU-vs-reference case. The tanh RNN: W orthogonal·0.9
/// (states off saturation, J_t = D_t W well conditioned) plus, when `w_noise` > 0, uniform
/// noise of scale `w_noise`/√d: off orthogonality, the solve for P has real work to do, but
/// too far off, targets grow geometrically backwards in time (a property of TP, not of
/// either backend) and every rounding error with them. The GRU: PyTorch's initialisation
/// with W and U ×1.5, so that the gates are spread out rather than all near ½.
pub fn start(cell: CellKind, dims: Dims, seed: u64, w_noise: f64) -> Params {
    match cell {
        CellKind::Tanh => {
            let mut p = seeded_params(cell, dims, seed, 0.9);
            if w_noise > 0.0 {
                let d = dims.hidden;
                p.w_hh += random(&mut rng(seed), d, d, w_noise / (d as f64).sqrt());
            }
            p
        }
        CellKind::Gru => {
            assert_eq!(w_noise, 0.0, "the GRU's start has no noise parameter");
            seeded_params(cell, dims, seed, 1.5)
        }
    }
}

/// Traces `params` on `batch` with `hyper` on both backends and compares every quantity of
/// the GPU trace with the reference's within `TOL`: h, the loss, every gradient, the
/// per-step norms, the per-step losses of outputs at every step, and for TP the targets v
/// and their offsets v − h, P or the P_g where they are formed (never by the jacobian
/// inversion), and the CG report (converged, and iterating wherever
/// there is something to solve). Returns the worst relative error.
pub fn compare_traces(what: &str, params: &Params, batch: &Batch, hyper: &Hyper) -> f64 {
    compare_traces_with(what, params, batch, hyper, GpuOptions::default()).0
}

/// Asserts that two GPU traces hold the same bits: h, v, P (or the P_g), the loss, the
/// per-step error norms and every gradient (two ways of running one computation that
/// must not change a number).
pub fn assert_same_trace(what: &str, got: &Trace, want: &Trace) {
    assert_eq!(got.h, want.h, "{what}: h");
    assert_eq!(got.v, want.v, "{what}: v");
    assert_eq!(got.p_inv, want.p_inv, "{what}: P");
    assert_eq!(got.loss.to_bits(), want.loss.to_bits(), "{what}: loss");
    assert_eq!(got.error_norms, want.error_norms, "{what}: ‖e_t‖");
    for ((name, g), (_, w)) in got.grads.tensors().into_iter().zip(want.grads.tensors()) {
        assert_eq!(g, w, "{what}: ∇{name}");
    }
}

/// One case of a fused backward loop against the two loops it replaces: with `fused`
/// (`Backward::Fused`) the workspace runs one loop and with the same options but
/// `Backward::Separate` two; the fused trace is within `TOL` of the reference and the
/// same bits as the two loops'. Returns the worst relative error against the reference.
pub fn fused_equals_separate(
    what: &str,
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    fused: GpuOptions,
) -> f64 {
    let (e, got) = compare_traces_with(what, params, batch, hyper, fused);
    assert_fused_like_separate(&ctx(), what, (params, batch, hyper), fused, &got);
    e
}

/// Asserts that on `ctx` with `fused` (`Backward::Fused`) the workspace runs one backward
/// loop and with the same options but `Backward::Separate` two, and that `got`, the trace
/// with `fused`, holds the same bits as the two loops' trace.
pub fn assert_fused_like_separate(
    ctx: &Arc<GpuContext>,
    what: &str,
    (params, batch, hyper): (&Params, &Batch, &Hyper),
    fused: GpuOptions,
    got: &Trace,
) {
    use tpri::gpu::one_shot;
    let separate = GpuOptions {
        backward: Backward::Separate,
        ..fused
    };
    assert!(
        one_shot::fused_backward(ctx, params, batch, hyper, fused).unwrap(),
        "{what}: fused"
    );
    assert!(
        !one_shot::fused_backward(ctx, params, batch, hyper, separate).unwrap(),
        "{what}"
    );
    let two = GpuBackend::with_options(Arc::clone(ctx), separate)
        .trace(params, batch, hyper)
        .unwrap();
    assert_same_trace(what, got, &two);
}

/// `compare_traces` with the GPU backend run as `options` say; also returns its trace.
pub fn compare_traces_with(
    what: &str,
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    options: GpuOptions,
) -> (f64, Trace) {
    let want = CpuBackend::new().trace(params, batch, hyper).unwrap();
    let got = GpuBackend::with_options(ctx(), options)
        .trace(params, batch, hyper)
        .unwrap();
    let mut worst = check_all(&format!("h {what}"), &got.h, &want.h, TOL);
    worst = worst.max(check(
        &format!("loss {what}"),
        &scalar(got.loss),
        &scalar(want.loss),
        TOL,
    ));
    assert_eq!(got.grads.cell, want.grads.cell, "{what}: cell");
    for ((name, g), (_, w)) in got.grads.tensors().into_iter().zip(want.grads.tensors()) {
        worst = worst.max(check(&format!("∇{name} {what}"), g, w, TOL));
    }
    worst = worst.max(check(
        &format!("‖e_t‖ {what}"),
        &column(&got.error_norms),
        &column(&want.error_norms),
        TOL,
    ));
    assert_eq!(
        got.step_losses.len(),
        want.step_losses.len(),
        "{what}: per-step losses present"
    );
    if !want.step_losses.is_empty() {
        worst = worst.max(check(
            &format!("ℓ_t {what}"),
            &column(&got.step_losses),
            &column(&want.step_losses),
            TOL,
        ));
    }
    assert_eq!(got.v.is_some(), want.v.is_some(), "{what}: targets present");
    assert_eq!(
        got.p_inv.is_some(),
        want.p_inv.is_some(),
        "{what}: P formed"
    );
    assert_eq!(
        got.p_gates.is_some(),
        want.p_gates.is_some(),
        "{what}: P_g formed"
    );
    if hyper.tp.inversion != Inversion::Analytic {
        assert!(got.p_inv.is_none(), "{what}: no P is formed");
    }
    if let (Some(gp), Some(wp)) = (&got.p_inv, &want.p_inv) {
        worst = worst.max(check(&format!("P {what}"), gp, wp, TOL));
    }
    if let (Some(gp), Some(wp)) = (&got.p_gates, &want.p_gates) {
        worst = worst.max(check_all(&format!("P_r, P_z, P_n {what}"), gp, wp, TOL));
    }
    if let (Some(gv), Some(wv)) = (&got.v, &want.v) {
        worst = worst.max(check_all(&format!("v {what}"), gv, wv, TOL));
        worst = worst.max(check_all(
            &format!("v − h {what}"),
            &offsets(gv, &got.h),
            &offsets(wv, &want.h),
            TOL,
        ));
        let cg = got.cg.expect("TP reports its CG");
        // Forming P (or the P_g) always iterates; solving at every step iterates unless
        // T = 1 leaves no step to solve.
        let solved = got.p_inv.is_some() || got.p_gates.is_some() || got.h.len() > 2;
        assert!(
            cg.residual <= GPU_CG_TOL && (!solved || cg.iterations >= 1),
            "{what}: {cg:?}"
        );
    } else {
        assert!(got.cg.is_none(), "{what}: BP solves nothing");
    }
    eprintln!("{what}: worst relative error {worst:.2e}, CG {:?}", got.cg);
    (worst, got)
}

/// DTP parameters at `seed` (the library's initialisation, W ×0.9, every bias uniform in
/// ±0.3) and a batch of shape `s`, from a stream seeded with `seed`.
pub fn dtp_problem(seed: u64, s: Shape, loss: Loss) -> (Params, Batch) {
    let mut r = rng(seed);
    let mut params = Params::init_dtp(s.dims(), seed).unwrap();
    params.w_hh *= 0.9;
    params.b = random(&mut r, s.d, 1, 0.3);
    params.b_hh = random(&mut r, s.d, 1, 0.3);
    params.head_b = random(&mut r, s.q, 1, 0.3);
    if let Some(rev) = &mut params.dtp {
        rev.b_rev = random(&mut r, s.d, 1, 0.3);
    }
    (params, random_batch(&mut r, s, loss))
}

/// DTP's settings with γ_h `lr_target`, noise σ and the gradient mode `grad`.
pub fn dtp_hyper(loss: Loss, lr_target: f64, noise: f64, grad: TpGrad) -> Hyper {
    let mut hyper = Hyper {
        method: Method::Dtp,
        loss,
        tp: TpConfig {
            lr_target,
            tp_grad: grad,
            ..TpConfig::default()
        },
        opt: OptimizerConfig {
            kind: OptimizerKind::Nesterov,
            lr: 0.05,
            momentum: 0.9,
            ..OptimizerConfig::default()
        },
        ..Hyper::default()
    };
    hyper.dtp.lr_reverse = 0.02;
    hyper.dtp.noise = noise;
    hyper.dtp.noise_seed = 17;
    hyper
}

/// Every quantity of the GPU's trace against the reference's within `TOL` (relative
/// Frobenius; `check` fails on any non-finite value, so an output a kernel left poisoned
/// fails): h, the loss, v and v − h, every gradient with the reverse layer's, the error
/// norms. Returns the worst error.
pub fn compare_dtp(what: &str, got: &Trace, want: &Trace) -> f64 {
    let mut worst = check_all(&format!("h {what}"), &got.h, &want.h, TOL);
    worst = worst.max(check(
        &format!("loss {what}"),
        &scalar(got.loss),
        &scalar(want.loss),
        TOL,
    ));
    let (gv, wv) = (got.v.as_ref().unwrap(), want.v.as_ref().unwrap());
    worst = worst.max(check_all(&format!("v {what}"), &gv[1..], &wv[1..], TOL));
    worst = worst.max(check_all(
        &format!("v − h {what}"),
        &offsets(&gv[1..], &got.h[1..]),
        &offsets(&wv[1..], &want.h[1..]),
        TOL,
    ));
    assert_eq!(got.grads.names(), want.grads.names(), "{what}");
    assert!(
        got.grads.dtp.is_some(),
        "{what}: the reverse layer's gradient"
    );
    for ((name, g), (_, w)) in got.grads.tensors().into_iter().zip(want.grads.tensors()) {
        worst = worst.max(check(&format!("∇{name} {what}"), g, w, TOL));
    }
    worst = worst.max(check(
        &format!("‖e_t‖ {what}"),
        &column(&got.error_norms),
        &column(&want.error_norms),
        TOL,
    ));
    assert!(
        got.p_inv.is_none() && got.cg.is_none(),
        "{what}: DTP solves nothing"
    );
    worst
}

/// What `train_side_by_side` saw: the worst relative loss gap, the most CG iterations of a
/// step, and the reference's parameters after the 50 steps.
pub struct SideBySide {
    pub worst: f64,
    pub cg_most: usize,
    pub params: Params,
}

/// Trains `start` for 50 steps with `hyper` on both backends, on the same adding-task
/// batches (T = 10, B = 8), and checks that the two runs stay together: the loss every
/// fifth step, each accepted CG solve, the evaluation, the parameters and the optimizer's
/// first slot (momentum, or Adam's first moment) after the steps, and the last step's
/// per-step norms, all within 1e-3 relative (see `fifty_training_steps_agree_with_reference`
/// in gpu_iteration.rs for why 1e-3).
pub fn train_side_by_side(start: &Params, hyper: &Hyper, what: &str) -> SideBySide {
    let task = build_task(&TaskSpec::Adding { seq_len: 10 }, 7, 5).unwrap();
    let batches: Vec<_> = (0..50).map(|k| task.train_batch(k, 8).unwrap()).collect();
    let eval_batch = task.eval_batches(5).unwrap().remove(0);
    let mut cpu = CpuBackend::new();
    let mut gpu = GpuBackend::new(ctx());
    cpu.load(start, None, hyper).unwrap();
    gpu.load(start, None, hyper).unwrap();
    let tol = hyper.tp.cg_tol.unwrap_or(GPU_CG_TOL);
    let (mut worst, mut cg_most) = (0.0_f64, 0);
    for (k, b) in batches.iter().enumerate() {
        cpu.step(b).unwrap();
        gpu.step(b).unwrap();
        // Reading every few steps exercises both the lazy and the immediate path.
        if k % 5 == 4 {
            let (c, g) = (cpu.last_stats().unwrap(), gpu.last_stats().unwrap());
            let rel = (g.loss - c.loss).abs() / c.loss;
            assert!(
                rel <= 1e-3,
                "{what} step {k}: loss {} vs {} ({rel:.1e})",
                g.loss,
                c.loss
            );
            assert_eq!(g.cg.is_some(), hyper.method == Method::Tp, "{what}");
            if let Some(cg) = g.cg {
                assert!(cg.residual <= tol, "{what}: {cg:?}");
                cg_most = cg_most.max(cg.iterations);
            }
            worst = worst.max(rel);
        }
    }
    let (ce, ge) = (
        cpu.evaluate(&eval_batch).unwrap(),
        gpu.evaluate(&eval_batch).unwrap(),
    );
    assert!(
        (ge.loss - ce.loss).abs() <= 1e-3 * ce.loss,
        "{what}: eval {ge:?} vs {ce:?}"
    );
    let ((cp, cs), (gp, gs)) = (cpu.state().unwrap(), gpu.state().unwrap());
    assert_eq!((cs.step, gs.step), (50, 50), "{what}");
    for ((name, g), (_, c)) in gp.tensors().into_iter().zip(cp.tensors()) {
        check(&format!("{name} after 50 steps, {what}"), g, c, 1e-3);
    }
    for ((name, g), (_, c)) in gs.m.tensors().into_iter().zip(cs.m.tensors()) {
        check(&format!("first slot of {name}, {what}"), g, c, 1e-3);
    }
    let (cd, gd) = (
        cpu.last_diagnostics().unwrap().unwrap(),
        gpu.last_diagnostics().unwrap().unwrap(),
    );
    check(
        &format!("step norms, {what}"),
        &column(&gd.step_norms),
        &column(&cd.step_norms),
        1e-3,
    );
    SideBySide {
        worst,
        cg_most,
        params: cp,
    }
}
