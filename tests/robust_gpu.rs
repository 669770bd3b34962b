//! The GPU twins of the kernels (`gpu::one_shot`) check their arguments as their CPU
//! references do (`tests/robust_kernels.rs`): each is called once with arguments that
//! fit (Ok) and then with each argument in turn of a wrong shape, a wrong number of steps
//! or an impossible value, and must return an error naming the problem, never panic (a
//! wrong-sized upload would otherwise be a wgpu validation panic or an assertion).
//! Needs a GPU adapter (lavapipe will do) and fails without one.

mod gpu_support;
mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use anyhow::Result;
use nalgebra::DMatrix;

use gpu_support::{ctx, start};
use support::{dims, inputs, random, rng};
use tpri::config::{Loss, OptimizerConfig, Preconditioner, TargetMode};
use tpri::gpu::one_shot;
use tpri::kernel_io::Injection;
use tpri::model::{CellKind, Params};
use tpri::optimizer_state::OptState;
use tpri::tasks::Targets;

/// A call and whether it should succeed.
type Case<'a> = (&'a str, bool, Box<dyn Fn() -> Result<()> + 'a>);

/// Runs every case under `catch_unwind`: the good ones must return Ok, the others an
/// error; no case may panic. Names every case that did otherwise.
fn run(cases: Vec<Case<'_>>) {
    let mut wrong = Vec::new();
    for (what, good, call) in &cases {
        match catch_unwind(AssertUnwindSafe(call)) {
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                wrong.push(format!("{what}: panicked: {msg}"));
            }
            Ok(Ok(())) if !good => wrong.push(format!("{what}: accepted")),
            Ok(Err(e)) if *good => wrong.push(format!("{what}: refused: {e:#}")),
            Ok(Err(e)) => eprintln!("{what}: {e:#}"),
            Ok(Ok(())) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// A case that must succeed, and one that must fail.
fn ok<'a>(what: &'a str, call: impl Fn() -> Result<()> + 'a) -> Case<'a> {
    (what, true, Box::new(call))
}

fn bad<'a>(what: &'a str, call: impl Fn() -> Result<()> + 'a) -> Case<'a> {
    (what, false, Box::new(call))
}

/// `params` with the tensor `i` (`Params::tensors_mut` order) one row short.
fn broken(params: &Params, i: usize) -> Params {
    let mut p = params.clone();
    let m = &mut p.tensors_mut()[i];
    **m = DMatrix::zeros(m.nrows().saturating_sub(1), m.ncols());
    p
}

#[test]
fn gpu_twins_refuse_arguments_that_do_not_fit() {
    let ctx = ctx();
    let (t, b, p, d, q) = (3, 2, 2, 3, 2);
    let mut r = rng(1);
    let tanh = start(CellKind::Tanh, dims(p, d, q), 1, 0.0);
    let gru = start(CellKind::Gru, dims(p, d, q), 2, 0.0);
    let x = inputs(&mut r, t, b, p);
    let h = tpri::cpu::forward::forward(&tanh, &x).unwrap();
    let h_gru = tpri::cpu::gru::gru_forward(&gru, &x).unwrap();
    let g = random(&mut r, b, d, 0.1);
    let wide = random(&mut r, b, d + 1, 0.1);
    let square = random(&mut r, d, d, 0.5);
    let labels = Targets::Labels(vec![0, 1]);
    let step_labels = Targets::StepLabels(DMatrix::from_element(b, t, 1));
    let short = |h: &[DMatrix<f64>]| h[..t].to_vec();
    let odd_step = |h: &[DMatrix<f64>]| {
        let mut h = h.to_vec();
        h[1] = DMatrix::zeros(b, d + 1);
        h
    };
    let mut x_odd = x.clone();
    x_odd[2] = DMatrix::zeros(b, p + 1);
    let ctx = &*ctx;
    let forward = |params: &Params, x: &[DMatrix<f64>]| one_shot::forward(ctx, params, x).map(drop);
    let bptt = |h: &[DMatrix<f64>], injection: Injection| {
        one_shot::bptt(ctx, &tanh, &x, h, injection, true).map(drop)
    };
    let sweep = |p_inv: &DMatrix<f64>, h: &[DMatrix<f64>], g: &DMatrix<f64>| {
        one_shot::target_sweep(ctx, &tanh, p_inv, &x, h, g, 0.1, TargetMode::Linearized).map(drop)
    };
    let jacobian = |h: &[DMatrix<f64>], v_top: &DMatrix<f64>| {
        one_shot::jacobian_sweep(
            ctx,
            &gru,
            &x,
            h,
            v_top,
            1.0,
            1e-5,
            50,
            Preconditioner::Jacobi,
        )
        .map(drop)
    };
    let per_gate = |p_gates: &[DMatrix<f64>; 3], h: &[DMatrix<f64>], v_top: &DMatrix<f64>| {
        one_shot::gru_per_gate_sweep(ctx, &gru, p_gates, &x, h, v_top).map(drop)
    };
    let step = |grads: &Params, state: &OptState| {
        let (mut params, mut state) = (tanh.clone(), state.clone());
        one_shot::optimizer_step(
            ctx,
            &OptimizerConfig::default(),
            &mut state,
            &mut params,
            grads,
        )
    };
    let fresh = OptState::new(&tanh);
    let gates = [square.clone(), square.clone(), square.clone()];
    let mut cases = vec![
        ok("forward", || forward(&tanh, &x)),
        bad("forward, x with a wrong step", || forward(&tanh, &x_odd)),
        bad("forward, no steps", || forward(&tanh, &[])),
        ok("gru_forward", || {
            one_shot::gru_forward(ctx, &gru, &x).map(drop)
        }),
        bad("gru_forward of a tanh RNN", || {
            one_shot::gru_forward(ctx, &tanh, &x).map(drop)
        }),
        ok("bptt", || bptt(&h, Injection::Top(&g))),
        bad("bptt, h one step short", || {
            bptt(&short(&h), Injection::Top(&g))
        }),
        bad("bptt, h with a wrong step", || {
            bptt(&odd_step(&h), Injection::Top(&g))
        }),
        bad("bptt, g_T too wide", || bptt(&h, Injection::Top(&wide))),
        bad("bptt, targets one step short", || {
            bptt(&h, Injection::Targets(&short(&h)))
        }),
        bad("bptt, targets with a wrong step", || {
            bptt(&h, Injection::Targets(&odd_step(&h)))
        }),
        bad("bptt, gradients with a wrong step", || {
            bptt(&h, Injection::Steps(&odd_step(&h)))
        }),
        ok("gru_bptt", || {
            one_shot::gru_bptt(ctx, &gru, &x, &h_gru, Injection::Targets(&h_gru), true).map(drop)
        }),
        bad("gru_bptt, targets with a wrong step", || {
            one_shot::gru_bptt(
                ctx,
                &gru,
                &x,
                &h_gru,
                Injection::Targets(&odd_step(&h_gru)),
                true,
            )
            .map(drop)
        }),
        ok("head", || {
            one_shot::head(ctx, &tanh, &h[t], &labels, Loss::CrossEntropy).map(drop)
        }),
        bad("head, h_T too wide", || {
            one_shot::head(ctx, &tanh, &wide, &labels, Loss::CrossEntropy).map(drop)
        }),
        ok("head_steps", || {
            one_shot::head_steps(ctx, &tanh, &h, &step_labels, 2).map(drop)
        }),
        bad("head_steps, h with a wrong step", || {
            one_shot::head_steps(ctx, &tanh, &odd_step(&h), &step_labels, 2).map(drop)
        }),
        ok("inverse_cg", || {
            one_shot::inverse_cg(ctx, &square, 1.0, 1e-5, 50, None).map(drop)
        }),
        bad("inverse_cg, a warm start of the wrong shape", || {
            one_shot::inverse_cg(ctx, &square, 1.0, 1e-5, 50, Some(&wide)).map(drop)
        }),
        bad("inverse_cg, r = NaN", || {
            one_shot::inverse_cg(ctx, &square, f64::NAN, 1e-5, 50, None).map(drop)
        }),
        ok("target_sweep", || sweep(&square, &h, &g)),
        bad("target_sweep, P too wide", || {
            sweep(&random(&mut rng(3), d, d + 1, 0.1), &h, &g)
        }),
        bad("target_sweep, h with a wrong step", || {
            sweep(&square, &odd_step(&h), &g)
        }),
        bad("target_sweep, g_T too wide", || sweep(&square, &h, &wide)),
        ok("jvp", || one_shot::jvp(ctx, &gru, &x, 2, &g).map(drop)),
        bad("jvp at step 0", || {
            one_shot::jvp(ctx, &gru, &x, 0, &g).map(drop)
        }),
        bad("vjp past the last step", || {
            one_shot::vjp(ctx, &gru, &x, t + 1, &g).map(drop)
        }),
        bad("vjp, u too wide", || {
            one_shot::vjp(ctx, &gru, &x, 1, &wide).map(drop)
        }),
        ok("jacobian_sweep", || jacobian(&h_gru, &g)),
        bad("jacobian_sweep, h with a wrong step", || {
            jacobian(&odd_step(&h_gru), &g)
        }),
        bad("jacobian_sweep, v_T too wide", || jacobian(&h_gru, &wide)),
        ok("gru_per_gate_sweep", || per_gate(&gates, &h_gru, &g)),
        bad("gru_per_gate_sweep, h with a wrong step", || {
            per_gate(&gates, &odd_step(&h_gru), &g)
        }),
        bad("gru_per_gate_sweep, v_T too wide", || {
            per_gate(&gates, &h_gru, &wide)
        }),
        ok("matmul", || {
            one_shot::matmul(ctx, &square, true, &square).map(drop)
        }),
        bad("matmul, inner sizes differ", || {
            one_shot::matmul(ctx, &square, false, &wide).map(drop)
        }),
        ok("optimizer_step", || step(&tanh, &fresh)),
    ];
    let (tanh, x, fresh) = (&tanh, &x, &fresh);
    for i in 0..tanh.tensors().len() {
        cases.push(bad("forward, a parameter one row short", move || {
            forward(&broken(tanh, i), x)
        }));
        cases.push(bad("optimizer_step, a gradient one row short", move || {
            step(&broken(tanh, i), fresh)
        }));
        cases.push(bad("optimizer_step, a slot one row short", move || {
            let state = OptState {
                m: broken(tanh, i),
                ..fresh.clone()
            };
            step(tanh, &state)
        }));
    }
    run(cases);
}
