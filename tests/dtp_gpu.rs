//! DTP (`--method dtp`, docs/ALGORITHM.md §14) on the GPU against the f64 reference: one
//! iteration's every quantity, 50 training steps side by side, and the CLI on
//! `--backend gpu`. Needs a GPU adapter (lavapipe will do) and fails without one.

use tpri::backend::Backend;
use tpri::config::{Loss, TpGrad};
use tpri::cpu::CpuBackend;
use tpri::gpu::{GpuBackend, Storage};
use tpri::model::{Dims, Params};
use tpri::tensor_file::{read_tensors, save_batch, save_params};

mod cli_support;
mod gpu_support;
mod support;

use cli_support::{scratch, tpri};
use gpu_support::{compare_dtp, ctx, dtp_hyper, dtp_problem, train_side_by_side};
use support::Shape;

/// Random problems at odd sizes (d = 1, 7, 33; T and B off every grid), with and without
/// noise, both losses, both gradient modes, and the pixel setting's tiny γ_h: the GPU's
/// trace matches the reference's within 1e-4.
#[test]
fn gpu_dtp_traces_match_the_reference() {
    let cases = [
        (
            Shape::new(3, 5, 2, 1, 4),
            Loss::CrossEntropy,
            0.3,
            0.0,
            TpGrad::ThroughTime,
        ),
        (
            Shape::new(5, 9, 3, 7, 1),
            Loss::Mse,
            0.5,
            0.2,
            TpGrad::ThroughTime,
        ),
        (
            Shape::new(4, 13, 1, 33, 3),
            Loss::CrossEntropy,
            0.2,
            0.1,
            TpGrad::Local,
        ),
        (
            Shape::new(7, 11, 2, 33, 1),
            Loss::Mse,
            1e-7,
            0.1,
            TpGrad::ThroughTime,
        ),
        (
            Shape::new(2, 1, 3, 7, 2),
            Loss::CrossEntropy,
            0.4,
            0.3,
            TpGrad::ThroughTime,
        ),
    ];
    let mut gpu = GpuBackend::new(ctx());
    for (i, (s, loss, lr_target, noise, grad)) in cases.into_iter().enumerate() {
        let (params, batch) = dtp_problem(50 + i as u64, s, loss);
        let hyper = dtp_hyper(loss, lr_target, noise, grad);
        let want = CpuBackend::new().trace(&params, &batch, &hyper).unwrap();
        let got = gpu.trace(&params, &batch, &hyper).unwrap();
        let what = format!("case {i} ({s:?}, σ = {noise}, γ_h = {lr_target})");
        let worst = compare_dtp(&what, &got, &want);
        eprintln!("{what}: worst relative error {worst:.2e}");
    }
}

/// 50 DTP training steps with noise on both backends stay together
/// (`gpu_support::train_side_by_side`: the loss every fifth step, the evaluation, the
/// parameters, the reverse layer's among them, and the momentum after them, and the last
/// step's per-step norms, within 1e-3, as for TP-RI in gpu_iteration.rs), and the reverse
/// layer trains; with and without `--clip-norm`.
#[test]
fn fifty_dtp_training_steps_agree_with_reference() {
    let dims = Dims {
        input: 2,
        hidden: 16,
        output: 1,
    };
    let start = Params::init_dtp(dims, 3).unwrap();
    // And with a gradient-norm limit below the gradients' norms, which DTP's two updates
    // each apply to their own tensors (docs/ALGORITHM.md §8).
    for clip_norm in [None, Some(0.01)] {
        let mut hyper = dtp_hyper(Loss::Mse, 0.1, 0.1, TpGrad::ThroughTime);
        hyper.opt.clip_norm = clip_norm;
        let what = format!("DTP, clip {clip_norm:?}");
        let run = train_side_by_side(&start, &hyper, &what);
        let moved = &run.params.dtp.as_ref().unwrap().w_rev - &start.dtp.as_ref().unwrap().w_rev;
        assert!(moved.norm() > 0.0, "{what}: the reverse layer trains");
        eprintln!("{what}: worst loss gap over 50 steps: {:.2e}", run.worst);
    }
}

/// f16 storage is refused for DTP, with the storage named.
#[test]
fn f16_storage_is_refused_for_dtp() {
    let (params, batch) = dtp_problem(1, Shape::new(2, 3, 2, 4, 2), Loss::CrossEntropy);
    let hyper = dtp_hyper(Loss::CrossEntropy, 0.1, 0.0, TpGrad::ThroughTime);
    let mut gpu = GpuBackend::with_storage(ctx(), Storage::F16);
    let err = format!("{:#}", gpu.trace(&params, &batch, &hyper).unwrap_err());
    assert!(
        err.contains("f16 storage is not implemented for DTP"),
        "{err}"
    );
}

/// `tpri trace --method dtp --backend gpu` writes v and the reverse layer's gradients, and
/// `tpri train --method dtp --backend gpu` runs end to end.
#[test]
fn dtp_on_the_gpu_through_the_cli() {
    let dir = scratch("dtp-gpu-cli");
    let s = Shape::new(3, 6, 2, 5, 1);
    let (params, batch) = dtp_problem(8, s, Loss::Mse);
    let [p, b, o] = ["p", "b", "o"].map(|n| dir.join(format!("{n}.safetensors")));
    save_params(&p, &params).unwrap();
    save_batch(&b, &batch).unwrap();
    let out = tpri(&[
        "trace",
        "--method",
        "dtp",
        "--backend",
        "gpu",
        "--params",
        p.to_str().unwrap(),
        "--batch",
        b.to_str().unwrap(),
        "--loss",
        "mse",
        "--noise",
        "0.1",
        "--out",
        o.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traced = read_tensors(&o).unwrap();
    for name in [
        "v",
        "h",
        "grad.dtp.w_rev",
        "grad.dtp.b_rev",
        "grad.rnn.w_hh",
        "grad.head.w",
    ] {
        assert!(traced.contains_key(name), "the GPU trace lacks {name}");
    }
    let run = dir.join("run");
    let out = tpri(&[
        "train",
        "--preset",
        "adding-30-dtp",
        "--seq-len",
        "12",
        "--hidden",
        "8",
        "--iterations",
        "20",
        "--eval-size",
        "16",
        "--log-every",
        "5",
        "--backend",
        "gpu",
        "--noise",
        "0.05",
        "--run-dir",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("training with DTP on gpu"), "{stdout}");
    let ckpt = read_tensors(&run.join("checkpoint.safetensors")).unwrap();
    assert!(ckpt.contains_key("params.dtp.w_rev") && ckpt.contains_key("opt.m.dtp.b_rev"));
}
