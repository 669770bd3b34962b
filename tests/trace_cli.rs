//! `tpri trace` end to end: round trip against the library, an independent NumPy
//! implementation of docs/ALGORITHM.md, and bad inputs.

use std::path::Path;

use tpri::config::{Hyper, Loss, Method, TargetMode, TpConfig, TpGrad};
use tpri::cpu::iteration::iteration;
use tpri::model::{CellKind, Dims, Params};
use tpri::tasks::Batch;
use tpri::tensor_file::{
    load_params, read_tensors, save_batch, save_params, write_atomic, TensorData,
};

mod cli_support;
mod support;

use cli_support::{floats, loss_flag, numpy_agrees, run_trace, scratch, tpri};
use support::{check, column, random_problem, rng, Init, Shape};

/// The shared random problem at one seed, with B sequences of length T for `dims`: the
/// library's initialisation at `seed` (the tanh RNN's biases made non-zero, the GRU's W and
/// U doubled: PyTorch's ±1/√d leaves every gate near ½), then a batch, drawn from a
/// stream seeded with `seed`.
fn problem(
    cell: CellKind,
    seed: u64,
    dims: Dims,
    b: usize,
    t: usize,
    loss: Loss,
) -> (Params, Batch) {
    let gain = if cell == CellKind::Gru { 2.0 } else { 1.0 };
    let shape = Shape::new(b, t, dims.input, dims.hidden, dims.output);
    let init = Init::Library { seed, gain };
    random_problem(&mut rng(seed), cell, shape, loss, init)
}

/// γ_h and r of the NumPy comparisons: the flags' values, and the scripts' arguments.
const LR_TARGET: &str = "0.3";
const REG: &str = "0.5";

/// The flags of a NumPy comparison: `--method method`, the `option` pair (a target mode or
/// an inversion), `--tp-grad grad`, and γ_h and r.
fn numpy_flags<'a>(method: &'a str, option: [&'a str; 2], grad: &'a str) -> Vec<&'a str> {
    let [name, value] = option;
    vec![
        "--method",
        method,
        name,
        value,
        "--tp-grad",
        grad,
        "--lr-target",
        LR_TARGET,
        "--reg",
        REG,
    ]
}

#[test]
fn trace_round_trip_matches_library() {
    let dir = scratch("roundtrip");
    let dims = Dims {
        input: 3,
        hidden: 6,
        output: 4,
    };
    for (i, loss) in [Loss::CrossEntropy, Loss::Mse].into_iter().enumerate() {
        let (params, batch) = problem(CellKind::Tanh, 10 + i as u64, dims, 3, 5, loss);
        let flags = [
            "--method",
            "tp",
            "--target-mode",
            "difference",
            "--lr-target",
            "0.2",
            "--reg",
            "0.7",
        ];
        let [_, _, out] = run_trace(&dir, &params, &batch, loss, &flags);
        let hyper = Hyper {
            method: Method::Tp,
            loss,
            tp: TpConfig {
                target_mode: TargetMode::Difference,
                lr_target: 0.2,
                reg: 0.7,
                tp_grad: TpGrad::ThroughTime,
                ..TpConfig::default()
            },
            ..Hyper::default()
        };
        let want = iteration(&params, &batch, &hyper, None).unwrap();
        assert_eq!(floats(&out, "loss"), vec![want.loss]);
        let w_grad: Vec<f64> = want.grads.w_hh.transpose().as_slice().to_vec();
        assert_eq!(floats(&out, "grad.rnn.w_hh"), w_grad);
        let h = floats(&out, "h");
        assert_eq!(h.len(), 6 * 3 * 6);
        assert_eq!(
            h[(5 * 3 + 2) * 6 + 1],
            want.h[5][(2, 1)],
            "h is laid out [T+1, B, d]"
        );
        assert_eq!(floats(&out, "p_inv").len(), 36);
        assert_eq!(floats(&out, "v").len(), 6 * 3 * 6);
    }
}

/// `tpri trace --backend gpu` for the GRU (its default, the jacobian inversion; and BP) and
/// for the tanh RNN with `--inversion jacobian`: the same tensors as the CPU trace, within
/// the f32 tolerance of the GPU tests, and no `p_inv` where none is formed. Needs a GPU
/// adapter (lavapipe will do) and fails without one.
#[test]
fn gpu_trace_of_the_gru_and_the_jacobian_inversion_matches_cpu() {
    let dir = scratch("gpu-gru");
    let dims = Dims {
        input: 3,
        hidden: 6,
        output: 4,
    };
    let (tanh, batch) = problem(CellKind::Tanh, 40, dims, 3, 5, Loss::CrossEntropy);
    let gru = Params::init_of(tpri::model::CellKind::Gru, dims, 41).unwrap();
    let runs: [(&str, &Params, &[&str]); 3] = [
        ("gru tp", &gru, &["--method", "tp"]),
        ("gru bp", &gru, &["--method", "bp"]),
        (
            "tanh jacobian",
            &tanh,
            &[
                "--method",
                "tp",
                "--inversion",
                "jacobian",
                "--tp-grad",
                "local",
            ],
        ),
    ];
    for (what, params, flags) in runs {
        gpu_matches_cpu(&dir, what, params, &batch, [flags, &[]]);
    }
}

/// Traces `params` on `batch` with `flags` on `--backend cpu` and (with `gpu_flags` too)
/// `--backend gpu` (in `dir`), and checks that the GPU's file holds the same tensors,
/// within the f32 tolerance of the GPU tests, with no single `p_inv` (these runs form no
/// P; the per-gate inversion's P_g are `p_inv.r` …). Returns the tensors' names, sorted.
fn gpu_matches_cpu(
    dir: &Path,
    what: &str,
    params: &Params,
    batch: &Batch,
    [flags, gpu_flags]: [&[&str]; 2],
) -> Vec<String> {
    let traced = |backend: &str| {
        let sub = dir.join(format!("{}-{backend}", what.replace(' ', "-")));
        std::fs::create_dir_all(&sub).unwrap();
        let mut all = flags.to_vec();
        all.extend(["--backend", backend]);
        if backend == "gpu" {
            all.extend(gpu_flags);
        }
        let [_, _, out] = run_trace(&sub, params, batch, Loss::CrossEntropy, &all);
        read_tensors(&out).unwrap()
    };
    let (cpu, gpu) = (traced("cpu"), traced("gpu"));
    let mut names: Vec<_> = cpu.keys().cloned().collect();
    names.sort();
    let mut gpu_names: Vec<_> = gpu.keys().cloned().collect();
    gpu_names.sort();
    assert_eq!(gpu_names, names, "{what}: the same tensors");
    assert!(!names.contains(&"p_inv".to_string()), "{what}: no P formed");
    let prefix = if params.cell == tpri::model::CellKind::Gru {
        "grad.gru."
    } else {
        "grad.rnn."
    };
    assert!(
        names.iter().any(|n| n.starts_with(prefix)),
        "{what}: {names:?}"
    );
    for name in &names {
        let as_floats = |t: &tpri::tensor_file::Tensor| match &t.data {
            TensorData::Float(v) => v.clone(),
            TensorData::Int(_) => panic!("{name} is not float"),
        };
        let (c, g) = (as_floats(&cpu[name]), as_floats(&gpu[name]));
        let e = check(&format!("{what}: {name}"), &column(&g), &column(&c), 1e-4);
        eprintln!("{what}: {name} {e:.2e}");
    }
    names
}

/// Issue #15's shape: `tpri trace --cell gru --inversion jacobian --backend gpu` at T = 20,
/// B = 4, d = 33 (the default cg_max_iter of 100), which llvmpipe's loop cap made the
/// backend refuse before the loops ran in bounded segments. It runs and matches the CPU,
/// as the adapter splits it and with `--steps-per-dispatch 3`.
#[test]
fn gpu_trace_of_the_issues_gru_shape_runs_in_segments() {
    let dir = scratch("gpu-segments");
    let dims = Dims {
        input: 3,
        hidden: 33,
        output: 4,
    };
    let (gru, batch) = problem(CellKind::Gru, 42, dims, 4, 20, Loss::CrossEntropy);
    let tp: &[&str] = &["--method", "tp"];
    gpu_matches_cpu(&dir, "gru auto", &gru, &batch, [tp, &[]]);
    let k3: &[&str] = &["--steps-per-dispatch", "3"];
    gpu_matches_cpu(&dir, "gru k3", &gru, &batch, [tp, k3]);
}

/// Checks the trace against `tests/independent/spec_numpy.py`, written from the mathematical contract (docs/ALGORITHM.md) alone.
/// Needs python3 with numpy and safetensors (`.ci/run` installs them).
#[test]
fn trace_agrees_with_independent_numpy_implementation() {
    let dir = scratch("numpy");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/spec_numpy.py");
    let dims = Dims {
        input: 2,
        hidden: 5,
        output: 3,
    };
    let modes = ["linearized", "difference", "plain"];
    for (case, (loss, method, mode, grad)) in [
        (Loss::CrossEntropy, "bp", "linearized", "through-time"),
        (Loss::Mse, "bp", "linearized", "through-time"),
        (Loss::CrossEntropy, "tp", modes[0], "through-time"),
        (Loss::Mse, "tp", modes[1], "through-time"),
        (Loss::CrossEntropy, "tp", modes[2], "local"),
        (Loss::Mse, "tp", modes[0], "local"),
    ]
    .into_iter()
    .enumerate()
    {
        let (params, batch) = problem(CellKind::Tanh, 100 + case as u64, dims, 4, 7, loss);
        let flags = numpy_flags(method, ["--target-mode", mode], grad);
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        let args = [loss_flag(loss), method, mode, LR_TARGET, REG, grad];
        numpy_agrees(&script, &paths, &args, &format!("case {case}"));
    }
}

/// Checks traces with outputs at every step (`--loss ce-seq`: BP, and TP-RI in every
/// target mode and both gradient modes) against `tests/independent/lm_numpy.py`, written
/// from docs/ALGORITHM.md §13 alone. Needs python3 with numpy and safetensors.
#[test]
fn every_step_traces_agree_with_independent_numpy_implementation() {
    let dir = scratch("numpy-lm");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/lm_numpy.py");
    let dims = Dims {
        input: 2,
        hidden: 5,
        output: 3,
    };
    for (case, (method, mode, grad)) in [
        ("bp", "linearized", "through-time"),
        ("tp", "linearized", "through-time"),
        ("tp", "difference", "through-time"),
        ("tp", "plain", "local"),
        ("tp", "linearized", "local"),
    ]
    .into_iter()
    .enumerate()
    {
        let loss = Loss::CrossEntropySeq;
        let (params, batch) = problem(CellKind::Tanh, 300 + case as u64, dims, 4, 7, loss);
        let flags = numpy_flags(method, ["--target-mode", mode], grad);
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        assert_eq!(floats(&paths[2], "step_losses").len(), 7, "case {case}");
        let args = [method, mode, LR_TARGET, REG, grad];
        numpy_agrees(&script, &paths, &args, &format!("lm case {case}"));
    }
}

/// Checks traces of the language model with a trained embedding table
/// (`--train-embedding`: BP, and TP-RI in every target mode and both gradient modes)
/// against `tests/independent/lm_numpy.py`, which gathers the inputs from the table and
/// sums δ_t U into the rows of ∇E: ∇E and every other tensor, at vocabularies of 7 and 33
/// words (most of the larger one's rows absent from the batch, so zero).
#[test]
fn trained_embedding_traces_agree_with_independent_numpy_implementation() {
    let dir = scratch("numpy-embedding");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/lm_numpy.py");
    let dims = Dims {
        input: 3,
        hidden: 5,
        output: 4,
    };
    for (case, (method, mode, grad, vocab)) in [
        ("bp", "linearized", "through-time", 7),
        ("tp", "linearized", "through-time", 33),
        ("tp", "difference", "local", 7),
        ("tp", "plain", "through-time", 33),
    ]
    .into_iter()
    .enumerate()
    {
        let loss = Loss::CrossEntropySeq;
        let seed = 400 + case as u64;
        let (mut params, mut batch) = problem(CellKind::Tanh, seed, dims, 4, 7, loss);
        support::embed(&mut rng(seed + 50), &mut params, &mut batch, vocab, 1.0);
        let mut flags = numpy_flags(method, ["--target-mode", mode], grad);
        flags.push("--train-embedding");
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        let grad_e = floats(&paths[2], "grad.embed.weight");
        assert_eq!(grad_e.len(), vocab * dims.input, "case {case}");
        assert!(grad_e.iter().any(|&g| g != 0.0), "case {case}: ∇E is zero");
        let args = [method, mode, LR_TARGET, REG, grad];
        numpy_agrees(&script, &paths, &args, &format!("embedding case {case}"));
    }
}

/// `--train-embedding` is refused for other losses, without embed.weight, and its absence
/// with embed.weight in the parameters, each with a message saying what to do.
#[test]
fn train_embedding_flag_is_checked_against_the_files() {
    let dir = scratch("embedding-flag");
    let dims = Dims {
        input: 2,
        hidden: 3,
        output: 4,
    };
    let loss = Loss::CrossEntropySeq;
    let (mut params, mut batch) = problem(CellKind::Tanh, 1, dims, 2, 3, loss);
    let paths = ["p", "b", "pe", "be"].map(|n| dir.join(format!("{n}.safetensors")));
    save_params(&paths[0], &params).unwrap();
    save_batch(&paths[1], &batch).unwrap();
    support::embed(&mut rng(2), &mut params, &mut batch, 5, 1.0);
    save_params(&paths[2], &params).unwrap();
    save_batch(&paths[3], &batch).unwrap();
    let [p, b, pe, be] = paths.each_ref().map(|p| p.to_str().unwrap());
    let out = dir.join("o.safetensors");
    let out = out.to_str().unwrap();
    let run = |params: &str, batch: &str, loss: &str, flag: bool| {
        let mut args = vec![
            "trace", "--params", params, "--batch", batch, "--loss", loss, "--method", "bp",
            "--out", out,
        ];
        if flag {
            args.push("--train-embedding");
        }
        let o = tpri(&args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (ok, err) = run(pe, be, "ce", true);
    assert!(!ok && err.contains("--loss ce-seq"), "{err}");
    let (ok, err) = run(p, b, "ce-seq", true);
    assert!(!ok && err.contains("embed.weight"), "{err}");
    let (ok, err) = run(pe, be, "ce-seq", false);
    assert!(!ok && err.contains("pass --train-embedding"), "{err}");
    // A batch without token ids for a trained table.
    let (ok, err) = run(pe, b, "ce-seq", true);
    assert!(!ok && err.contains("tensor tokens"), "{err}");
    assert!(run(pe, be, "ce-seq", true).0);
}

/// Checks GRU traces (BP; TP-RI through time and local) and the tanh RNN's jacobian
/// inversion against `tests/independent/jacobian_numpy.py`, which forms each J_t densely
/// from PyTorch's GRU equations and solves each step exactly.
#[test]
fn jacobian_inversion_traces_agree_with_independent_numpy_implementation() {
    let dir = scratch("numpy-jacobian");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/jacobian_numpy.py");
    let dims = Dims {
        input: 2,
        hidden: 5,
        output: 3,
    };
    for (case, (cell, loss, method, grad)) in [
        (CellKind::Gru, Loss::CrossEntropy, "bp", "through-time"),
        (CellKind::Gru, Loss::Mse, "tp", "through-time"),
        (CellKind::Gru, Loss::CrossEntropy, "tp", "local"),
        (CellKind::Tanh, Loss::CrossEntropy, "tp", "through-time"),
        (CellKind::Tanh, Loss::Mse, "tp", "local"),
    ]
    .into_iter()
    .enumerate()
    {
        let (params, batch) = problem(cell, 200 + case as u64, dims, 4, 7, loss);
        let flags = numpy_flags(method, ["--inversion", "jacobian"], grad);
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        let args = [loss_flag(loss), method, LR_TARGET, REG, grad];
        numpy_agrees(
            &script,
            &paths,
            &args,
            &format!("case {case} ({cell:?} {method} {grad})"),
        );
    }
}

/// Checks GRU traces with the published per-gate inversion against
/// `tests/independent/gru_per_gate_numpy.py`, which solves for each P_g exactly: through
/// time and local, both losses, the P_g by CG and by Cholesky, at odd sizes.
#[test]
fn per_gate_traces_agree_with_independent_numpy_implementation() {
    let dir = scratch("numpy-per-gate");
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/gru_per_gate_numpy.py");
    for (case, (d, b, t, loss, grad, solver)) in [
        (5, 4, 7, Loss::CrossEntropy, "through-time", "cg"),
        (7, 3, 6, Loss::Mse, "local", "cholesky"),
        (1, 1, 5, Loss::CrossEntropy, "through-time", "auto"),
        (33, 3, 4, Loss::Mse, "through-time", "cg"),
    ]
    .into_iter()
    .enumerate()
    {
        let dims = Dims {
            input: 2,
            hidden: d,
            output: 3,
        };
        let (params, batch) = problem(CellKind::Gru, 300 + case as u64, dims, b, t, loss);
        let mut flags = numpy_flags("tp", ["--inversion", "per-gate"], grad);
        flags.extend(["--solver", solver]);
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        for gate in ["r", "z", "n"] {
            assert_eq!(floats(&paths[2], &format!("p_inv.{gate}")).len(), d * d);
        }
        let args = [loss_flag(loss), LR_TARGET, REG, grad];
        numpy_agrees(
            &script,
            &paths,
            &args,
            &format!("case {case} (d={d}, B={b}, T={t}, {grad}, {solver})"),
        );
    }
}

/// `tpri trace --backend gpu --inversion per-gate`: the same tensors as the CPU trace
/// (the three P_g as p_inv.r, p_inv.z, p_inv.n), each within 1e-4 relative, at odd sizes.
/// Needs a GPU adapter (lavapipe will do) and fails without one.
#[test]
fn gpu_trace_of_the_per_gate_inversion_matches_cpu() {
    let dir = scratch("gpu-per-gate");
    for (case, (d, b, t, grad)) in [
        (1, 1, 3, "through-time"),
        (7, 3, 5, "local"),
        (33, 3, 4, "through-time"),
    ]
    .into_iter()
    .enumerate()
    {
        let dims = Dims {
            input: 3,
            hidden: d,
            output: 4,
        };
        let (params, batch) = problem(
            CellKind::Gru,
            60 + case as u64,
            dims,
            b,
            t,
            Loss::CrossEntropy,
        );
        let what = format!("per-gate case {case} (d={d}, B={b}, T={t}, {grad})");
        let flags = [
            "--method",
            "tp",
            "--inversion",
            "per-gate",
            "--tp-grad",
            grad,
        ];
        let names = gpu_matches_cpu(&dir, &what, &params, &batch, [&flags, &[]]);
        for want in ["p_inv.r", "p_inv.z", "p_inv.n", "v", "grad.gru.w_hh"] {
            assert!(
                names.iter().any(|n| n == want),
                "{what}: {want} in {names:?}"
            );
        }
    }
}

/// GRU parameters keep PyTorch's names and shapes through files: `gru.w_hh` [3d, d],
/// `gru.w_ih` [3d, p], `gru.b_ih` [3d], `gru.b_hh` [3d], and the trace's gradients likewise.
#[test]
fn gru_layout_round_trips_through_trace_files() {
    let dir = scratch("gru-layout");
    let (d, p, q) = (4, 3, 2);
    let dims = Dims {
        input: p,
        hidden: d,
        output: q,
    };
    let (params, batch) = problem(CellKind::Gru, 5, dims, 2, 3, Loss::CrossEntropy);
    let [pp, _, out] = run_trace(
        &dir,
        &params,
        &batch,
        Loss::CrossEntropy,
        &["--method", "tp"],
    );
    assert_eq!(load_params(&pp).unwrap(), params);
    let shapes = |path: &Path| -> Vec<(String, Vec<usize>)> {
        let mut all: Vec<_> = read_tensors(path)
            .unwrap()
            .into_iter()
            .map(|(name, t)| (name, t.shape))
            .collect();
        all.sort();
        all
    };
    let want = [
        ("gru.b_hh", vec![3 * d]),
        ("gru.b_ih", vec![3 * d]),
        ("gru.w_hh", vec![3 * d, d]),
        ("gru.w_ih", vec![3 * d, p]),
        ("head.b", vec![q]),
        ("head.w", vec![q, d]),
    ];
    let as_owned = |prefix: &str| -> Vec<(String, Vec<usize>)> {
        want.iter()
            .map(|(n, s)| (format!("{prefix}{n}"), s.clone()))
            .collect()
    };
    assert_eq!(shapes(&pp), as_owned(""));
    let grads: Vec<_> = shapes(&out)
        .into_iter()
        .filter(|(n, _)| n.starts_with("grad."))
        .collect();
    assert_eq!(grads, as_owned("grad."));
    // The GRU's row 0 of w_hh is W_r's first row: the file is row-major [3d, d].
    let w = floats(&pp, "gru.w_hh");
    assert_eq!(w[d + 1], params.w_hh[(1, 1)]);
    assert_eq!(w[2 * d * d], params.w_hh[(2 * d, 0)]);
    // The GRU has no closed-form inverse: asking for it is a clear error.
    let o = out.to_str().unwrap();
    let r = tpri(&[
        "trace",
        "--params",
        pp.to_str().unwrap(),
        "--batch",
        dir.join("b.safetensors").to_str().unwrap(),
        "--loss",
        "ce",
        "--method",
        "tp",
        "--inversion",
        "analytic",
        "--out",
        o,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("no closed-form inverse"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let dims = Dims {
        input: 3,
        hidden: 4,
        output: 2,
    };
    let (params, batch) = problem(CellKind::Tanh, 1, dims, 2, 3, Loss::CrossEntropy);
    let good_p = dir.join("p.safetensors");
    let good_b = dir.join("b.safetensors");
    save_params(&good_p, &params).unwrap();
    save_batch(&good_b, &batch).unwrap();
    // A batch with p = 5 inputs against rnn.w_ih with 3 columns.
    let (_, wide) = problem(
        CellKind::Tanh,
        2,
        Dims { input: 5, ..dims },
        2,
        3,
        Loss::CrossEntropy,
    );
    let wide_b = dir.join("wide.safetensors");
    save_batch(&wide_b, &wide).unwrap();
    // Parameters missing head.b.
    let mut t = tpri::tensor_file::params_tensors(&params, "");
    t.remove("head.b");
    let missing = dir.join("missing.safetensors");
    tpri::tensor_file::write_tensors(&missing, &t, None).unwrap();
    let garbage = dir.join("garbage.safetensors");
    write_atomic(
        &garbage,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all",
    )
    .unwrap();
    let out = dir.join("o.safetensors");
    let (gp, gb, o) = (
        good_p.to_str().unwrap(),
        good_b.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--params", wide_b.to_str().unwrap(), "--batch", gb],
            "has no tensor rnn.w_hh",
        ),
        (
            vec!["--params", gp, "--batch", wide_b.to_str().unwrap()],
            "tensor x",
        ),
        (
            vec!["--params", missing.to_str().unwrap(), "--batch", gb],
            "head.b",
        ),
        (
            vec!["--params", garbage.to_str().unwrap(), "--batch", gb],
            "not a valid safetensors",
        ),
        (
            vec!["--params", "/nonexistent/p.safetensors", "--batch", gb],
            "cannot read",
        ),
        (
            vec!["--params", gp, "--batch", gb, "--reg", "0"],
            "regularization",
        ),
        (
            vec!["--params", gp, "--batch", gb, "--inversion", "per-gate"],
            "--inversion: the per-gate inversion inverts the GRU's gate blocks",
        ),
        (
            vec![
                "--params", gp, "--batch", gb, "--reg=-1", "--solver", "cholesky",
            ],
            "regularization",
        ),
        (
            vec![
                "--params",
                gp,
                "--batch",
                gb,
                "--cg-tol",
                "1e-300",
                "--cg-max-iter",
                "1",
                "--reg",
                "0.001",
            ],
            "did not converge",
        ),
        (
            vec!["--params", gp, "--batch", gb, "--steps-per-dispatch", "0"],
            "at least 1",
        ),
        (
            vec![
                "--params",
                gp,
                "--batch",
                gb,
                "--backend",
                "cpu",
                "--steps-per-dispatch",
                "4",
            ],
            "applies to the GPU backend",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["trace", "--loss", "ce", "--method", "tp", "--out", o];
        args.extend(extra.iter());
        let r = tpri(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: message {err:?} should mention {needle:?}"
        );
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    }
    // MSE on integer labels.
    let r = tpri(&[
        "trace", "--params", gp, "--batch", gb, "--loss", "mse", "--method", "bp", "--out", o,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("mse"));
}
