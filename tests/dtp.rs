//! DTP with a learned reverse layer (`--method dtp`, docs/ALGORITHM.md §14) on the CPU
//! reference: `tpri trace` against an independent NumPy implementation, training and
//! resuming through the CLI, the reverse layer in files, and what is refused.

use std::path::Path;

use tpri::backend::Backend;
use tpri::config::{Hyper, Loss, Method, OptimizerConfig, OptimizerKind, TpConfig};
use tpri::cpu::CpuBackend;
use tpri::dtp::ReverseLayer;
use tpri::model::{CellKind, Dims, Params};
use tpri::tasks::Batch;
use tpri::tensor_file::{
    load_params, read_tensors, save_batch, save_params, save_params_as, ParamNames,
};

mod cli_support;
mod support;

use cli_support::{loss_flag, numpy_agrees, run_trace, scratch, strs, tpri};
use support::{random, random_batch, rng, Shape};

/// DTP parameters at `seed` with every tensor non-zero: the library's DTP initialisation,
/// W scaled by 0.9, then biases (the cell's, the head's and the reverse layer's) uniform
/// in ±0.3; and a batch of B sequences of length T, all from a stream seeded with `seed`.
fn problem(seed: u64, dims: Dims, b: usize, t: usize, loss: Loss) -> (Params, Batch) {
    let mut r = rng(seed);
    let mut params = Params::init_dtp(dims, seed).unwrap();
    params.w_hh *= 0.9;
    params.b = random(&mut r, dims.hidden, 1, 0.3);
    params.b_hh = random(&mut r, dims.hidden, 1, 0.3);
    params.head_b = random(&mut r, dims.output, 1, 0.3);
    if let Some(rev) = &mut params.dtp {
        rev.b_rev = random(&mut r, dims.hidden, 1, 0.3);
    }
    let shape = Shape::new(b, t, dims.input, dims.hidden, dims.output);
    (params, random_batch(&mut r, shape, loss))
}

/// `tpri trace --method dtp` agrees with `tests/independent/dtp_numpy.py` (1e-10 relative
/// on every tensor: h, loss, v, and every gradient, the reverse layer's included), without
/// noise and with it (NumPy computes the noise stream from its definition). Needs python3
/// with numpy and safetensors (`.ci/run` installs them).
#[test]
fn dtp_trace_agrees_with_independent_numpy_implementation() {
    let dir = scratch("dtp-numpy");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/dtp_numpy.py");
    let cases = [
        (Loss::CrossEntropy, 1, "through-time", "0", "0"),
        (Loss::Mse, 7, "through-time", "0.3", "5"),
        (Loss::CrossEntropy, 7, "local", "0.1", "11"),
        (Loss::Mse, 33, "through-time", "0", "0"),
        (Loss::CrossEntropy, 33, "through-time", "0.2", "3"),
    ];
    for (case, (loss, d, grad, noise, seed)) in cases.into_iter().enumerate() {
        let dims = Dims {
            input: 2,
            hidden: d,
            output: 3,
        };
        let (params, batch) = problem(200 + case as u64, dims, 4, 6, loss);
        let flags = [
            "--method",
            "dtp",
            "--lr-target",
            "0.3",
            "--tp-grad",
            grad,
            "--noise",
            noise,
            "--seed",
            seed,
        ];
        let paths = run_trace(&dir, &params, &batch, loss, &flags);
        let traced = read_tensors(&paths[2]).unwrap();
        for name in ["v", "grad.dtp.w_rev", "grad.dtp.b_rev", "grad.rnn.w_hh"] {
            assert!(traced.contains_key(name), "the trace lacks {name}");
        }
        assert!(!traced.contains_key("p_inv"), "DTP forms no P");
        let args = [loss_flag(loss), "0.3", grad, noise, seed];
        numpy_agrees(&script, &paths, &args, &format!("case {case}"));
    }
}

/// The settings of a DTP run: SGD with Nesterov momentum, γ_h 0.2, lr_reverse 0.01.
fn dtp_hyper(loss: Loss, noise: f64) -> Hyper {
    let mut hyper = Hyper {
        method: Method::Dtp,
        loss,
        tp: TpConfig {
            lr_target: 0.2,
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
    hyper.dtp.lr_reverse = 0.01;
    hyper.dtp.noise = noise;
    hyper.dtp.noise_seed = 4;
    hyper
}

/// A training step moves the reverse layer by its own learning rate before the targets
/// are computed: the step's reverse layer is the one given minus lr_reverse times its
/// gradient (SGD), the targets of the step are those of a trace at the updated layer, and
/// the cell moves by lr along the surrogate's gradient of that trace.
#[test]
fn a_step_updates_the_reverse_layer_first_then_the_rest() {
    let dims = Dims {
        input: 2,
        hidden: 5,
        output: 3,
    };
    let (params, batch) = problem(31, dims, 3, 5, Loss::Mse);
    let mut hyper = dtp_hyper(Loss::Mse, 0.0);
    hyper.opt.kind = OptimizerKind::Sgd;
    let mut cpu = CpuBackend::new();
    let before = cpu.trace(&params, &batch, &hyper).unwrap();
    let rev_grad = before.grads.dtp.clone().unwrap();
    let moved = ReverseLayer {
        w_rev: &params.dtp.as_ref().unwrap().w_rev - &rev_grad.w_rev * hyper.dtp.lr_reverse,
        b_rev: &params.dtp.as_ref().unwrap().b_rev - &rev_grad.b_rev * hyper.dtp.lr_reverse,
    };
    let at_moved = Params {
        dtp: Some(moved.clone()),
        ..params.clone()
    };
    let after_reverse = cpu.trace(&at_moved, &batch, &hyper).unwrap();
    cpu.load(&params, None, &hyper).unwrap();
    cpu.step(&batch).unwrap();
    let (stepped, opt) = cpu.state().unwrap();
    assert_eq!(opt.step, 1);
    let rev = stepped.dtp.as_ref().unwrap();
    assert!((&rev.w_rev - &moved.w_rev).amax() < 1e-15);
    assert!((&rev.b_rev - &moved.b_rev).amax() < 1e-15);
    let want_w = &params.w_hh - &after_reverse.grads.w_hh * hyper.opt.lr;
    assert!((&stepped.w_hh - &want_w).amax() < 1e-15);
    let want_head = &params.head_w - &after_reverse.grads.head_w * hyper.opt.lr;
    assert!((&stepped.head_w - &want_head).amax() < 1e-15);
}

/// `tpri train --method dtp` on the CPU, stopped and resumed, reproduces the
/// uninterrupted run bit for bit (the reverse layer, its optimizer slots and the noise
/// stream keyed by the iteration all come back), and its checkpoint holds the reverse
/// layer and its slots.
#[test]
fn dtp_training_resumes_bit_for_bit_with_noise() {
    let dir = scratch("dtp-resume");
    let run = |path: &Path, iterations: &str| -> Vec<String> {
        [
            "train",
            "--task",
            "adding",
            "--seq-len",
            "10",
            "--hidden",
            "6",
            "--batch-size",
            "4",
            "--eval-size",
            "8",
            "--method",
            "dtp",
            "--optimizer",
            "nesterov",
            "--lr",
            "0.02",
            "--lr-target",
            "0.1",
            "--lr-reverse",
            "0.01",
            "--noise",
            "0.1",
            "--eval-every",
            "4",
            "--log-every",
            "2",
            "--checkpoint-every",
            "4",
            "--backend",
            "cpu",
            "--seed",
            "3",
            "--iterations",
            iterations,
            "--run-dir",
            path.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let (whole, parts) = (dir.join("whole"), dir.join("parts"));
    let ok = |args: Vec<String>| {
        let out = tpri(&strs(&args));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(run(&whole, "12"));
    ok(run(&parts, "8"));
    ok(vec![
        "train".into(),
        "--resume".into(),
        parts.to_str().unwrap().into(),
        "--iterations".into(),
        "12".into(),
        "--backend".into(),
        "cpu".into(),
    ]);
    let tensors = |dir: &Path| read_tensors(&dir.join("checkpoint.safetensors")).unwrap();
    let (a, b) = (tensors(&whole), tensors(&parts));
    for name in [
        "params.dtp.w_rev",
        "params.dtp.b_rev",
        "opt.m.dtp.w_rev",
        "opt.m.dtp.b_rev",
        "params.rnn.w_hh",
    ] {
        assert!(a.contains_key(name), "the checkpoint lacks {name}");
        assert_eq!(a[name], b[name], "{name} differs after the resume");
    }
    let losses = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(dir.join("log.csv"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(',').collect();
                f.remove(1); // elapsed time
                f.join(",")
            })
            .collect()
    };
    assert_eq!(losses(&whole), losses(&parts));
    let config = std::fs::read_to_string(whole.join("config.toml")).unwrap();
    assert!(config.contains("[hyper.dtp]") && config.contains("noise = 0.1"));
}

/// The DTP presets exist with the published settings, are listed, and one trains a few
/// iterations end to end on the CPU.
#[test]
fn dtp_presets_are_listed_and_train() {
    let listed = String::from_utf8(tpri(&["presets"]).stdout).unwrap();
    for name in [
        "adding-30-dtp",
        "temporal-order-60-dtp",
        "temporal-order-120-dtp",
        "pixel-mnist-dtp",
        "permuted-mnist-dtp",
    ] {
        assert!(listed.contains(name), "tpri presets lacks {name}");
    }
    let cfg = tpri::presets::preset("pixel-mnist-dtp").unwrap();
    assert_eq!(cfg.hyper.method, Method::Dtp);
    assert_eq!(
        (
            cfg.hyper.opt.lr,
            cfg.hyper.tp.lr_target,
            cfg.hyper.dtp.lr_reverse,
            cfg.hyper.dtp.noise
        ),
        (1e-2, 1e-7, 1e-8, 0.1)
    );
    assert_eq!(cfg.hyper.opt.kind, OptimizerKind::Sgd);
    let cfg = tpri::presets::preset("adding-30-dtp").unwrap();
    assert_eq!(
        (cfg.hyper.opt.kind, cfg.hyper.opt.momentum, cfg.hyper.opt.lr),
        (OptimizerKind::Nesterov, 0.9, 1e-2)
    );
    assert_eq!(
        (
            cfg.hyper.tp.lr_target,
            cfg.hyper.dtp.lr_reverse,
            cfg.hyper.dtp.noise
        ),
        (0.1, 1e-3, 0.0)
    );
    let dir = scratch("dtp-preset");
    let path = dir.join("run");
    let out = tpri(&[
        "train",
        "--preset",
        "adding-30-dtp",
        "--iterations",
        "5",
        "--eval-size",
        "20",
        "--hidden",
        "16",
        "--backend",
        "cpu",
        "--run-dir",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("training with DTP"));
}

/// The reverse layer goes through parameter files under tpri's names and under the
/// published module's (`reverse_Vhh`, `reverse_ch`); a file with half of it is refused.
#[test]
fn the_reverse_layer_round_trips_through_files() {
    let dir = scratch("dtp-files");
    let dims = Dims {
        input: 3,
        hidden: 4,
        output: 2,
    };
    let (params, _) = problem(5, dims, 2, 3, Loss::Mse);
    for names in [ParamNames::Tpri, ParamNames::Torch] {
        let path = dir.join(format!("{names:?}.safetensors"));
        save_params_as(&path, &params, names).unwrap();
        assert_eq!(load_params(&path).unwrap(), params, "{names:?}");
    }
    let mut half = read_tensors(&dir.join("Tpri.safetensors")).unwrap();
    half.remove("dtp.b_rev");
    let path = dir.join("half.safetensors");
    tpri::tensor_file::write_tensors(&path, &half.into_iter().collect(), None).unwrap();
    let err = format!("{:#}", load_params(&path).unwrap_err());
    assert!(err.contains("dtp.w_rev without dtp.b_rev"), "{err}");
}

/// DTP without a reverse layer, TP-RI or BP with one, and DTP on a GRU are errors that
/// say what to do, from the library and from `tpri trace`.
#[test]
fn mismatched_reverse_layers_and_cells_are_refused() {
    let dims = Dims {
        input: 2,
        hidden: 3,
        output: 2,
    };
    let (params, batch) = problem(9, dims, 2, 4, Loss::CrossEntropy);
    let hyper = dtp_hyper(Loss::CrossEntropy, 0.0);
    let mut cpu = CpuBackend::new();
    let without = Params {
        dtp: None,
        ..params.clone()
    };
    let err = format!("{:#}", cpu.trace(&without, &batch, &hyper).unwrap_err());
    assert!(
        err.contains("Params::dtp") && err.contains("init_dtp"),
        "{err}"
    );
    let tp = Hyper {
        method: Method::Tp,
        ..hyper.clone()
    };
    let err = format!("{:#}", cpu.load(&params, None, &tp).unwrap_err());
    assert!(err.contains("only Method::Dtp trains"), "{err}");
    let gru = Params::init_of(CellKind::Gru, dims, 1).unwrap();
    let err = format!("{:#}", cpu.load(&gru, None, &hyper).unwrap_err());
    assert!(err.contains("GRU"), "{err}");
    let bad = Hyper {
        dtp: tpri::config::DtpConfig {
            noise: -1.0,
            ..hyper.dtp.clone()
        },
        ..hyper.clone()
    };
    let err = format!("{:#}", cpu.trace(&params, &batch, &bad).unwrap_err());
    assert!(err.contains("Hyper::dtp.noise"), "{err}");

    let dir = scratch("dtp-refused");
    let [p, b] = ["p", "b"].map(|n| dir.join(format!("{n}.safetensors")));
    save_params(&p, &without).unwrap();
    save_batch(&b, &batch).unwrap();
    let out = tpri(&[
        "trace",
        "--method",
        "dtp",
        "--params",
        p.to_str().unwrap(),
        "--batch",
        b.to_str().unwrap(),
        "--loss",
        "ce",
        "--out",
        dir.join("o").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dtp.w_rev"), "{err}");
    let out = tpri(&[
        "train",
        "--method",
        "dtp",
        "--cell",
        "gru",
        "--iterations",
        "1",
        "--backend",
        "cpu",
        "--run-dir",
        dir.join("gru").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GRU"));
}
