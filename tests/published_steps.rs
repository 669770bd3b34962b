//! Several training steps against `tests/independent/published_steps.py`, an independent
//! NumPy implementation of the published update (nn.RNN's two biases, torch.optim's SGD,
//! Nesterov and Adam with their state carried over): tpri must take the same steps, not
//! only compute the same gradients once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use tpri::model::is_bias;
use tpri::prelude::*;
use tpri::tensor_file::{save_batch, save_params, write_tensors, Tensor};

mod cli_support;
mod support;

use cli_support::scratch;
use support::{random_batch, random_problem, rng, Init, Shape};

const STEPS: usize = 5;

fn tensor(name: &str, m: &tpri::nalgebra::DMatrix<f64>) -> Tensor {
    if is_bias(name) {
        Tensor::from_column(m)
    } else {
        Tensor::from_matrix(m)
    }
}

#[test]
fn training_steps_agree_with_the_published_update() {
    let dir = scratch("published-steps");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/published_steps.py");
    let s = Shape::new(4, 6, 2, 5, 3);
    let cases = [
        (
            Method::Tp,
            Loss::CrossEntropy,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            OptimizerKind::Nesterov,
            0.05,
        ),
        (
            Method::Bp,
            Loss::Mse,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            OptimizerKind::Sgd,
            0.1,
        ),
        (
            Method::Tp,
            Loss::CrossEntropy,
            TargetMode::Difference,
            TpGrad::Local,
            OptimizerKind::Adam,
            0.01,
        ),
        (
            Method::Tp,
            Loss::Mse,
            TargetMode::Plain,
            TpGrad::ThroughTime,
            OptimizerKind::Sgd,
            0.1,
        ),
        (
            Method::Bp,
            Loss::CrossEntropy,
            TargetMode::Linearized,
            TpGrad::ThroughTime,
            OptimizerKind::Adam,
            0.01,
        ),
    ];
    for (case, (method, loss, mode, tp_grad, kind, lr)) in cases.into_iter().enumerate() {
        let what = format!("case {case}: {method:?} {loss:?} {mode:?} {tp_grad:?} {kind:?}");
        let mut rng = rng(300 + case as u64);
        let init = Init::Library {
            seed: 300 + case as u64,
            gain: 1.0,
        };
        let (params, first) = random_problem(&mut rng, CellKind::Tanh, s, loss, init);
        assert!(
            params.b_hh.amax() > 0.0 && params.b.amax() > 0.0,
            "both biases non-zero"
        );
        let mut batches = vec![first];
        batches.extend((1..STEPS).map(|_| random_batch(&mut rng, s, loss)));
        let mut hyper = Hyper {
            method,
            loss,
            ..Hyper::default()
        };
        hyper.tp.target_mode = mode;
        hyper.tp.tp_grad = tp_grad;
        hyper.tp.lr_target = 0.3;
        hyper.tp.reg = 0.5;
        // The exact solve for P, which the NumPy twin uses too.
        hyper.tp.solver = Solver::Cholesky;
        hyper.opt.kind = kind;
        hyper.opt.lr = lr;
        hyper.opt.momentum = 0.9;

        let mut backend = CpuBackend::new();
        backend.load(&params, None, &hyper).unwrap();
        let mut trajectory = BTreeMap::new();
        let mut batch_paths = Vec::new();
        for (k, batch) in batches.iter().enumerate() {
            let path = dir.join(format!("case{case}-batch{k}.safetensors"));
            save_batch(&path, batch).unwrap();
            batch_paths.push(path);
            backend.step(batch).unwrap();
            let (now, _) = backend.state().unwrap();
            for (name, m) in now.tensors() {
                trajectory.insert(format!("step{}.{name}", k + 1), tensor(name, m));
            }
        }
        let (_, opt) = backend.state().unwrap();
        assert_eq!(opt.step, STEPS as u64, "{what}");
        let slots = match kind {
            OptimizerKind::Sgd => vec![],
            OptimizerKind::Nesterov => vec![("opt.m", &opt.m)],
            OptimizerKind::Adam => vec![("opt.m", &opt.m), ("opt.v", &opt.v)],
        };
        for (prefix, slot) in slots {
            for (name, m) in slot.tensors() {
                trajectory.insert(format!("{prefix}.{name}"), tensor(name, m));
            }
        }
        let params_path = dir.join(format!("case{case}-params.safetensors"));
        let trajectory_path = dir.join(format!("case{case}-trajectory.safetensors"));
        save_params(&params_path, &params).unwrap();
        write_tensors(&trajectory_path, &trajectory, None).unwrap();

        let flag = |s: &str| s.to_string();
        let mut args = vec![
            params_path.display().to_string(),
            trajectory_path.display().to_string(),
            flag(if loss == Loss::Mse { "mse" } else { "ce" }),
            flag(if method == Method::Bp { "bp" } else { "tp" }),
            flag(match mode {
                TargetMode::Linearized => "linearized",
                TargetMode::Difference => "difference",
                TargetMode::Plain => "plain",
            }),
            flag("0.3"),
            flag("0.5"),
            flag(match tp_grad {
                TpGrad::ThroughTime => "through-time",
                TpGrad::Local => "local",
            }),
            flag(match kind {
                OptimizerKind::Sgd => "sgd",
                OptimizerKind::Nesterov => "nesterov",
                OptimizerKind::Adam => "adam",
            }),
            lr.to_string(),
            flag("0.9"),
        ];
        args.extend(batch_paths.iter().map(|p| p.display().to_string()));
        let check = Command::new("python3")
            .arg(&script)
            .args(&args)
            .output()
            .expect("python3 is needed for this test (.ci/run installs numpy and safetensors)");
        assert!(
            check.status.success(),
            "{what}: disagrees or python3 lacks numpy/safetensors:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
