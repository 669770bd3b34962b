//! No public function of the CPU reference's kernels panics, whatever its input: the row
//! forms (one B × size matrix a step) that the tests and embedding programs call, given
//! parameters of the wrong cell or shape, inputs, states, targets and P of the wrong
//! shape or number of steps, NaN and infinite values, impossible solver settings. Each
//! call returns Ok or an error (tests/nasty's loop catches any panic and names it).

mod nasty;
mod support;

use nalgebra::DMatrix;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use tpri::config::{Loss, OptimizerConfig, OptimizerKind, Preconditioner, TargetMode, TpConfig};
use tpri::cpu::bptt::bptt;
use tpri::cpu::forward::forward;
use tpri::cpu::gru::{gru_bptt, gru_forward, gru_gates, gru_output};
use tpri::cpu::gru_per_gate::{gate_inverses, gru_per_gate_sweep, sigmoid_slope};
use tpri::cpu::head::head;
use tpri::cpu::inverse::{inverse_cg, inverse_cholesky};
use tpri::cpu::jacobian::{jacobian_sweep, per_step_cg, Cell, GruCell, TanhCell};
use tpri::cpu::optimizer::optimizer_step;
use tpri::cpu::seq_head::head_steps;
use tpri::cpu::target_sweep::{clamp, f_inverse, target_sweep};
use tpri::kernel_io::{GruStep, Injection};
use tpri::model::CellKind;
use tpri::optimizer_state::OptState;

use nasty::{matrix, mostly, nasty, no_panics, pick, random_batch, random_params, small};

/// How many calls returned Ok (so that the test is not vacuous).
#[derive(Debug, Default)]
struct Oks {
    forwards: usize,
    gradients: usize,
    cells: usize,
    solves: usize,
}

/// `count` steps of `rows` × `cols`, now and then one step more or fewer, or one step of
/// another shape.
fn steps(rng: &mut ChaCha8Rng, count: usize, rows: usize, cols: usize) -> Vec<DMatrix<f64>> {
    let count = match rng.random_range(0..10) {
        0 => count + 1,
        1 => count.saturating_sub(1),
        _ => count,
    };
    let mut out: Vec<_> = (0..count).map(|_| matrix(rng, rows, cols)).collect();
    if !out.is_empty() && rng.random_bool(0.1) {
        let k = rng.random_range(0..out.len());
        let (r, c) = (small(rng), small(rng));
        out[k] = matrix(rng, r, c);
    }
    out
}

/// A random `rows` × `cols` matrix, or now and then one of another shape.
fn shaped(rng: &mut ChaCha8Rng, mut rows: usize, mut cols: usize) -> DMatrix<f64> {
    if rng.random_bool(0.15) {
        (rows, cols) = (small(rng), small(rng));
    }
    matrix(rng, rows, cols)
}

/// P of a W that is not square is refused (P is the inverse of the recurrence's d × d W; a
/// tall W would make the solve's work space its rows squared), naming W.
#[test]
fn the_regularized_inverse_needs_a_square_w() {
    let tall = DMatrix::from_element(6, 2, 0.5);
    let cg = inverse_cg(&tall, 1.0, 1e-8, 50, None).unwrap_err();
    let cholesky = inverse_cholesky(&tall, 1.0).unwrap_err();
    for e in [cg, cholesky] {
        assert!(format!("{e:#}").contains("W"), "{e:#}");
    }
    assert!(inverse_cg(&DMatrix::from_element(2, 2, 0.5), 1.0, 1e-8, 50, None).is_ok());
}

/// Products and solves of a linearized cell at random steps, sequences and vectors.
fn exercise_cell(rng: &mut ChaCha8Rng, cell: &dyn Cell, h: &[DMatrix<f64>], oks: &mut Oks) {
    let (t_len, b, d) = (cell.steps(), cell.batch(), cell.width());
    let t = rng.random_range(0..t_len + 2);
    let u = shaped(rng, b, d);
    let _ = cell.jvp(t, &u);
    let _ = cell.vjp(t, &u);
    let (start, end) = (rng.random_range(0..b + 2), rng.random_range(0..b + 2));
    let len = d * end.saturating_sub(start) + usize::from(rng.random_bool(0.1));
    let (input, mut out) = (vec![0.5; len], vec![0.0; len]);
    let _ = cell.jvp_into((t, &(start..end)), &input, &mut out, &mut Vec::new());
    let _ = cell.vjp_into((t, &(start..end)), &input, &mut out, &mut Vec::new());
    let _ = cell.normal_diagonal_into((t, &(start..end)), &mut out, &mut Vec::new());
    let _ = cell.normal_diagonal(t);
    let (reg, tol) = (mostly(rng, 1.0), mostly(rng, 1e-8));
    let max_iter = pick(rng, &[0, 1, 50]);
    let pc = pick(
        rng,
        &[
            Preconditioner::Auto,
            Preconditioner::Jacobi,
            Preconditioner::None,
        ],
    );
    oks.solves += usize::from(per_step_cg(cell, t, &u, reg, tol, max_iter, pc).is_ok());
    let v_top = shaped(rng, b, d);
    let _ = jacobian_sweep(cell, h, &v_top, reg, tol, max_iter, pc);
}

/// One random case over the reference kernels' public functions.
fn one_case(rng: &mut ChaCha8Rng, oks: &mut Oks) {
    let params = random_params(rng);
    let loss = pick(rng, &[Loss::CrossEntropy, Loss::Mse, Loss::CrossEntropySeq]);
    let batch = random_batch(rng, &params, loss);
    let x = &batch.x;
    let d = params.dims().hidden;
    let (t_len, b) = (x.len(), x.first().map_or(1, |m| m.nrows()));
    let states = match params.cell {
        CellKind::Tanh => forward(&params, x),
        CellKind::Gru => gru_forward(&params, x),
    };
    oks.forwards += usize::from(states.is_ok());
    let h = match states {
        Ok(h) if rng.random_bool(0.9) => h,
        _ => steps(rng, t_len + 1, b, d),
    };
    let (g, v) = (shaped(rng, b, d), steps(rng, t_len + 1, b, d));
    let through_time = rng.random();
    for injection in [
        Injection::Top(&g),
        Injection::Targets(&v[..]),
        Injection::Steps(&v[..]),
    ] {
        let tanh = bptt(&params, x, &h, injection, through_time);
        let gru = gru_bptt(&params, x, &h, injection, through_time);
        oks.gradients += usize::from(tanh.is_ok() || gru.is_ok());
    }
    let h_last = match h.last() {
        Some(h_t) if rng.random_bool(0.8) => h_t.clone(),
        _ => shaped(rng, b, d),
    };
    let _ = head(&params, &h_last, &batch.y, loss);
    let _ = head_steps(&params, &h, &batch.y);

    let reg = mostly(rng, 1.0);
    let _ = inverse_cg(&params.w_hh, reg, mostly(rng, 1e-8), 50, None);
    let _ = inverse_cholesky(&params.w_hh, reg);
    let p_inv = shaped(rng, d, d);
    let (lr_target, mode) = (
        mostly(rng, 0.1),
        pick(
            rng,
            &[
                TargetMode::Linearized,
                TargetMode::Difference,
                TargetMode::Plain,
            ],
        ),
    );
    let _ = target_sweep(&params, &p_inv, x, &h, &g, lr_target, mode);
    let x_1 = match x.first() {
        Some(x_1) if rng.random_bool(0.8) => x_1.clone(),
        _ => shaped(rng, b, 1),
    };
    let _ = f_inverse(&params, &p_inv, &x_1, &g);
    let _ = (clamp(nasty(rng)), sigmoid_slope(nasty(rng)));
    let tp = TpConfig {
        reg,
        ..TpConfig::default()
    };
    let _ = gate_inverses(&params, &tp, rng.random());
    let p_gates = [p_inv.clone(), p_inv.clone(), shaped(rng, d, d)];
    let _ = gru_per_gate_sweep(&params, &p_gates, x, &h, &g);
    let h_0 = match h.first() {
        Some(h_0) if rng.random_bool(0.8) => h_0.clone(),
        _ => shaped(rng, b, d),
    };
    if let Ok(step) = gru_gates(&params, &h_0, &x_1) {
        let _ = gru_output(&step, &shaped(rng, b, d));
    }
    let odd = GruStep {
        r: matrix(rng, b, d),
        z: shaped(rng, b, d),
        n: shaped(rng, b, d),
        hn: matrix(rng, b, d),
    };
    let _ = gru_output(&odd, &h_last);

    if let Ok(cell) = TanhCell::new(&params, &h) {
        oks.cells += 1;
        exercise_cell(rng, &cell, &h, oks);
    }
    if let Ok(cell) = GruCell::new(&params, x, &h) {
        oks.cells += 1;
        exercise_cell(rng, &cell, &h, oks);
    }

    let mut stepped = params.clone();
    let like_or_random = |rng: &mut ChaCha8Rng| {
        if rng.random_bool(0.5) {
            params.zeros_like()
        } else {
            random_params(rng)
        }
    };
    let grads = like_or_random(rng);
    let mut state = OptState {
        step: rng.random_range(0..3),
        m: like_or_random(rng),
        v: like_or_random(rng),
    };
    let cfg = OptimizerConfig {
        kind: pick(
            rng,
            &[
                OptimizerKind::Sgd,
                OptimizerKind::Nesterov,
                OptimizerKind::Adam,
            ],
        ),
        ..OptimizerConfig::default()
    };
    let _ = optimizer_step(&cfg, &mut state, &mut stepped, &grads);
    let _ = (params.tanh_bias(), params.norm(), OptState::new(&params));
}

#[test]
fn no_reference_kernel_panics_on_random_input() {
    let mut oks = Oks::default();
    let cases = no_panics(15, 1000, |rng| one_case(rng, &mut oks));
    eprintln!("Ok in {cases} cases: {oks:?}");
    assert!(
        oks.forwards > 10 && oks.gradients > 10 && oks.cells > 10 && oks.solves > 10,
        "too few cases get through: {oks:?}"
    );
}
