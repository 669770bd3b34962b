//! `--alignment` (docs/ALGORITHM.md §10): a method's gradient against BPTT's. Its limit
//! where the answer is known, the GPU against the f64 reference, that measuring it changes
//! nothing of a run, and the run directory's `alignment.csv`.

mod cli_support;
mod gpu_support;
mod support;

use std::path::{Path, PathBuf};

use cli_support::{checkpoint_tensors, log_without_time, ok, scratch, small, strs, tpri};
use gpu_support::{ctx, hyper, TOL};
use support::{random_problem, rng, Init, Shape};
use tpri::backend::Backend;
use tpri::config::{Hyper, Inversion, Loss, Method, TargetMode, TpGrad};
use tpri::cpu::CpuBackend;
use tpri::gpu::GpuBackend;
use tpri::model::{CellKind, Params};
use tpri::tasks::Batch;
use tpri::train::{measure_alignment, Alignment};

/// The cells and inversions TP-RI runs; the first three carry no target back as r → ∞.
const TP_CASES: [(CellKind, Inversion); 4] = [
    (CellKind::Tanh, Inversion::Analytic),
    (CellKind::Tanh, Inversion::Jacobian),
    (CellKind::Gru, Inversion::Jacobian),
    (CellKind::Gru, Inversion::PerGate),
];

fn tp(inversion: Inversion, reg: f64) -> Hyper {
    let mut h = hyper(
        inversion,
        Method::Tp,
        TargetMode::Linearized,
        TpGrad::ThroughTime,
        Loss::CrossEntropy,
    );
    h.tp.reg = reg;
    h
}

fn problem(cell: CellKind, seed: u64) -> (Params, Batch) {
    let shape = Shape::new(5, 9, 3, 7, 4);
    random_problem(
        &mut rng(seed),
        cell,
        shape,
        Loss::CrossEntropy,
        Init::Library { seed, gain: 1.1 },
    )
}

/// As r grows, the analytic and jacobian inversions' targets below the top vanish (P, or
/// the per-step solve, shrinks like 1/r), and TP-RI's surrogate gradient becomes BPTT's
/// scaled by γ_h: S's one term left, ½‖h_T − v_T‖² with h_T − v_T = γ_h ∇_{h_T}ℓ, has the
/// gradient γ_h (∇_{h_T}ℓ)ᵀ ∂h_T/∂θ = γ_h ∇_θ ℓ. The per-gate inversion's direct term
/// (1 − z) ⊙ δ holds no inverse and stays (docs/ALGORITHM.md §5): its limit is not BPTT.
/// At the r of the tests (1) every inversion's targets turn the gradient away from BPTT's.
#[test]
fn tp_ri_becomes_bptt_as_the_regularization_grows() {
    for (k, (cell, inversion)) in TP_CASES.into_iter().enumerate() {
        let (params, batch) = problem(cell, 10 + k as u64);
        let what = format!("{cell:?} {inversion:?}");
        let far = tp(inversion, 1e9);
        let a = measure_alignment(&mut CpuBackend::new(), &params, &batch, &far).unwrap();
        let cosine = a.cosine.unwrap();
        if inversion == Inversion::PerGate {
            assert!(cosine < 0.999, "{what}: cos {cosine} at r = 1e9");
            continue;
        }
        let ratio = a.norm_ratio.unwrap() / far.tp.lr_target;
        assert!(1.0 - cosine < 1e-6, "{what}: cos {cosine} at r = 1e9");
        assert!((ratio - 1.0).abs() < 1e-6, "{what}: ‖g‖/‖∇ℓ‖/γ_h {ratio}");
        for (name, c) in &a.tensors {
            assert!(1.0 - c.unwrap() < 1e-6, "{what}: {name} cos {c:?}");
        }
        let near = measure_alignment(&mut CpuBackend::new(), &params, &batch, &tp(inversion, 1.0))
            .unwrap();
        let cosine = near.cosine.unwrap();
        assert!(
            cosine < 1.0 - 1e-6 && cosine > -1.0,
            "{what}: cos {cosine} at r = 1: the targets below the top should turn the gradient"
        );
    }
}

/// The cosines and the length ratio from the GPU's traces against the f64 reference's, for
/// every cell and inversion and for DTP, at sizes off the workgroup grid.
#[test]
fn gpu_alignment_matches_the_reference() {
    let mut cases: Vec<(CellKind, Hyper)> = TP_CASES
        .map(|(cell, inversion)| (cell, tp(inversion, 1.0)))
        .into();
    let mut dtp = tp(Inversion::Analytic, 1.0);
    dtp.method = Method::Dtp;
    cases.push((CellKind::Tanh, dtp));
    for (k, (cell, hyper)) in cases.into_iter().enumerate() {
        let (mut params, batch) = problem(cell, 20 + k as u64);
        if hyper.method == Method::Dtp {
            params = Params::init_dtp(params.dims(), 3).unwrap();
        }
        let what = format!("{cell:?} {:?} {:?}", hyper.method, hyper.tp.inversion);
        let want = measure_alignment(&mut CpuBackend::new(), &params, &batch, &hyper).unwrap();
        let got = measure_alignment(&mut GpuBackend::new(ctx()), &params, &batch, &hyper).unwrap();
        let (got, want) = (numbers(&got), numbers(&want));
        let err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).powi(2))
            .sum::<f64>()
            .sqrt()
            / want.iter().map(|w| w * w).sum::<f64>().sqrt();
        assert!(
            err < TOL,
            "{what}: ‖gpu − ref‖/‖ref‖ = {err:e}: {got:?} against {want:?}"
        );
    }
}

/// Every number of an alignment; a missing one fails (these cases have none).
fn numbers(a: &Alignment) -> Vec<f64> {
    let mut v = vec![a.cosine.unwrap(), a.norm_ratio.unwrap()];
    v.extend(
        a.tensors
            .iter()
            .map(|(name, c)| c.unwrap_or_else(|| panic!("{name}: no cosine"))),
    );
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
    v
}

/// Measuring between two steps leaves a GPU run's parameters and optimizer state as they
/// would have been: the traces run on workspaces of their own.
#[test]
fn measuring_on_the_gpu_does_not_disturb_training() {
    let mut hyper = tp(Inversion::Analytic, 1.0);
    hyper.opt.lr = 0.01;
    let (params, batch) = problem(CellKind::Tanh, 31);
    let run = |measure: bool| {
        let mut gpu = GpuBackend::new(ctx());
        gpu.load(&params, None, &hyper).unwrap();
        for _ in 0..2 {
            gpu.step(&batch).unwrap();
            if measure {
                let (now, _) = gpu.state().unwrap();
                let a = measure_alignment(&mut gpu, &now, &batch, &hyper).unwrap();
                numbers(&a);
            }
        }
        gpu.state().unwrap()
    };
    assert_eq!(run(true), run(false));
}

/// Runs `small` (T = 12, d = 8, B = 4, TP on the CPU) into `root/name` with `iterations`,
/// the flags in `set` given other values, and `--alignment` where asked; its stdout and
/// stderr and the run directory, after asserting that it succeeded.
fn small_run(
    root: &Path,
    name: &str,
    iterations: &str,
    set: &[(&str, &str)],
    alignment: bool,
) -> (String, String, PathBuf) {
    let dir = root.join(name);
    let mut args = small(&dir, iterations);
    for (flag, value) in set {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_string();
    }
    if alignment {
        args.push("--alignment".into());
    }
    let out = tpri(&strs(&args));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), err, dir)
}

/// Asserts that two runs wrote the same log (but for the times) and checkpoint.
fn assert_trained_alike(a: &Path, b: &Path) {
    assert_eq!(log_without_time(a), log_without_time(b));
    assert_eq!(checkpoint_tensors(a), checkpoint_tensors(b));
}

/// `--alignment` writes a row of `alignment.csv` at every evaluation, shows the cosine,
/// and changes nothing else: the log and the checkpoint are those of a run without it,
/// and a resumed run's rows are those of the run done in one go.
#[test]
fn alignment_csv_from_the_command_line() {
    let root = scratch("alignment");
    let (out, _, with) = small_run(&root, "with", "8", &[], true);
    let (_, _, without) = small_run(&root, "without", "8", &[], false);
    assert!(out.contains("  cos "), "{out}");
    assert_trained_alike(&with, &without);
    assert!(!without.join("alignment.csv").exists());
    let config = std::fs::read_to_string(with.join("config.toml")).unwrap();
    assert!(config.contains("alignment = true"), "{config}");
    let text = std::fs::read_to_string(with.join("alignment.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("iteration,cosine,norm_ratio,rnn.w_hh,rnn.w_ih,rnn.b_ih,rnn.b_hh")
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    // Evaluations at iterations 0, 4 and 8.
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        [0.0, 4.0, 8.0]
    );
    for row in &rows {
        assert_eq!(row.len(), 7, "{row:?}");
        assert!(row[2] > 0.0 && row[2].is_finite(), "{row:?}");
        for c in [row[1], row[3], row[4], row[5], row[6]] {
            assert!((-1.0..=1.0).contains(&c), "{row:?}");
        }
    }

    // The figures: the cosine's names only the run that measured it, the loss's both.
    let figures = root.join("figures");
    let (w, wo, f) = (
        with.to_str().unwrap(),
        without.to_str().unwrap(),
        figures.to_str().unwrap(),
    );
    ok(&["plot", w, wo, "--out", f]);
    let legend = |name: &str| std::fs::read_to_string(figures.join(name)).unwrap();
    let (cosine, loss) = (legend("grad_cosine.svg"), legend("train_loss.svg"));
    assert!(cosine.contains("\nwith\n") && !cosine.contains("\nwithout\n"));
    assert!(loss.contains("\nwith\n") && loss.contains("\nwithout\n"));

    let (_, _, split) = small_run(&root, "split", "4", &[], true);
    let split_arg = split.to_str().unwrap();
    ok(&[
        "train",
        "--resume",
        split_arg,
        "--iterations",
        "8",
        "--backend",
        "cpu",
    ]);
    assert_eq!(
        std::fs::read_to_string(split.join("alignment.csv")).unwrap(),
        text
    );
}

/// The same on the GPU backend: the traces between steps leave the run's log and
/// checkpoint as they are without them, and every row has its numbers.
#[test]
fn alignment_of_a_gpu_run() {
    let root = scratch("alignment-gpu");
    let gpu = [("--backend", "gpu")];
    let (_, _, with) = small_run(&root, "with", "8", &gpu, true);
    let (_, _, without) = small_run(&root, "without", "8", &gpu, false);
    assert_trained_alike(&with, &without);
    let text = std::fs::read_to_string(with.join("alignment.csv")).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{text}");
    for row in rows {
        let values: Vec<f64> = row.split(',').map(|v| v.parse().unwrap()).collect();
        assert!(
            values.iter().all(|v| v.is_finite()) && values.len() == 7,
            "{row}"
        );
    }
}

/// With BPTT there is nothing to compare: the run says so and trains as without the
/// flag, with no alignment.csv (so that a sweep over methods may set it for every run).
#[test]
fn alignment_of_bptt_measures_nothing() {
    let root = scratch("alignment-bp");
    let bp = [("--method", "bp")];
    let (_, said, with) = small_run(&root, "with", "4", &bp, true);
    let (_, _, without) = small_run(&root, "without", "4", &bp, false);
    assert!(
        said.contains("this run is BPTT") && said.contains("no alignment.csv"),
        "{said}"
    );
    assert!(!with.join("alignment.csv").exists());
    assert_trained_alike(&with, &without);
}
