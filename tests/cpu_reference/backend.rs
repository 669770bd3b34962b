//! The CPU reference driven through the `Backend` trait, as the training loop drives it.

use tpri::backend::Backend;
use tpri::config::{Hyper, Loss, Method, OptimizerConfig, OptimizerKind, Solver};
use tpri::cpu::forward::forward;
use tpri::cpu::head::head;
use tpri::cpu::inverse::inverse_cg;
use tpri::cpu::iteration::iteration;
use tpri::cpu::CpuBackend;
use tpri::model::{CellKind, Dims, Params};
use tpri::optimizer_state::OptState;
use tpri::tasks::Batch;

use crate::common::*;
use crate::support::*;

const SHAPE: Shape = Shape::new(4, 6, 3, 8, 3);

fn setup(seed: u64) -> (Params, Batch) {
    random_problem(
        &mut rng(seed),
        CellKind::Tanh,
        SHAPE,
        Loss::CrossEntropy,
        Init::Gaussian { w_gain: 1.0 },
    )
}

fn hyper(method: Method, kind: OptimizerKind, lr: f64) -> Hyper {
    Hyper {
        method,
        loss: Loss::CrossEntropy,
        opt: OptimizerConfig {
            kind,
            lr,
            ..OptimizerConfig::default()
        },
        ..Hyper::default()
    }
}

/// BP with a small step on a fixed batch: the loss goes down every step, each step's
/// reported loss is the loss before it, and `evaluate` and `state` agree with the head.
#[test]
fn bp_steps_decrease_the_loss() {
    let (params, batch) = setup(80);
    let mut be = CpuBackend::new();
    be.load(&params, None, &hyper(Method::Bp, OptimizerKind::Sgd, 0.05))
        .unwrap();
    let mut losses = vec![];
    for _ in 0..6 {
        be.step(&batch).unwrap();
        let stats = be.last_stats().unwrap();
        assert!(stats.cg.is_none(), "BP solves nothing");
        losses.push(stats.loss);
    }
    assert!(
        (losses[0] - naive_loss(&params, &batch, Loss::CrossEntropy)).abs() < 1e-13,
        "the first step reports the loss at the loaded parameters"
    );
    let eval = be.evaluate(&batch).unwrap();
    losses.push(eval.loss);
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "losses {losses:?}");

    let (now, opt) = be.state().unwrap();
    assert_eq!(opt.step, 6);
    assert_ne!(now, params);
    let out = head(
        &now,
        &forward(&now, &batch.x).unwrap()[SHAPE.t],
        &batch.y,
        Loss::CrossEntropy,
    )
    .unwrap();
    assert_eq!((eval.loss, eval.accuracy), (out.loss, out.accuracy));
}

/// One SGD step leaves exactly θ − lr·∇ as `state`, with ∇ the iteration's gradients, for
/// BP and for TP (surrogate gradient for the RNN, loss gradient for the head).
#[test]
fn state_holds_the_updated_parameters() {
    for method in [Method::Bp, Method::Tp] {
        let (params, batch) = setup(81);
        let hy = hyper(method, OptimizerKind::Sgd, 0.3);
        let mut be = CpuBackend::new();
        let trace = be.trace(&params, &batch, &hy).unwrap();
        let same = iteration(&params, &batch, &hy, None).unwrap();
        assert_eq!(
            trace.grads, same.grads,
            "{method:?}: trace is the iteration"
        );
        be.load(&params, None, &hy).unwrap();
        be.step(&batch).unwrap();
        let (now, _) = be.state().unwrap();
        for ((name, got), ((_, th), (_, g))) in now
            .tensors()
            .into_iter()
            .zip(params.tensors().into_iter().zip(trace.grads.tensors()))
        {
            assert_eq!(got, &(th - g * 0.3), "{method:?}: {name}");
        }
    }
}

/// TP with CG reports its solve, and every CPU step solves from a cold start: the
/// reference keeps no hidden solver state, so a run resumed from a checkpoint (parameters
/// and optimizer state only) reproduces the uninterrupted run exactly.
#[test]
fn tp_steps_solve_cold() {
    let s = Shape { d: 30, ..SHAPE };
    let (params, batch) = random_problem(
        &mut rng(82),
        CellKind::Tanh,
        s,
        Loss::CrossEntropy,
        Init::Gaussian { w_gain: 1.0 },
    );
    let mut hy = hyper(Method::Tp, OptimizerKind::Sgd, 1e-3);
    hy.tp.solver = Solver::Cg;
    hy.tp.reg = 10.0;
    let mut be = CpuBackend::new();
    be.load(&params, None, &hy).unwrap();
    be.step(&batch).unwrap();
    let first = be.last_stats().unwrap().cg.expect("CG ran");
    assert!(first.iterations >= 1 && first.residual <= 1e-12);
    let (moved, _) = be.state().unwrap();
    be.step(&batch).unwrap();
    let second = be.last_stats().unwrap().cg.expect("CG ran");
    let (_, cold) = inverse_cg(&moved.w_hh, 10.0, 1e-12, 100, None).unwrap();
    assert_eq!(second, cold);
}

/// Loading saved parameters and optimizer state continues training exactly where it was:
/// two Nesterov steps in one go equal one step, a save, a fresh backend and one step.
#[test]
fn loading_a_state_resumes_exactly() {
    let (params, batch) = setup(83);
    let hy = hyper(Method::Bp, OptimizerKind::Nesterov, 0.1);
    let mut straight = CpuBackend::new();
    straight.load(&params, None, &hy).unwrap();
    straight.step(&batch).unwrap();
    let (mid, opt) = straight.state().unwrap();
    straight.step(&batch).unwrap();

    let mut resumed = CpuBackend::new();
    resumed.load(&mid, Some(&opt), &hy).unwrap();
    resumed.step(&batch).unwrap();
    assert_eq!(resumed.state().unwrap(), straight.state().unwrap());
}

/// Misuse is an error, not a panic: nothing loaded, no step yet, a state of other sizes.
#[test]
fn misuse_is_reported() {
    let (params, batch) = setup(84);
    let hy = hyper(Method::Bp, OptimizerKind::Adam, 0.01);
    let mut be = CpuBackend::new();
    assert!(be.step(&batch).is_err());
    assert!(be.evaluate(&batch).is_err());
    assert!(be.state().is_err());
    be.load(&params, None, &hy).unwrap();
    assert!(be.last_stats().is_err());
    let other = OptState::new(
        &Params::zeros(Dims {
            input: 1,
            hidden: 2,
            output: 1,
        })
        .unwrap(),
    );
    assert!(be.load(&params, Some(&other), &hy).is_err());
    let mut half = OptState::new(&params);
    half.v = other.v;
    assert!(
        be.load(&params, Some(&half), &hy).is_err(),
        "second moments too"
    );
}

/// A CG solve that misses its tolerance fails the step with the numbers, and leaves the
/// parameters and optimizer state as they were.
#[test]
fn a_failed_solve_fails_the_step_and_changes_nothing() {
    let (params, batch) = setup(85);
    let mut hy = hyper(Method::Tp, OptimizerKind::Sgd, 0.1);
    hy.tp.solver = Solver::Cg;
    hy.tp.cg_max_iter = 1;
    let mut be = CpuBackend::new();
    be.load(&params, None, &hy).unwrap();
    let err = be.step(&batch).unwrap_err();
    let cg = tpri::error::cg_error(&err).expect("a CgError");
    assert_eq!(cg.report.iterations, 1);
    let (now, opt) = be.state().unwrap();
    assert_eq!((now, opt.step), (params, 0));
    assert!(be.last_stats().is_err(), "no step completed");
}
