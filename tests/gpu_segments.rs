//! Bounded segments (docs/PERFORMANCE.md, "Bounded segments"): every long loop of the GPU
//! backend runs as launches of bounded work, its state kept in buffers between them.
//!
//! - With the quota forced small (`--steps-per-dispatch` K = 1, 3, 7 at T = 10, which no
//!   K > 1 divides), every cell, inversion, solver, target mode and method traces as the
//!   f64 reference does, and its states h, targets v, P and per-step norms are bit for bit
//!   those of the same trace in as few launches as the adapter allows: what a segment hands
//!   on is the f32 value the loop holds, never a rounded copy. Only the reductions over
//!   T·B rows change their order of summation, within f32 rounding.
//! - f16 storage splits the same way without rounding what is carried.
//! - Shapes past llvmpipe's loop cap — which the backend refused before segments — run and
//!   agree with the reference, each with at least one launch that spends its whole quota,
//!   so that a loop-count model that undercounted would be caught by the driver truncating
//!   the launch.
//! - DTP splits the same way at T = 7 and 17 (K = 1, 3).
//! - The tanh RNN's time loops with several sequences per workgroup split the same way,
//!   bit for bit as with one, and pass llvmpipe's cap as their loop-count models allow.
//! - Their blocks of steps (`--steps-per-block` 1, 3, 8) give the bits of the adapter's own.
//! - Every cell, inversion and solver, DTP and the heads at every step at T = 784,
//!   d = 100, B = 16 (the paper's size), each path in the launches the adapter picks
//!   (about 20 s together on lavapipe; `--nocapture` prints each path's time and error).

mod gpu_support;
mod support;

use std::num::NonZeroUsize;

use gpu_support::{
    analytic_tp, compare_dtp, compare_traces, compare_traces_with, ctx, dtp_hyper, dtp_problem,
    hyper, start,
};
use support::{
    check, check_all, dims, embed, inputs, random, random_batch, rng, seeded_params, Shape,
};
use tpri::backend::{Backend, Trace};
use tpri::config::{Hyper, Inversion, Loss, Method, Solver, TargetMode, TpGrad};
use tpri::cpu::{self, CpuBackend};
use tpri::gpu::{
    self, GpuBackend, GpuOptions, LanesPerUnit, SequencesPerWorkgroup, StepsPerBlock,
    StepsPerDispatch, Storage,
};
use tpri::kernel_io::Injection;
use tpri::model::CellKind;

/// At most `k` steps per launch.
fn fixed(storage: Storage, k: usize) -> GpuOptions {
    GpuOptions {
        storage,
        steps_per_dispatch: StepsPerDispatch::Fixed(NonZeroUsize::new(k).unwrap()),
        ..GpuOptions::default()
    }
}

/// As few launches as the adapter allows (on llvmpipe, its loop cap still splits).
fn unsplit(storage: Storage) -> GpuOptions {
    fixed(storage, usize::MAX)
}

/// Asserts that `got` and `want` hold the same bits: h, v, P and the per-step norms.
fn assert_same_bits(what: &str, got: &Trace, want: &Trace) {
    assert_eq!(got.h, want.h, "{what}: h");
    assert_eq!(got.v, want.v, "{what}: v");
    assert_eq!(got.p_inv, want.p_inv, "{what}: P");
    assert_eq!(got.error_norms, want.error_norms, "{what}: ‖e_t‖");
    assert_eq!(got.cg, want.cg, "{what}: CG report");
}

/// Every cell × inversion × solver × method, with target modes and gradient modes spread
/// over them, and outputs at every step, at T = 10 split into launches of K = 1, 3, 7 steps
/// (and CG units, and K·B reduction rows): within `TOL` of the reference, and bit for bit
/// the unsplit trace.
#[test]
fn segmented_traces_match_reference_and_the_unsplit_run() {
    use CellKind::{Gru, Tanh};
    use Inversion::{Analytic as An, Jacobian as Jac};
    use Loss::{CrossEntropy as Ce, Mse};
    use Method::{Bp, Tp};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    let cases = [
        (Tanh, An, Solver::Cg, 7, 3, Tp, Lin, Tt, Ce),
        (Tanh, An, Solver::Cg, 9, 2, Tp, Diff, Local, Mse),
        (Tanh, An, Solver::Cg, 5, 3, Tp, Plain, Tt, Ce),
        (Tanh, An, Solver::PerStep, 7, 3, Tp, Lin, Tt, Mse),
        (Tanh, Jac, Solver::Auto, 7, 3, Tp, Lin, Tt, Ce),
        (Tanh, An, Solver::Auto, 7, 3, Bp, Lin, Tt, Mse),
        (Gru, Jac, Solver::Auto, 7, 3, Tp, Lin, Tt, Mse),
        (Gru, Jac, Solver::Auto, 6, 2, Tp, Lin, Local, Ce),
        (Gru, Jac, Solver::Auto, 7, 3, Bp, Lin, Tt, Ce),
        (Gru, Inversion::PerGate, Solver::Cg, 7, 3, Tp, Lin, Tt, Ce),
        (
            Gru,
            Inversion::PerGate,
            Solver::Cg,
            9,
            2,
            Tp,
            Lin,
            Local,
            Mse,
        ),
        // Outputs at every step: the heads' products and the per-step losses split too.
        (
            Tanh,
            An,
            Solver::Cg,
            7,
            3,
            Tp,
            Lin,
            Tt,
            Loss::CrossEntropySeq,
        ),
        (
            Tanh,
            An,
            Solver::Auto,
            7,
            3,
            Bp,
            Lin,
            Tt,
            Loss::CrossEntropySeq,
        ),
    ];
    for (i, &(cell, inversion, solver, d, b, method, mode, grad, loss)) in cases.iter().enumerate()
    {
        let shape = Shape::new(b, 10, 3, d, 4);
        let w_noise = if (cell, inversion) == (Tanh, An) {
            0.3
        } else {
            0.0
        };
        let p = start(cell, shape.dims(), 200 + i as u64, w_noise);
        let batch = random_batch(&mut rng(210 + i as u64), shape, loss);
        let mut h = hyper(inversion, method, mode, grad, loss);
        h.tp.solver = solver;
        if solver == Solver::PerStep {
            h.tp.cg_max_iter = 16;
        }
        let what = format!(
            "({cell:?}, {inversion:?}, {solver:?}, d={d}, B={b}, {method:?}, {mode:?}, {grad:?})"
        );
        let whole = GpuBackend::with_options(ctx(), unsplit(Storage::F32))
            .trace(&p, &batch, &h)
            .unwrap();
        for k in [1, 3, 7] {
            let what = format!("{what} K={k}");
            let (_, got) = compare_traces_with(&what, &p, &batch, &h, fixed(Storage::F32, k));
            assert_same_bits(&what, &got, &whole);
        }
    }
}

/// f16 storage of the histories, split into launches of K = 1 and 4 steps: the same stored
/// bits as unsplit, since the forward pass and the sweep hand their running vector on in
/// f32 (a rounded copy would round once more per segment).
#[test]
fn f16_storage_splits_without_rounding_the_carried_state() {
    let shape = Shape::new(3, 10, 3, 9, 4);
    let p = start(CellKind::Tanh, shape.dims(), 230, 0.3);
    let batch = random_batch(&mut rng(231), shape, Loss::CrossEntropy);
    for mode in [TargetMode::Linearized, TargetMode::Plain] {
        let mut h = analytic_tp(mode);
        h.tp.lr_target = 0.01;
        let trace = |options| {
            GpuBackend::with_options(ctx(), options)
                .trace(&p, &batch, &h)
                .unwrap()
        };
        let whole = trace(unsplit(Storage::F16));
        for k in [1, 4] {
            assert_same_bits(
                &format!("f16 {mode:?} K={k}"),
                &trace(fixed(Storage::F16, k)),
                &whole,
            );
        }
    }
}

/// DTP split into launches of K = 1 and 3 steps at T = 7 and 17 (the reverse layer's
/// columns, its reductions and the target sweep, which hands its offsets on in `carry`):
/// within `TOL` of the reference, and bit for bit the unsplit trace.
#[test]
fn dtp_segments_match_reference_and_the_unsplit_run() {
    for (i, (t, noise)) in [(7, 0.0), (17, 0.1)].into_iter().enumerate() {
        let s = Shape::new(3, t, 2, 7, 3);
        let (params, batch) = dtp_problem(280 + i as u64, s, Loss::CrossEntropy);
        let h = dtp_hyper(Loss::CrossEntropy, 0.3, noise, TpGrad::ThroughTime);
        let want = CpuBackend::new().trace(&params, &batch, &h).unwrap();
        let trace = |options| {
            GpuBackend::with_options(ctx(), options)
                .trace(&params, &batch, &h)
                .unwrap()
        };
        let whole = trace(unsplit(Storage::F32));
        for k in [1, 3] {
            let what = format!("DTP T={t} σ={noise} K={k}");
            let got = trace(fixed(Storage::F32, k));
            let worst = compare_dtp(&what, &got, &want);
            assert_same_bits(&what, &got, &whole);
            eprintln!("{what}: worst relative error {worst:.2e}");
        }
    }
}

/// The tanh RNN's analytic inversion with linearized targets, gradients through time and
/// a cross-entropy head: the settings of the long-loop checks below.
fn tanh_ce(method: Method) -> Hyper {
    hyper(
        Inversion::Analytic,
        method,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    )
}

/// The tanh RNN far past the T ≈ 2800 at which llvmpipe's loop cap stopped the unsplit
/// forward pass: TP (the solve for P, the sweep, the backward recursion) and BP at
/// T = 6000 in launches as long as the loop-count model allows there, each but the last
/// spending its whole quota. At d = 103 (d % 8 = 7) the model's dot products leave no
/// slack: before barriers were charged, llvmpipe cut the forward pass short there.
#[test]
fn tanh_iteration_past_the_loop_cap_matches_reference() {
    let shape = Shape::new(1, 6000, 1, 103, 3);
    let batch = random_batch(&mut rng(240), shape, Loss::CrossEntropy);
    let p = start(CellKind::Tanh, shape.dims(), 241, 0.0);
    for method in [Method::Tp, Method::Bp] {
        let h = tanh_ce(method);
        compare_traces(&format!("(T=6000, d=103, {method:?})"), &p, &batch, &h);
    }
}

/// The one-shot forward pass (the adapter's own quota) at T = 6000: h of every step.
#[test]
fn forward_past_the_loop_cap_matches_reference() {
    let params = seeded_params(CellKind::Tanh, dims(1, 100, 10), 250, 1.0);
    let x = inputs(&mut rng(251), 6000, 2, 1);
    let want = cpu::forward::forward(&params, &x).unwrap();
    let got = gpu::one_shot::forward(&ctx(), &params, &x).unwrap();
    check_all("h (T=6000, d=100, B=2)", &got, &want, gpu_support::TOL);
}

/// The forward pass with 2 and 8 sequences per workgroup (forced; llvmpipe's own choice
/// is 1) at T = 3000 and d = 103 (d % 8 = 7: the dot products' rests leave the model no
/// slack), at the adapter's quota for that count: gpu::loops charges the packed loops, so
/// no launch passes llvmpipe's cap and every step of every sequence matches the reference.
#[test]
fn packed_forward_past_the_loop_cap_matches_reference() {
    let params = seeded_params(CellKind::Tanh, dims(1, 103, 10), 252, 1.0);
    let x = inputs(&mut rng(253), 3000, 9, 1);
    let want = cpu::forward::forward(&params, &x).unwrap();
    for b in [2, 8] {
        let options = GpuOptions {
            sequences_per_workgroup: SequencesPerWorkgroup::fixed(b).unwrap(),
            ..GpuOptions::default()
        };
        let got = gpu::one_shot::forward_with(&ctx(), &params, &x, options).unwrap();
        check_all(
            &format!("h (b={b}, T=3000, d=103, B=9)"),
            &got,
            &want,
            gpu_support::TOL,
        );
    }
}

/// The GRU's forward pass and backward recursion with 2 and 4 lanes per unit at T = 3000
/// and d = 103 (d % 8 = 7), at the adapter's quota for them: gpu::loops charges the lanes'
/// partial sums, the finishers' loop over them and the step's second barrier, so no
/// launch passes llvmpipe's cap and every step matches the reference (states, and the
/// gradients of BP's recursion through all 3000 steps).
#[test]
fn gru_loops_with_lanes_past_the_loop_cap_match_reference() {
    let params = start(CellKind::Gru, dims(1, 103, 10), 254, 0.0);
    let mut r = rng(255);
    let x = inputs(&mut r, 3000, 2, 1);
    let h = cpu::gru::gru_forward(&params, &x).unwrap();
    let g_top = random(&mut r, 2, 103, 0.5);
    let top = Injection::Top(&g_top);
    let want = cpu::gru::gru_bptt(&params, &x, &h, top, true).unwrap();
    for l in [2, 4] {
        let options = GpuOptions {
            lanes_per_unit: LanesPerUnit::fixed(l).unwrap(),
            ..GpuOptions::default()
        };
        let what = |n: &str| format!("{n} ({l} lanes, T=3000, d=103, B=2)");
        let (got, _) = gpu::one_shot::gru_forward_gates_with(&ctx(), &params, &x, options).unwrap();
        check_all(&what("h"), &got, &h, gpu_support::TOL);
        let got = gpu::one_shot::gru_bptt_with(&ctx(), &params, &x, &h, (top, true), options);
        let got = got.unwrap();
        check(
            &what("∇w_hh"),
            &got.rnn.w_hh,
            &want.rnn.w_hh,
            gpu_support::TOL,
        );
        check(
            &what("∇w_ih"),
            &got.rnn.w_ih,
            &want.rnn.w_ih,
            gpu_support::TOL,
        );
        check(&what("∇b_hh"), &got.b_hh, &want.b_hh, gpu_support::TOL);
    }
}

/// b sequences per workgroup in launches of K steps.
fn packed(storage: Storage, k: usize, b: usize) -> GpuOptions {
    GpuOptions {
        sequences_per_workgroup: SequencesPerWorkgroup::fixed(b).unwrap(),
        ..fixed(storage, k)
    }
}

/// The tanh RNN's three time loops (forward pass, target sweep, backward recursion) with
/// 2 and 4 sequences per workgroup at B = 7 (the last workgroup short), in launches of
/// K = 3 steps at T = 10, so that the states, offsets and δ of several sequences are
/// carried between launches: every target mode, BP, DTP, outputs at every step, local
/// gradients, and f16 storage. Within `TOL` of the reference (f32 storage), and bit for bit
/// the trace with one sequence per workgroup: each sequence's sums are formed in the same
/// order whatever b.
#[test]
fn packed_time_loops_match_reference_and_one_sequence_per_workgroup() {
    use Loss::{CrossEntropy as Ce, CrossEntropySeq as Seq, Mse};
    use Method::{Bp, Tp};
    use Storage::{F16, F32};
    use TargetMode::{Difference as Diff, Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    let shape = Shape::new(7, 10, 3, 9, 4);
    let p = start(CellKind::Tanh, shape.dims(), 260, 0.3);
    let cases = [
        (Tp, Lin, Tt, Ce, F32),
        (Tp, Diff, Local, Mse, F32),
        (Tp, Plain, Tt, Ce, F32),
        (Bp, Lin, Tt, Mse, F32),
        (Tp, Lin, Tt, Seq, F32),
        (Bp, Lin, Tt, Seq, F32),
        (Tp, Lin, Tt, Ce, F16),
        (Tp, Plain, Tt, Ce, F16),
    ];
    for (i, &(method, mode, grad, loss, storage)) in cases.iter().enumerate() {
        let batch = random_batch(&mut rng(261 + i as u64), shape, loss);
        let mut h = hyper(Inversion::Analytic, method, mode, grad, loss);
        if storage == F16 {
            // Offsets well inside f16's range, as in the f16 test above.
            h.tp.lr_target = 0.01;
        }
        let what = format!("({method:?}, {mode:?}, {grad:?}, {loss:?}, {storage})");
        let trace = |options| {
            GpuBackend::with_options(ctx(), options)
                .trace(&p, &batch, &h)
                .unwrap()
        };
        let one = trace(packed(storage, 3, 1));
        for b in [2, 4] {
            let what = format!("{what} b={b} K=3");
            let got = if storage == F32 {
                compare_traces_with(&what, &p, &batch, &h, packed(storage, 3, b)).1
            } else {
                trace(packed(storage, 3, b))
            };
            assert_same_bits(&what, &got, &one);
        }
    }
    // DTP's backward recursion divides the injection by B.
    let s = Shape::new(7, 10, 2, 7, 3);
    let (params, batch) = dtp_problem(270, s, Loss::CrossEntropy);
    let h = dtp_hyper(Loss::CrossEntropy, 0.3, 0.0, TpGrad::ThroughTime);
    let want = CpuBackend::new().trace(&params, &batch, &h).unwrap();
    let trace = |options| {
        GpuBackend::with_options(ctx(), options)
            .trace(&params, &batch, &h)
            .unwrap()
    };
    let one = trace(packed(Storage::F32, 3, 1));
    for b in [2, 4] {
        let what = format!("DTP b={b} K=3");
        let got = trace(packed(Storage::F32, 3, b));
        compare_dtp(&what, &got, &want);
        assert_same_bits(&what, &got, &one);
    }
}

/// b sequences per workgroup and l lanes per unit in launches of K steps.
fn lanes(storage: Storage, k: usize, b: usize, l: usize) -> GpuOptions {
    GpuOptions {
        lanes_per_unit: LanesPerUnit::fixed(l).unwrap(),
        ..packed(storage, k, b)
    }
}

/// Lanes per unit (each unit's dot product split over L invocations) in the tanh RNN's
/// three time loops: L = 1, 2, 4, 8, 16 wherever L·d fits the adapter's workgroup, at
/// d = 1, 7, 33, 100, 257 (eight-term chunks with rests of every length, and lanes left
/// without a block), with 2 sequences per workgroup where L·2·d fits the kernels' workgroup
/// memory, at B = 3 (the last workgroup short), in launches of K = 4 steps at T = 6 (the
/// states, offsets and δ carried once): TP and BP within `TOL` of the reference, and at
/// d = 33 also plain targets (the sweep's finishers subtract h_{t−1}) with local gradients
/// (the backward recursion without its product) and outputs at every step. At every L the
/// sequences per workgroup change no result: b = 2 gives the bits of b = 1.
#[test]
fn lanes_per_unit_match_reference_and_pack_like_one_sequence() {
    use Loss::{CrossEntropy as Ce, CrossEntropySeq as Seq, Mse};
    use Method::{Bp, Tp};
    use TargetMode::{Linearized as Lin, Plain};
    use TpGrad::{Local, ThroughTime as Tt};
    let max = ctx().max_invocations_per_workgroup();
    for (i, d) in [1, 7, 33, 100, 257].into_iter().enumerate() {
        let shape = Shape::new(3, 6, 2, d, 3);
        let p = start(CellKind::Tanh, shape.dims(), 300 + i as u64, 0.3);
        let mut cases = vec![(Tp, Lin, Tt, Ce), (Bp, Lin, Tt, Mse)];
        if d == 33 {
            cases.push((Tp, Plain, Local, Seq));
        }
        for (j, &(method, mode, grad, loss)) in cases.iter().enumerate() {
            let batch = random_batch(&mut rng(310 + (10 * i + j) as u64), shape, loss);
            let h = hyper(Inversion::Analytic, method, mode, grad, loss);
            for l in [1, 2, 4, 8, 16] {
                if l > 1 && l * d > max {
                    continue;
                }
                let b = if 2 * l * d <= gpu::MAX_HIDDEN { 2 } else { 1 };
                let what =
                    format!("(d={d}, L={l}, b={b}, {method:?}, {mode:?}, {grad:?}, {loss:?})");
                let (_, got) =
                    compare_traces_with(&what, &p, &batch, &h, lanes(Storage::F32, 4, b, l));
                if b > 1 {
                    let one = GpuBackend::with_options(ctx(), lanes(Storage::F32, 4, 1, l))
                        .trace(&p, &batch, &h)
                        .unwrap();
                    assert_same_bits(&what, &got, &one);
                }
            }
        }
    }
}

/// Blocks of at most 1, 3 and 8 steps (`--steps-per-block`) against the adapter's own
/// (`auto`) in the tanh RNN's three time loops: TP-RI (the fused backward loop) and BP at
/// d = 33 with 1 and 2 lanes per unit and 1 and 2 sequences per workgroup, T = 45 in
/// launches of K = 13 steps, so that blocks end inside launches and launches inside
/// blocks' spans. Within `TOL` of the reference, and every state, target, norm and gradient
/// bit for bit the trace with `auto`: blocks change when values are loaded and stored,
/// never what is computed.
#[test]
fn steps_per_block_change_no_bit() {
    use Method::{Bp, Tp};
    use {Loss::CrossEntropy as Ce, TargetMode::Linearized as Lin, TpGrad::ThroughTime as Tt};
    let shape = Shape::new(3, 45, 2, 33, 3);
    let p = start(CellKind::Tanh, shape.dims(), 330, 0.3);
    for (j, method) in [Tp, Bp].into_iter().enumerate() {
        let batch = random_batch(&mut rng(331 + j as u64), shape, Ce);
        let h = hyper(Inversion::Analytic, method, Lin, Tt, Ce);
        for (l, b) in [(1, 1), (2, 1), (1, 2)] {
            let blocks = |k: Option<usize>| GpuOptions {
                steps_per_block: k
                    .map_or(StepsPerBlock::Auto, |k| StepsPerBlock::fixed(k).unwrap()),
                ..lanes(Storage::F32, 13, b, l)
            };
            let own = GpuBackend::with_options(ctx(), blocks(None))
                .trace(&p, &batch, &h)
                .unwrap();
            for k in [1, 3, 8] {
                let what = format!("({method:?}, L={l}, b={b}, blocks of {k})");
                let (_, got) = compare_traces_with(&what, &p, &batch, &h, blocks(Some(k)));
                assert_same_bits(&what, &got, &own);
                assert_eq!(got.loss, own.loss, "{what}: loss");
                for ((name, g), (_, w)) in got.grads.tensors().into_iter().zip(own.grads.tensors())
                {
                    assert_eq!(g, w, "{what}: ∇{name}");
                }
            }
        }
    }
}

/// A TP iteration (forward pass, target sweep, backward recursion) and BP with 2 and 8
/// sequences per workgroup, and with 2 sequences of 4 lanes per unit (forced, whatever
/// llvmpipe's own choice) at T = 3000 and d = 103 (d % 8 = 7: the dot products' rests
/// leave the models no slack), at the adapter's quotas for that packing: gpu::loops charges
/// the packed loops and the lanes' extra loops and barrier, so no launch passes llvmpipe's
/// cap.
#[test]
fn packed_iteration_past_the_loop_cap_matches_reference() {
    let shape = Shape::new(9, 3000, 1, 103, 3);
    let batch = random_batch(&mut rng(262), shape, Loss::CrossEntropy);
    let p = start(CellKind::Tanh, shape.dims(), 263, 0.0);
    for method in [Method::Tp, Method::Bp] {
        let h = tanh_ce(method);
        for (b, l) in [(2, 1), (8, 1), (2, 4)] {
            let options = lanes(Storage::F32, usize::MAX, b, l);
            let what = format!("(T=3000, d=103, B=9, b={b}, L={l}, {method:?})");
            compare_traces_with(&what, &p, &batch, &h, options);
        }
    }
}

/// f16 storage's one backward loop (sweep_bptt.wgsl, whose stores of dv pair two units a
/// word after each step's barrier) at T = 3000 and d = 103, with 1 and 2 sequences per
/// workgroup, in launches as long as the loop-count model allows on the adapter: the same
/// bits as in launches of 40 steps, far under llvmpipe's cap. A launch the cap cut short
/// would leave steps out, and the two would differ.
#[test]
fn f16_fused_loop_past_the_loop_cap_matches_short_launches() {
    let shape = Shape::new(9, 3000, 1, 103, 3);
    let batch = random_batch(&mut rng(264), shape, Loss::CrossEntropy);
    let p = start(CellKind::Tanh, shape.dims(), 265, 0.0);
    let mut h = tanh_ce(Method::Tp);
    // Offsets well inside f16's range, as in the f16 tests above.
    h.tp.lr_target = 0.01;
    for b in [1, 2] {
        let (quota, short) = (
            packed(Storage::F16, usize::MAX, b),
            packed(Storage::F16, 40, b),
        );
        let what = format!("f16 fused loop (T=3000, d=103, B=9, b={b})");
        assert!(
            gpu::one_shot::fused_backward(&ctx(), &p, &batch, &h, quota).unwrap(),
            "{what}: fused"
        );
        let trace = |options| {
            GpuBackend::with_options(ctx(), options)
                .trace(&p, &batch, &h)
                .unwrap()
        };
        assert_same_bits(&what, &trace(quota), &trace(short));
    }
}

/// The jacobian sweep's per-step CG of both cells over T = 150 steps: about 1000 CG units
/// per sequence (six iterations and a set-up per step), more than one launch may spend
/// under llvmpipe's cap (about 460 for the GRU, 780 for the tanh RNN at d = 100), so the
/// first launch spends its whole quota on real iterations. Unsplit, a sweep whose worst
/// case (T − 1)·cg_max_iter iterations passed the cap was refused.
#[test]
fn jacobian_sweeps_past_the_loop_cap_match_reference() {
    for cell in [CellKind::Gru, CellKind::Tanh] {
        let shape = Shape::new(2, 150, 3, 100, 4);
        let p = start(cell, shape.dims(), 260, 0.0);
        let batch = random_batch(&mut rng(261), shape, Loss::CrossEntropy);
        let mut h = hyper(
            Inversion::Jacobian,
            Method::Tp,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        h.tp.cg_max_iter = 100;
        compare_traces(
            &format!("({cell:?} jacobian, T=100, d=100)"),
            &p,
            &batch,
            &h,
        );
    }
}

/// The kernels main added unsplit, past llvmpipe's loop cap (they were refused there
/// before they ran in segments), each in launches as long as the loop-count model allows:
/// the per-gate sweep at T = 1400, d = 103 (95 loop iterations a step by the model, as at
/// d = 100: launches of 689, 689 and 21 steps; with its earlier six barriers a step, at
/// d = 100 the driver cut a launch short from 772 steps on), with the GRU's forward pass
/// and backward recursion (whose model missed the
/// driver's count of its barriers: it allowed 828 steps a launch, and ∇W came back NaN
/// here), DTP's target sweep at T = 2000, d = 33, p = 3 (45 a step: 1456 and 543), and
/// the per-step losses of the heads at every step at T = 70 000, B = 1 (65 433 and 4567),
/// whose products reduce over 70 000 rows.
#[test]
fn per_gate_dtp_and_every_step_heads_past_the_loop_cap_match_reference() {
    let s = Shape::new(1, 1400, 3, 103, 4);
    let p = start(CellKind::Gru, s.dims(), 290, 0.0);
    let batch = random_batch(&mut rng(291), s, Loss::CrossEntropy);
    let h = hyper(
        Inversion::PerGate,
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    compare_traces("(GRU per-gate, T=1400, d=103)", &p, &batch, &h);

    let s = Shape::new(1, 2000, 3, 33, 2);
    let (params, batch) = dtp_problem(292, s, Loss::CrossEntropy);
    let h = dtp_hyper(Loss::CrossEntropy, 0.3, 0.1, TpGrad::ThroughTime);
    let want = CpuBackend::new().trace(&params, &batch, &h).unwrap();
    let got = GpuBackend::new(ctx()).trace(&params, &batch, &h).unwrap();
    compare_dtp("(DTP, T=2000, d=33)", &got, &want);

    let s = Shape::new(1, 70_000, 1, 3, 3);
    let p = start(CellKind::Tanh, s.dims(), 293, 0.0);
    let batch = random_batch(&mut rng(294), s, Loss::CrossEntropySeq);
    let h = hyper(
        Inversion::Analytic,
        Method::Bp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropySeq,
    );
    compare_traces("(heads at every step, T=70000)", &p, &batch, &h);
}

/// A trained embedding table's per-token sums (embedding_grad.wgsl) loop over the rows of
/// δ holding each token: split into launches of K·B rows (K = 1, 3 at T = 10), and past
/// llvmpipe's loop cap with two tokens over T·B = 140 000 rows (about 70 000 each, so that
/// a token's sum alone passes the cap), against the reference, ∇E included.
#[test]
fn trained_embedding_sums_split_and_pass_the_loop_cap() {
    let loss = Loss::CrossEntropySeq;
    let bp = hyper(
        Inversion::Analytic,
        Method::Bp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        loss,
    );
    let s = Shape::new(3, 10, 4, 7, 5);
    let mut params = start(CellKind::Tanh, s.dims(), 300, 0.3);
    let mut batch = random_batch(&mut rng(301), s, loss);
    embed(&mut rng(302), &mut params, &mut batch, s.q, 0.5);
    for k in [1, 3] {
        let what = format!("(trained embedding, T=10, K={k})");
        compare_traces_with(&what, &params, &batch, &bp, fixed(Storage::F32, k));
    }
    let s = Shape::new(2, 70_000, 2, 3, 2);
    let mut params = start(CellKind::Tanh, s.dims(), 303, 0.0);
    let mut batch = random_batch(&mut rng(304), s, loss);
    embed(&mut rng(305), &mut params, &mut batch, s.q, 0.5);
    compare_traces("(trained embedding, T=70000, V=2)", &params, &batch, &bp);
}

/// Every cell, inversion and solver (and BP) at the paper's size, T = 784, d = 100,
/// B = 16, within 1e-4 of the reference on whatever adapter runs the tests, each loop in
/// the launches the adapter picks.
#[test]
fn every_cell_inversion_and_solver_at_the_papers_size() {
    use CellKind::{Gru, Tanh};
    let runs = [
        (Tanh, Inversion::Analytic, Solver::Cg, Method::Tp),
        (Tanh, Inversion::Analytic, Solver::PerStep, Method::Tp),
        (Tanh, Inversion::Jacobian, Solver::Auto, Method::Tp),
        (Tanh, Inversion::Analytic, Solver::Auto, Method::Bp),
        (Gru, Inversion::Jacobian, Solver::Auto, Method::Tp),
        (Gru, Inversion::Jacobian, Solver::Auto, Method::Bp),
    ];
    let shape = Shape::new(16, 784, 1, 100, 10);
    let batch = random_batch(&mut rng(270), shape, Loss::CrossEntropy);
    for (cell, inversion, solver, method) in runs {
        let p = start(cell, shape.dims(), 271, 0.0);
        let mut h: Hyper = hyper(
            inversion,
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            Loss::CrossEntropy,
        );
        h.tp.solver = solver;
        h.tp.cg_max_iter = 100;
        let what = format!("({cell:?}, {inversion:?}, {solver:?}, {method:?}, T=784, d=100, B=16)");
        let started = std::time::Instant::now();
        compare_traces(&what, &p, &batch, &h);
        eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    }
}

/// The per-gate GRU inversion, DTP and the heads at every step (TP and BP) at the paper's
/// size, T = 784, d = 100, B = 16, within 1e-4 of the reference on every traced tensor,
/// each loop in the launches the adapter picks.
#[test]
fn per_gate_dtp_and_every_step_heads_at_the_papers_size() {
    let shape = Shape::new(16, 784, 1, 100, 10);
    let timed = |what: &str, run: &dyn Fn()| {
        let started = std::time::Instant::now();
        run();
        eprintln!("{what}: {:.1} s", started.elapsed().as_secs_f64());
    };
    let tp = |inversion, method, loss| {
        hyper(
            inversion,
            method,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            loss,
        )
    };
    let batch = random_batch(&mut rng(300), shape, Loss::CrossEntropy);
    let gru = start(CellKind::Gru, shape.dims(), 301, 0.0);
    let what = "(GRU per-gate, T=784, d=100, B=16)";
    timed(what, &|| {
        let h = tp(Inversion::PerGate, Method::Tp, Loss::CrossEntropy);
        compare_traces(what, &gru, &batch, &h);
    });
    let what = "(DTP, T=784, d=100, B=16)";
    timed(what, &|| {
        let (params, batch) = dtp_problem(302, shape, Loss::CrossEntropy);
        let h = dtp_hyper(Loss::CrossEntropy, 0.3, 0.1, TpGrad::ThroughTime);
        let want = CpuBackend::new().trace(&params, &batch, &h).unwrap();
        let got = GpuBackend::new(ctx()).trace(&params, &batch, &h).unwrap();
        let worst = compare_dtp(what, &got, &want);
        eprintln!("{what}: worst relative error {worst:.2e}");
    });
    let seq = random_batch(&mut rng(303), shape, Loss::CrossEntropySeq);
    let tanh = start(CellKind::Tanh, shape.dims(), 304, 0.0);
    for method in [Method::Tp, Method::Bp] {
        let what = format!("(heads at every step, {method:?}, T=784, d=100, B=16)");
        timed(&what, &|| {
            let h = tp(Inversion::Analytic, method, Loss::CrossEntropySeq);
            compare_traces(&what, &tanh, &seq, &h);
        });
    }
}
