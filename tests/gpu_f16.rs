//! f16 storage of the histories h and v − h (`gpu::Storage::F16`) on the GPU backend
//! against the f64 CPU reference and against the f32 path.
//!
//! What F16 changes: every value of h and of v − h is rounded to f16 where a kernel stores
//! it (round to nearest even with the integer code of shaders/include/f16_bits.wgsl; with
//! WGSL's `f16` where the adapter has SHADER_F16, which may round either way) and read
//! back exactly; arithmetic stays f32, and the two recursions that write the histories
//! (forward pass, target sweep) run on their f32 values, never on what they stored. So:
//!
//! - `f16_storage_rounds_each_stored_value_once` checks that exactly (integer conversions,
//!   whose rounding is known): h is the f32 path's h rounded to nearest, and every kernel, run in f64 on the very values the f16 path
//!   stored, gives what the f16 path gave to the f32 tolerance TOL — the sweep's v − h up
//!   to its own rounding (one more u).
//! - `f16_storage_traces_match_reference_within_unit_roundoff_bounds` bounds the error
//!   against the f64 reference a priori, from f16's unit roundoff u = 2⁻¹¹ (see
//!   `f16_bound`), and checks the f16 path is the one taken (its error on h exceeds f32's).
//! - `native_f16_conversions_store_what_the_integer_code_stores` ties the native path to
//!   the integer one, value by value.

use std::sync::Arc;

mod gpu_support;
mod support;

use nalgebra::DMatrix;
use tpri::backend::{Backend, Trace};
use tpri::check::amplification;
use tpri::config::{Hyper, Inversion, Loss, Method, Solver, TargetMode, TpGrad};
use tpri::cpu::CpuBackend;
use tpri::gpu::{GpuBackend, Storage};
use tpri::kernel_io::Injection;
use tpri::model::{CellKind, Params};
use tpri::tasks::Batch;

use gpu_support::{analytic_tp, ctx, hyper, integer_f16_ctx, packing_options, TOL};
use support::{
    check, check_all, column, dims, offsets, random, random_batch, rel_err, rng, scalar,
    seeded_params, stacked, Shape,
};

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
    let mut out = vec![
        ("h", stacked(&t.h)),
        ("loss", scalar(t.loss)),
        ("‖e_t‖", column(&t.error_norms)),
    ];
    out.extend(
        t.grads
            .tensors()
            .into_iter()
            .map(|(name, g)| (name, g.clone())),
    );
    if let Some(v) = &t.v {
        out.push(("v − h", stacked(&offsets(v, &t.h))));
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
fn f16_problem(i: usize, case: &F16Case) -> (Params, Batch, Hyper) {
    let &(d, t, b, method, mode, grad, loss, lr_target) = case;
    let shape = Shape::new(b, t, 3, d, 4);
    // W orthogonal·0.9 plus noise, as `gpu_support::start` but with the noise drawn apart.
    let mut p = seeded_params(CellKind::Tanh, shape.dims(), 60 + i as u64, 0.9);
    p.w_hh += random(&mut rng(i as u64), d, d, 0.3 / (d as f64).sqrt());
    let mut h = hyper(Inversion::Analytic, method, mode, grad, loss);
    h.tp.lr_target = lr_target;
    (p, random_batch(&mut rng(50 + i as u64), shape, loss), h)
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
/// TP-RI's backward pass in one loop (sweep_bptt.wgsl) with f16 storage against the two
/// loops it fuses: the same trace bit for bit (h, v, P, every gradient, the per-step error
/// norms), over sizes off the workgroup grid (d odd, so that the last word of a row of dv
/// pairs a unit with padding), both offset modes, lanes per unit, several sequences per
/// workgroup, launches of a few steps, and the published γ_h = 1e-4, where dv is stored
/// scaled by a power of two; with the adapter's f16 conversions and with the integer code.
/// The loop pairs each row's offsets in words itself and injects them rounded, as the
/// separate BPTT reads them back. (Its error against the reference is
/// `f16_storage_traces_match_reference_within_unit_roundoff_bounds`', which runs it.)
#[test]
fn f16_fused_backward_equals_the_two_loops_bit_for_bit() {
    use tpri::gpu::Backward;
    use TargetMode::{Difference as Diff, Linearized as Lin};
    // (d, T, B, mode, lanes, sequences per workgroup, steps per launch, γ_h)
    let cases = [
        (1, 9, 1, Lin, 1, 1, None, 0.5),
        (7, 33, 7, Diff, 2, 2, Some(5), 0.5),
        (33, 20, 7, Lin, 1, 2, Some(3), 1e-4),
        (100, 17, 3, Lin, 2, 1, Some(4), 1e-4),
        (101, 12, 3, Diff, 1, 1, None, 0.5),
        (200, 7, 3, Lin, 1, 1, Some(2), 0.5),
    ];
    for (i, &(d, t, b, mode, lanes, seqs, k, lr_target)) in cases.iter().enumerate() {
        let what = format!(
            "f16 fused backward d={d} T={t} B={b} {mode:?} L={lanes} S={seqs} K={k:?} γ_h={lr_target}"
        );
        let shape = Shape::new(b, t, 3, d, 4);
        let p = gpu_support::start(CellKind::Tanh, shape.dims(), 40 + i as u64, 0.3);
        let batch = random_batch(&mut rng(60 + i as u64), shape, Loss::CrossEntropy);
        let mut h = analytic_tp(mode);
        h.tp.lr_target = lr_target;
        let fused = packing_options(Storage::F16, (lanes, seqs), k, Backward::Fused);
        let want = CpuBackend::new().trace(&p, &batch, &h).unwrap();
        // The adapter's conversions (native f16 where it has them) and the integer code.
        for gpu in [ctx(), integer_f16_ctx()] {
            let what = format!("{what} ({:?} conversions)", gpu.f16_conversions());
            let got = GpuBackend::with_options(Arc::clone(&gpu), fused)
                .trace(&p, &batch, &h)
                .unwrap();
            gpu_support::assert_fused_like_separate(&gpu, &what, (&p, &batch, &h), fused, &got);
            let e = rel_err(&format!("∇W {what}"), &got.grads.w_hh, &want.grads.w_hh);
            eprintln!("{what}: ∇W {e:.2e} against the reference");
        }
    }
}

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
            None => {
                tpri::cpu::bptt::bptt(&p, &batch.x, h, Injection::Top(&head.grad_h), true).unwrap()
            }
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
                )
                .unwrap();
                // One rounding of each stored offset (≤ u), on top of f32 arithmetic.
                check_all(
                    &format!("v − h {what}"),
                    &offsets(v, h),
                    &offsets(&want_v, h),
                    U16 + TOL,
                );
                tpri::cpu::bptt::bptt(&p, &batch.x, h, Injection::Targets(v), through_time).unwrap()
            }
        };
        check(&format!("∇W {what}"), &got.grads.w_hh, &rnn.w_hh, TOL);
        check(&format!("∇U {what}"), &got.grads.w_ih, &rnn.w_ih, TOL);
        check(&format!("∇b {what}"), &got.grads.b, &rnn.b, TOL);
        check(
            &format!("‖e_t‖ {what}"),
            &column(&got.error_norms),
            &column(&rnn.error_norms),
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
    let shape = Shape::new(7, 20, 3, 33, 4);
    let b = random_batch(&mut rng(77), shape, Loss::CrossEntropy);
    for (method, lr_target) in [(Method::Tp, 0.5), (Method::Tp, 1e-4), (Method::Bp, 0.5)] {
        let mut hyper = hyper(
            Inversion::Analytic,
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        hyper.tp.lr_target = lr_target;
        let start = seeded_params(CellKind::Tanh, shape.dims(), 8, 1.0);
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
        let e = check(
            &format!("{what} step norms"),
            &column(&got.step_norms),
            &column(&want.step_norms),
            f16_bound("step norms", amp),
        );
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
    let dims = dims(3, 5, 4);
    let b = random_batch(&mut rng(5), Shape::new(2, 3, 3, 5, 4), Loss::CrossEntropy);
    let bp = hyper(
        Inversion::Analytic,
        Method::Bp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    // Solver auto, at most 16 CG iterations per step.
    let jacobian = hyper(
        Inversion::Jacobian,
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    let gru = Params::init_of(CellKind::Gru, dims, 3).unwrap();
    let tanh = seeded_params(CellKind::Tanh, dims, 3, 1.0);
    let refused = [
        ("GRU, BP", &gru, &bp, "the GRU cell"),
        (
            "GRU, jacobian",
            &gru,
            &jacobian,
            "the GRU cell with Inversion::Jacobian",
        ),
        ("tanh, jacobian", &tanh, &jacobian, "Inversion::Jacobian"),
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
/// 1e-2 and the published pixel-MNIST one 1e-4, and for BP, each within its bound; with
/// `--nocapture` it prints the table of docs/PERFORMANCE.md.
#[test]
fn f16_storage_error_at_the_papers_size() {
    use tpri::bench::{problem, Case, Size};
    use tpri::model::CellKind;
    let runs = [(Method::Tp, 1e-2), (Method::Tp, 1e-4), (Method::Bp, 1e-2)];
    for (method, lr_target) in runs {
        let (p, batch, mut hyper) =
            problem(Size::PAPER, Case::of(CellKind::Tanh, method), 1).unwrap();
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
