//! Every GPU kernel against its f64 CPU twin on fresh random inputs, outputs poisoned with
//! NaN first (the one-shot wrappers do it) so that an element a kernel fails to write fails.

mod gpu_support;
mod support;

use gpu_support::{ctx, TOL};
use std::num::NonZeroUsize;
use support::{
    check, check_all, check_targets, column, dims, inputs, random, rng, scalar, seeded_params,
};
use tpri::config::{Loss, TargetMode};
use tpri::cpu;

use tpri::gpu::{self, GpuOptions, LanesPerUnit, SequencesPerWorkgroup, StepsPerDispatch, Storage};
use tpri::kernel_io::RnnGrads;
use tpri::model::{CellKind, Params};
use tpri::tasks::Targets;

/// (d, T, B) covering d ∈ {1, 7, 100, 257}, T ∈ {1, 2, 33}, B ∈ {1, 3, 16}.
const SHAPES: [(usize, usize, usize); 5] =
    [(1, 1, 1), (7, 2, 3), (100, 33, 16), (257, 2, 3), (7, 33, 1)];

#[test]
fn forward_matches_reference() {
    let ctx = ctx();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = seeded_params(CellKind::Tanh, dims(3, d, 2), i as u64, 1.0);
        let x = inputs(&mut rng(100 + i as u64), t, b, 3);
        let e = check_all(
            &format!("h (d={d}, T={t}, B={b})"),
            &gpu::one_shot::forward(&ctx, &params, &x).unwrap(),
            &cpu::forward::forward(&params, &x).unwrap(),
            TOL,
        );
        eprintln!("forward d={d} T={t} B={b}: {e:.2e}");
    }
}

/// Forward with `b` sequences per workgroup (and at most `k` steps per launch).
fn packed(b: usize, k: Option<usize>, storage: Storage) -> GpuOptions {
    GpuOptions {
        storage,
        steps_per_dispatch: k.map_or(StepsPerDispatch::Auto, |k| {
            StepsPerDispatch::Fixed(NonZeroUsize::new(k).unwrap())
        }),
        sequences_per_workgroup: SequencesPerWorkgroup::fixed(b).unwrap(),
        ..GpuOptions::default()
    }
}

/// The forward pass with 1, 2, 4 and 8 sequences per workgroup against the reference, at
/// batch sizes that leave the last workgroup short (B = 1, 7, 33) and hidden sizes that
/// are not multiples of the workgroup size or of eight, wherever b·d fits the kernel's
/// workgroup memory.
#[test]
fn forward_with_sequences_per_workgroup_matches_reference() {
    let ctx = ctx();
    for (i, d) in [1, 7, 33, 100, 257].into_iter().enumerate() {
        for (j, batch) in [1, 7, 33].into_iter().enumerate() {
            let t = 5 + 4 * ((i + j) % 4); // 5, 9, 13, 17
            let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 40 + i as u64, 1.0);
            let x = inputs(&mut rng(400 + (10 * i + j) as u64), t, batch, 3);
            let want = cpu::forward::forward(&params, &x).unwrap();
            for b in [1, 2, 4, 8]
                .into_iter()
                .filter(|b| b * d <= gpu::MAX_HIDDEN)
            {
                let got =
                    gpu::one_shot::forward_with(&ctx, &params, &x, packed(b, None, Storage::F32))
                        .unwrap();
                check_all(
                    &format!("h (b={b}, d={d}, T={t}, B={batch})"),
                    &got,
                    &want,
                    TOL,
                );
            }
        }
    }
}

/// Packed sequences across segments of 3 and 4 steps: the carried states of several
/// sequences per workgroup go on where the last launch left them.
#[test]
fn forward_with_sequences_per_workgroup_across_segments_matches_reference() {
    let ctx = ctx();
    for (i, (d, batch)) in [(7, 7), (33, 33), (100, 7), (257, 33)]
        .into_iter()
        .enumerate()
    {
        let params = seeded_params(CellKind::Tanh, dims(2, d, 2), 50 + i as u64, 1.0);
        let x = inputs(&mut rng(500 + i as u64), 17, batch, 2);
        let want = cpu::forward::forward(&params, &x).unwrap();
        for b in [2, 4, 8].into_iter().filter(|b| b * d <= gpu::MAX_HIDDEN) {
            for k in [3, 4] {
                let got = gpu::one_shot::forward_with(
                    &ctx,
                    &params,
                    &x,
                    packed(b, Some(k), Storage::F32),
                )
                .unwrap();
                check_all(
                    &format!("h (b={b}, K={k}, d={d}, B={batch})"),
                    &got,
                    &want,
                    TOL,
                );
            }
        }
    }
}

/// f16 storage of h with packed sequences (rows of odd d padded to even length, words
/// pairing units of one row): one rounding of the f32 value, u = 2⁻¹¹, beyond f32's
/// tolerance; across segments too, where the carried state stays f32.
#[test]
fn forward_with_sequences_per_workgroup_stores_f16() {
    let ctx = ctx();
    for (i, (d, batch)) in [(1, 7), (7, 33), (33, 7), (257, 7)].into_iter().enumerate() {
        let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 60 + i as u64, 1.0);
        let x = inputs(&mut rng(600 + i as u64), 9, batch, 3);
        let want = cpu::forward::forward(&params, &x).unwrap();
        for b in [1, 2, 4, 8]
            .into_iter()
            .filter(|b| b * d <= gpu::MAX_HIDDEN)
        {
            for k in [None, Some(4)] {
                let got =
                    gpu::one_shot::forward_with(&ctx, &params, &x, packed(b, k, Storage::F16))
                        .unwrap();
                let e = check_all(
                    &format!("f16 h (b={b}, K={k:?}, d={d}, B={batch})"),
                    &got,
                    &want,
                    1.0 / 2048.0 + TOL,
                );
                // The f16 path is the one taken: its error is f16's, not f32's.
                assert!(
                    e > TOL,
                    "f16 h (b={b}, d={d}, B={batch}): error {e:.2e} is f32's"
                );
            }
        }
    }
}

/// A count of sequences per workgroup whose states do not fit the kernel's workgroup
/// memory, or that is not a power of two, is refused with a message, not run.
#[test]
fn too_many_sequences_per_workgroup_are_refused() {
    let ctx = ctx();
    let params = seeded_params(CellKind::Tanh, dims(1, 257, 2), 70, 1.0);
    let x = inputs(&mut rng(700), 3, 16, 1);
    let e =
        gpu::one_shot::forward_with(&ctx, &params, &x, packed(16, None, Storage::F32)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("16 sequences per workgroup") && msg.contains("d = 257"),
        "{msg}"
    );
    assert!(msg.contains("use 4 or fewer"), "{msg}");
    // A count `fixed` would refuse, built directly.
    let odd = GpuOptions {
        sequences_per_workgroup: SequencesPerWorkgroup::Fixed(3),
        ..GpuOptions::default()
    };
    let e = gpu::one_shot::forward_with(&ctx, &params, &x, odd).unwrap_err();
    assert!(format!("{e:#}").contains("power of two"), "{e:#}"); // Steps per block out of range, built directly: refused, not clamped.
    for k in [0, gpu::MAX_STEPS_PER_BLOCK + 1] {
        let blocks = GpuOptions {
            steps_per_block: gpu::StepsPerBlock::Fixed(k),
            ..GpuOptions::default()
        };
        let e = gpu::one_shot::forward_with(&ctx, &params, &x, blocks).unwrap_err();
        assert!(format!("{e:#}").contains("steps per block"), "{e:#}");
    }
}

/// Lanes per unit whose invocations do not fit a workgroup (lanes·d past the adapter's
/// invocations), whose partial sums do not fit the kernels' workgroup memory
/// (lanes·b·d > 2048), or that are not a power of two are refused with a message naming
/// the setting, not run.
#[test]
fn lanes_per_unit_that_do_not_fit_are_refused() {
    let ctx = ctx();
    let lanes = |l, b| GpuOptions {
        lanes_per_unit: LanesPerUnit::Fixed(l),
        ..packed(b, None, Storage::F32)
    };
    let forward = |d, options| {
        let params = seeded_params(CellKind::Tanh, dims(1, d, 2), 71, 1.0);
        let x = inputs(&mut rng(701), 3, 5, 1);
        let e = gpu::one_shot::forward_with(&ctx, &params, &x, options).unwrap_err();
        format!("{e:#}")
    };
    // Past the adapter's invocations per workgroup: 2048 at d = 1024 with 2 lanes.
    let max = ctx.max_invocations_per_workgroup();
    assert!(
        max < 2048,
        "this test assumes fewer than 2048 invocations, got {max}"
    );
    let msg = forward(1024, lanes(2, 1));
    assert!(
        msg.contains("lanes_per_unit") && msg.contains("d = 1024"),
        "{msg}"
    );
    assert!(msg.contains("invocations per workgroup"), "{msg}");
    // Past workgroup memory: 8 lanes × 4 sequences × 100 units.
    let msg = forward(100, lanes(8, 4));
    assert!(
        msg.contains("lanes_per_unit") && msg.contains("workgroup memory"),
        "{msg}"
    );
    assert!(msg.contains("use 2 or fewer sequences"), "{msg}");
    let msg = forward(7, lanes(3, 1));
    assert!(
        msg.contains("lanes per unit") && msg.contains("power of two"),
        "{msg}"
    );
}

#[test]
fn head_matches_reference_for_both_losses() {
    let ctx = ctx();
    for (i, &(d, b, q)) in [(1, 1, 1), (7, 3, 4), (100, 16, 10), (257, 3, 2)]
        .iter()
        .enumerate()
    {
        let params = seeded_params(CellKind::Tanh, dims(3, d, q), 10 + i as u64, 1.0);
        let mut r = rng(200 + i as u64);
        let h_last = random(&mut r, b, d, 0.9);
        let labels = Targets::Labels((0..b).map(|s| (s * 7 + i) % q).collect());
        let values = Targets::Values(random(&mut r, b, q, 1.0));
        for (loss, y) in [(Loss::CrossEntropy, labels), (Loss::Mse, values)] {
            let want = cpu::head::head(&params, &h_last, &y, loss).unwrap();
            let got = gpu::one_shot::head(&ctx, &params, &h_last, &y, loss).unwrap();
            let what = |n: &str| format!("{n} ({loss:?}, d={d}, B={b}, q={q})");
            check(&what("loss"), &scalar(got.loss), &scalar(want.loss), TOL);
            // A share of hits: exact up to f32 rounding of the division.
            let acc = (got.accuracy - want.accuracy).abs();
            assert!(
                acc < 1e-6,
                "{}: {} vs {}",
                what("accuracy"),
                got.accuracy,
                want.accuracy
            );
            check(&what("z"), &got.z, &want.z, TOL);
            check(&what("g_T"), &got.grad_h, &want.grad_h, TOL);
            check(&what("∇V"), &got.grad_w, &want.grad_w, TOL);
            let e = check(&what("∇c"), &got.grad_b, &want.grad_b, TOL);
            eprintln!("{}: ∇c {e:.2e}", what("head"));
        }
    }
}

#[test]
fn matmul_matches_reference() {
    let ctx = ctx();
    let mut r = rng(300);
    // Sizes off the 16×16 tile, a long reduction (T·B rows) and a thin result (∇b); the
    // long ones with fewer blocks than the device runs workgroups at once are split over
    // workgroups (`matmul::reduction`; on lavapipe as many as CPU threads, at least two
    // here on a 2-core machine; the last with a k that is no multiple of 16).
    for (m, k, n) in [
        (1, 1, 1),
        (7, 5, 3),
        (17, 33, 16),
        (100, 1200, 100),
        (257, 40, 1),
        (7, 5000, 3),
        (33, 3001, 1),
        (1, 257, 1),
    ] {
        for trans_a in [false, true] {
            let a = if trans_a {
                random(&mut r, k, m, 1.0)
            } else {
                random(&mut r, m, k, 1.0)
            };
            let b = random(&mut r, k, n, 1.0);
            let want = if trans_a { a.transpose() * &b } else { &a * &b };
            let got = gpu::one_shot::matmul(&ctx, &a, trans_a, &b).unwrap();
            check(
                &format!("C ({m}×{k}·{k}×{n}, trans_a={trans_a})"),
                &got,
                &want,
                TOL,
            );
        }
    }
}

/// The reductions as a GPU splits them (`matmul::reduction` for a device running 1 024
/// workgroups at once): up to 1 024 slices of partial products, which split_sum.wgsl adds
/// with 1 to 128 invocations an element; sizes off the workgroup's, k no multiple of 16.
#[test]
fn split_reductions_match_reference() {
    let ctx = ctx();
    let mut r = rng(310);
    // (m, k, n): slices, then split_sum's lanes an element.
    for (m, k, n) in [
        (100, 1200, 100), // 18 slices, 4 lanes
        (33, 3001, 1),    // 46, 8
        (7, 5000, 3),     // 78, 16
        (3, 70_001, 2),   // 1 024, 128
        (257, 1000, 1),   // 5 slices: one lane
    ] {
        let a = random(&mut r, k, m, 1.0);
        let b = random(&mut r, k, n, 1.0);
        let want = a.transpose() * &b;
        let got = gpu::one_shot::matmul_split(&ctx, &a, true, &b, 1024).unwrap();
        check(&format!("C ({m}×{k}·{k}×{n}, split)"), &got, &want, TOL);
    }
}

#[test]
fn bptt_matches_reference_in_every_mode() {
    let ctx = ctx();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 20 + i as u64, 1.0);
        let mut r = rng(400 + i as u64);
        let x = inputs(&mut r, t, b, 3);
        let h = cpu::forward::forward(&params, &x).unwrap();
        let g_top = random(&mut r, b, d, 0.5);
        let v: Vec<_> = h
            .iter()
            .map(|h_t| h_t + random(&mut r, b, d, 0.1))
            .collect();
        let cases = [
            ("BP", tpri::kernel_io::Injection::Top(&g_top), true),
            (
                "TP through time",
                tpri::kernel_io::Injection::Targets(&v[..]),
                true,
            ),
            (
                "TP local",
                tpri::kernel_io::Injection::Targets(&v[..]),
                false,
            ),
        ];
        for (name, injection, through_time) in cases {
            let want = cpu::bptt::bptt(&params, &x, &h, injection, through_time).unwrap();
            let got = gpu::one_shot::bptt(&ctx, &params, &x, &h, injection, through_time).unwrap();
            let e = check_grads(&format!("{name}, d={d}, T={t}, B={b}"), &got, &want);
            eprintln!("bptt ({name}, d={d}, T={t}, B={b}): ∇b {e:.2e}");
        }
    }
}

/// Checks the backward recursion's gradients and error norms against the reference's;
/// returns ∇b's error.
fn check_grads(what: &str, got: &RnnGrads, want: &RnnGrads) -> f64 {
    check(&format!("∇W ({what})"), &got.w_hh, &want.w_hh, TOL);
    check(&format!("∇U ({what})"), &got.w_ih, &want.w_ih, TOL);
    check(
        &format!("‖e_t‖ ({what})"),
        &column(&got.error_norms),
        &column(&want.error_norms),
        TOL,
    );
    check(&format!("∇b ({what})"), &got.b, &want.b, TOL)
}

/// The backward recursion with 1, 2, 4 and 8 sequences per workgroup against the
/// reference, with every injection (BP's g_T, g_t at every step, TP's targets through time
/// and locally), at the forward pass's shapes: B = 1, 7, 33 (the last workgroup short),
/// d = 1, 7, 33, 100, 257 wherever b·d fits, T from 5 to 17. ∇W, ∇U, ∇b sum δ over every
/// row, and ‖e_t‖ every sequence's e_t: a sequence's rows misplaced show in them.
#[test]
fn bptt_with_sequences_per_workgroup_matches_reference() {
    use tpri::kernel_io::Injection;
    let ctx = ctx();
    for (i, d) in [1, 7, 33, 100, 257].into_iter().enumerate() {
        for (j, batch) in [1, 7, 33].into_iter().enumerate() {
            let t = 5 + 4 * ((i + j) % 4); // 5, 9, 13, 17
            let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 80 + i as u64, 1.0);
            let mut r = rng(800 + (10 * i + j) as u64);
            let x = inputs(&mut r, t, batch, 3);
            let h = cpu::forward::forward(&params, &x).unwrap();
            let g: Vec<_> = (0..=t).map(|_| random(&mut r, batch, d, 0.5)).collect();
            let v: Vec<_> = h
                .iter()
                .map(|h_t| h_t + random(&mut r, batch, d, 0.1))
                .collect();
            let cases = [
                ("BP", Injection::Top(&g[t]), true),
                ("BP every step", Injection::Steps(&g[..]), true),
                ("TP through time", Injection::Targets(&v[..]), true),
                ("TP local", Injection::Targets(&v[..]), false),
            ];
            for (name, injection, through_time) in cases {
                let want = cpu::bptt::bptt(&params, &x, &h, injection, through_time).unwrap();
                for b in [1, 2, 4, 8]
                    .into_iter()
                    .filter(|b| b * d <= gpu::MAX_HIDDEN)
                {
                    let options = packed(b, None, Storage::F32);
                    let got = gpu::one_shot::bptt_with(
                        &ctx,
                        &params,
                        &x,
                        &h,
                        injection,
                        through_time,
                        options,
                    )
                    .unwrap();
                    check_grads(
                        &format!("{name}, b={b}, d={d}, T={t}, B={batch}"),
                        &got,
                        &want,
                    );
                }
            }
        }
    }
}

/// Packed backward recursions across segments of 3 and 4 steps: a segment below the top
/// starts from the δ_{t+1} of several sequences that the launch above stored.
#[test]
fn bptt_with_sequences_per_workgroup_across_segments_matches_reference() {
    use tpri::kernel_io::Injection;
    let ctx = ctx();
    for (i, (d, batch)) in [(7, 7), (33, 33), (100, 7), (257, 33)]
        .into_iter()
        .enumerate()
    {
        let params = seeded_params(CellKind::Tanh, dims(2, d, 2), 90 + i as u64, 1.0);
        let mut r = rng(900 + i as u64);
        let x = inputs(&mut r, 17, batch, 2);
        let h = cpu::forward::forward(&params, &x).unwrap();
        let v: Vec<_> = h
            .iter()
            .map(|h_t| h_t + random(&mut r, batch, d, 0.1))
            .collect();
        let injection = Injection::Targets(&v[..]);
        let want = cpu::bptt::bptt(&params, &x, &h, injection, true).unwrap();
        for b in [2, 4, 8].into_iter().filter(|b| b * d <= gpu::MAX_HIDDEN) {
            for k in [3, 4] {
                let options = packed(b, Some(k), Storage::F32);
                let got = gpu::one_shot::bptt_with(&ctx, &params, &x, &h, injection, true, options)
                    .unwrap();
                check_grads(&format!("b={b}, K={k}, d={d}, B={batch}"), &got, &want);
            }
        }
    }
}

#[test]
fn optimizers_match_reference_over_three_steps() {
    use tpri::config::{OptimizerConfig, OptimizerKind};
    let ctx = ctx();
    // Without and with the head's own learning rate (`lr_head`: V and c at 0.3), and with
    // a gradient-norm limit (`clip_norm`) below the random gradients' norms and far above
    // them; d = 257 gives W 66 049 elements, more than one block of the norm's first pass.
    let small = dims(3, 7, 2);
    let settings = [
        (small, None, None),
        (small, Some(0.3), None),
        (small, None, Some(1.0)),
        (small, None, Some(1e6)),
        (dims(2, 257, 3), Some(0.3), Some(1.0)),
    ];
    let cases = settings.into_iter().flat_map(|(d, lr_head, clip_norm)| {
        [
            OptimizerKind::Sgd,
            OptimizerKind::Nesterov,
            OptimizerKind::Adam,
        ]
        .map(|kind| (d, kind, lr_head, clip_norm))
    });
    for (d, kind, lr_head, clip_norm) in cases {
        let cfg = OptimizerConfig {
            kind,
            lr: 0.05,
            lr_head,
            clip_norm,
            ..OptimizerConfig::default()
        };
        let mut p_cpu = seeded_params(CellKind::Tanh, d, 30, 1.0);
        let mut p_gpu = p_cpu.clone();
        let mut s_cpu = tpri::optimizer_state::OptState::new(&p_cpu);
        let mut s_gpu = s_cpu.clone();
        for step in 0..3u64 {
            let g = seeded_params(CellKind::Tanh, d, 31 + step, 1.0);
            cpu::optimizer::optimizer_step(&cfg, &mut s_cpu, &mut p_cpu, &g).unwrap();
            gpu::one_shot::optimizer_step(&ctx, &cfg, &mut s_gpu, &mut p_gpu, &g).unwrap();
        }
        assert_eq!(s_gpu.step, s_cpu.step);
        let tensors = p_gpu.tensors().into_iter().zip(p_cpu.tensors());
        let slots = s_gpu.m.tensors().into_iter().zip(s_cpu.m.tensors());
        let second = s_gpu.v.tensors().into_iter().zip(s_cpu.v.tensors());
        for (part, pairs) in [
            ("θ", tensors.collect::<Vec<_>>()),
            ("m", slots.collect()),
            ("v", second.collect()),
        ] {
            for ((name, got), (_, want)) in pairs {
                check(
                    &format!(
                        "{part} {name} (d = {}, {kind:?}, lr_head {lr_head:?}, clip_norm {clip_norm:?})",
                        d.hidden
                    ),
                    got,
                    want,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn cg_inverse_matches_cholesky_cold_and_warm() {
    let ctx = ctx();
    let tol = gpu::GPU_CG_TOL;
    for (i, &d) in [1usize, 7, 100, 257].iter().enumerate() {
        let mut r = rng(500 + i as u64);
        // Up to d = 100 a random W with σ_max around 1.7 (A = WᵀW + rI mildly
        // ill-conditioned at r = 0.5: about 16 iterations); at d = 257, where each product
        // is slow on a software rasterizer, a perturbed orthogonal W (a few iterations).
        let w = if d <= 100 {
            random(&mut r, d, d, 1.7 / (d as f64).sqrt())
        } else {
            Params::init(dims(1, d, 1), 9).unwrap().w_hh * 1.2
                + random(&mut r, d, d, 0.3 / (d as f64).sqrt())
        };
        let reg = 0.5;
        let exact = cpu::inverse::inverse_cholesky(&w, reg).unwrap();
        let (cold, rep) = gpu::one_shot::inverse_cg(&ctx, &w, reg, tol, 100, None).unwrap();
        assert!(rep.residual <= tol && rep.iterations >= 1, "{rep:?}");
        let e = check(&format!("P cold (d={d})"), &cold, &exact, TOL);
        // Warm start from a nearby solution: fewer iterations, same answer.
        let w2 = &w + random(&mut r, d, d, 1e-3 / (d as f64).sqrt());
        let exact2 = cpu::inverse::inverse_cholesky(&w2, reg).unwrap();
        let (warm, rep2) =
            gpu::one_shot::inverse_cg(&ctx, &w2, reg, tol, 100, Some(&exact)).unwrap();
        check(&format!("P warm (d={d})"), &warm, &exact2, TOL);
        assert!(
            rep2.iterations <= rep.iterations,
            "warm {rep2:?} vs cold {rep:?}"
        );
        let cpu_rep = cpu::inverse::inverse_cg(&w, reg, tol, 100, None).unwrap().1;
        eprintln!(
            "CG d={d}: P {e:.2e}, gpu {rep:?}, warm {rep2:?}, cpu at the same tol {cpu_rep:?}"
        );
    }
}

#[test]
fn cg_that_misses_its_tolerance_is_an_error_with_the_numbers() {
    let ctx = ctx();
    let w = random(&mut rng(600), 40, 40, 0.5);
    let err = gpu::one_shot::inverse_cg(&ctx, &w, 1e-3, 1e-6, 2, None).unwrap_err();
    let cg = tpri::error::cg_error(&err).unwrap_or_else(|| panic!("expected CgError, got {err:#}"));
    assert_eq!(cg.report.iterations, 2);
    assert!(
        cg.report.residual > 1e-6 && cg.report.residual.is_finite(),
        "{cg:?}"
    );
}

#[test]
fn target_sweep_matches_reference_in_every_mode() {
    let ctx = ctx();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 40 + i as u64, 1.0);
        let mut r = rng(700 + i as u64);
        let x = inputs(&mut r, t, b, 3);
        let h = cpu::forward::forward(&params, &x).unwrap();
        let g_top = random(&mut r, b, d, 0.5);
        let p_inv = cpu::inverse::inverse_cholesky(&params.w_hh, 1.0).unwrap();
        let modes = [
            TargetMode::Linearized,
            TargetMode::Difference,
            TargetMode::Plain,
        ];
        // γ_h = 1e-4 is the published pixel-MNIST step: v − h is then far below f32's
        // resolution of h, which is why the kernel carries offsets v − h; check those.
        for (mode, lr_target) in modes.iter().flat_map(|&m| [(m, 0.1), (m, 1e-4)]) {
            let want =
                cpu::target_sweep::target_sweep(&params, &p_inv, &x, &h, &g_top, lr_target, mode)
                    .unwrap();
            let got =
                gpu::one_shot::target_sweep(&ctx, &params, &p_inv, &x, &h, &g_top, lr_target, mode)
                    .unwrap();
            let what = format!("({mode:?}, γ_h={lr_target}, d={d}, T={t}, B={b})");
            let e = check_targets(&what, &got, &want, &h, TOL);
            eprintln!("sweep {what}: v − h {e:.2e}");
        }
    }
}

/// The target sweep with 1, 2, 4 and 8 sequences per workgroup against the reference, in
/// every target mode (γ_h = 0.1 and the published 1e-4 in turn), at the forward pass's
/// shapes (B = 1, 7, 33; d = 1, 7, 33, 100, 257 wherever b·d fits; T from 5 to 17); and
/// across segments of 3 and 4 steps, where the offsets of several sequences are carried
/// from launch to launch.
#[test]
fn target_sweep_with_sequences_per_workgroup_matches_reference() {
    let ctx = ctx();
    let modes = [
        TargetMode::Linearized,
        TargetMode::Difference,
        TargetMode::Plain,
    ];
    for (i, d) in [1, 7, 33, 100, 257].into_iter().enumerate() {
        for (j, batch) in [1, 7, 33].into_iter().enumerate() {
            let t = 5 + 4 * ((i + j) % 4); // 5, 9, 13, 17
                                           // Gain 0.5: states away from saturation, where the difference mode's atanh
                                           // would amplify the f32 rounding of h beyond TOL whatever the packing.
            let params = seeded_params(CellKind::Tanh, dims(3, d, 2), 100 + i as u64, 0.5);
            let mut r = rng(1000 + (10 * i + j) as u64);
            let x = inputs(&mut r, t, batch, 3);
            let h = cpu::forward::forward(&params, &x).unwrap();
            let g_top = random(&mut r, batch, d, 0.5);
            let p_inv = cpu::inverse::inverse_cholesky(&params.w_hh, 1.0).unwrap();
            let lr_target = [0.1, 1e-4][(i + j) % 2];
            for mode in modes {
                let want = cpu::target_sweep::target_sweep(
                    &params, &p_inv, &x, &h, &g_top, lr_target, mode,
                )
                .unwrap();
                let fits = |b: &usize| b * d <= gpu::MAX_HIDDEN;
                // Segments (K = 3, 4) where the sweep has more steps than that, at b > 1.
                let split = [2, 4, 8]
                    .into_iter()
                    .filter(fits)
                    .flat_map(|b| [3, 4].map(|k| (b, Some(k))));
                let whole = [1, 2, 4, 8].into_iter().filter(fits).map(|b| (b, None));
                for (b, k) in whole.chain(split.filter(|_| batch > 1)) {
                    let options = packed(b, k, Storage::F32);
                    let got = gpu::one_shot::target_sweep_with(
                        &ctx,
                        &params,
                        &p_inv,
                        &x,
                        &h,
                        &g_top,
                        (lr_target, mode),
                        options,
                    )
                    .unwrap();
                    let what = format!(
                        "({mode:?}, γ_h={lr_target}, b={b}, K={k:?}, d={d}, T={t}, B={batch})"
                    );
                    check_targets(&what, &got, &want, &h, TOL);
                }
            }
        }
    }
}

#[test]
fn cg_rejects_a_non_finite_w() {
    let ctx = ctx();
    let mut w = random(&mut rng(601), 5, 5, 0.5);
    w[(2, 3)] = f64::INFINITY;
    let err = gpu::one_shot::inverse_cg(&ctx, &w, 1.0, 1e-5, 10, None).unwrap_err();
    assert!(tpri::error::cg_error(&err).is_some(), "{err:#}");
}

/// The paper's sequence length at its hidden size: T·d is large enough that a kernel
/// looping once per term of its dot products in one launch would pass llvmpipe's
/// per-invocation loop cap, where the driver silently truncates the time loop (it did,
/// from step 596 on). tests/gpu_segments.rs goes on to T = 6000.
#[test]
fn forward_matches_reference_at_the_papers_length() {
    let ctx = ctx();
    let params = seeded_params(CellKind::Tanh, dims(1, 100, 10), 30, 1.0);
    let x = inputs(&mut rng(31), 784, 2, 1);
    let want = cpu::forward::forward(&params, &x).unwrap();
    let got = gpu::one_shot::forward(&ctx, &params, &x).unwrap();
    check_all("h (T=784, d=100, B=2)", &got, &want, TOL);
}

/// A device opened with WebGPU's default limits (8 storage buffers per shader stage) is
/// refused when the kernels compile, with wgpu's message naming the limit: dtp_reverse.wgsl
/// binds 9 (see `GpuContext`'s table). `GpuContext::new` asks for the adapter's own limits.
#[test]
fn a_device_below_the_storage_buffer_limit_is_refused_naming_it() {
    let instance = wgpu::Instance::default();
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter (ctx() opened one)");
    let desc = wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::default(),
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    assert_eq!(device.limits().max_storage_buffers_per_shader_stage, 8);
    let err = match gpu::GpuContext::from_device(device, queue) {
        Ok(_) => panic!("a device with 8 storage buffers per stage compiled every kernel"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("compiling the compute kernels")
            && err.contains("max_storage_buffers_per_shader_stage")
            && err.contains("limit is 8, count was 9"),
        "{err}"
    );
}

/// Degenerate shapes and any workgroup count give a product or an error, never a panic;
/// where they give a product it is the reference's (zeros where k = 0), and a product of
/// non-empty operands is never refused.
#[test]
fn split_reductions_take_any_shape_and_workgroup_count() {
    let ctx = ctx();
    let mut r = rng(320);
    for (m, k, n) in [(0, 0, 0), (1, 0, 1), (0, 5, 2), (3, 200, 0), (2, 300, 1)] {
        for concurrent in [0, 1, 1024, usize::MAX] {
            let a = random(&mut r, k, m, 1.0);
            let b = random(&mut r, k, n, 1.0);
            let what = format!("C ({m}×{k}·{k}×{n}, {concurrent} workgroups)");
            match gpu::one_shot::matmul_split(&ctx, &a, true, &b, concurrent) {
                Ok(got) => {
                    let want = a.transpose() * &b;
                    assert_eq!(got.shape(), want.shape(), "{what}");
                    if !want.is_empty() {
                        check(&what, &got, &want, TOL);
                    }
                }
                Err(e) => assert!(m * k * n == 0, "{what}: {e}"),
            }
        }
    }
}

/// The step probes run on the adapter and every value each writes follows its chain
/// (`step_probe::probe` checks them after poisoning); odd sizes; bad sizes are errors.
#[test]
fn step_probes_run_and_check_their_chains() {
    let ctx = ctx();
    let probes = gpu::step_probe::probe(&ctx, 37, 3, 1).unwrap();
    assert_eq!(probes.len(), gpu::step_probe::PROBES.len());
    for p in &probes {
        assert!(p.step_s.is_finite() && p.step_s > 0.0, "{p:?}");
    }
    for (steps, groups, reps) in [(0, 1, 1), (1, 0, 1), (1, 1, 0), (1 << 25, 1, 1)] {
        let err = gpu::step_probe::probe(&ctx, steps, groups, reps).unwrap_err();
        assert!(err.to_string().contains("probe"), "{err}");
    }
}
