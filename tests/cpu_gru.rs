//! docs/ALGORITHM.md §5 on the CPU: the GRU's forward pass and BP gradients, the JVP/VJP of the tanh RNN
//! and the GRU, the per-step matrix-free CG and the generalized linearized target sweep,
//! and the GRU's per-gate inversion.

mod support;

use nalgebra::DMatrix;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tpri::config::{Preconditioner, TargetMode, TpConfig};
use tpri::cpu::forward::forward;
use tpri::cpu::gru::{gru_bptt, gru_forward, gru_gates, gru_output};
use tpri::cpu::gru_per_gate::{gate_inverses, gru_per_gate_sweep};
use tpri::cpu::inverse::inverse_cholesky;
use tpri::cpu::jacobian::{jacobian_sweep, per_step_cg, Cell, GruCell, TanhCell};
use tpri::cpu::target_sweep::target_sweep;
use tpri::kernel_io::Injection;
use tpri::model::{CellKind, Params};

use support::{check, dims, inputs, random, random_params, rng, Init};

// ---------- helpers ----------

/// A tanh RNN whose W is well conditioned (orthogonal, scaled) and whose states stay away
/// from saturation, so that the clamp of docs/ALGORITHM.md §2 never acts.
fn tanh_model(rng: &mut ChaCha8Rng, b: usize, p: usize, d: usize, t_len: usize) -> TanhModel {
    let init = Init::Library {
        seed: rng.random(),
        gain: 0.9,
    };
    let mut params = random_params(rng, CellKind::Tanh, dims(p, d, 1), init);
    params.w_ih = random(rng, d, p, 0.5);
    params.b = random(rng, d, 1, 0.2);
    params.b_hh = random(rng, d, 1, 0.2);
    let x = inputs(rng, t_len, b, p);
    let h = forward(&params, &x).unwrap();
    TanhModel { params, x, h }
}

struct TanhModel {
    params: Params,
    x: Vec<DMatrix<f64>>,
    h: Vec<DMatrix<f64>>,
}

fn tanh_step(params: &Params, h_prev: &DMatrix<f64>, x_t: &DMatrix<f64>) -> DMatrix<f64> {
    let mut a = h_prev * params.w_hh.transpose() + x_t * params.w_ih.transpose();
    for mut row in a.row_iter_mut() {
        row += params.tanh_bias().unwrap().transpose();
    }
    a.map(f64::tanh)
}

struct GruModel {
    params: Params,
    x: Vec<DMatrix<f64>>,
    h: Vec<DMatrix<f64>>,
}

/// A GRU with PyTorch's initialisation, scaled up a little so the gates are not all ½.
fn gru_model(rng: &mut ChaCha8Rng, b: usize, p: usize, d: usize, t_len: usize) -> GruModel {
    let init = Init::Library {
        seed: rng.random(),
        gain: 1.5,
    };
    let params = random_params(rng, CellKind::Gru, dims(p, d, 2), init);
    let x = inputs(rng, t_len, b, p);
    let h = gru_forward(&params, &x).unwrap();
    GruModel { params, x, h }
}

fn gru_step(params: &Params, h_prev: &DMatrix<f64>, x_t: &DMatrix<f64>) -> DMatrix<f64> {
    gru_output(&gru_gates(params, h_prev, x_t).unwrap(), h_prev).unwrap()
}

/// Checks JVP and VJP of `cell` at step t against central differences of `step`
/// (h_{t−1} ↦ h_t), and the adjoint identity.
fn check_products(
    rng: &mut ChaCha8Rng,
    cell: &dyn Cell,
    h_prev: &DMatrix<f64>,
    step: impl Fn(&DMatrix<f64>) -> DMatrix<f64>,
    t: usize,
) {
    let (b, d) = h_prev.shape();
    let eps = 1e-5;
    let u = random(rng, b, d, 1.0);
    let w = random(rng, b, d, 1.0);
    // J u: a directional difference (each row is its own sequence, so one difference
    // serves the whole batch).
    let fd_jvp = (step(&(h_prev + &u * eps)) - step(&(h_prev - &u * eps))) / (2.0 * eps);
    let jvp = cell.jvp(t, &u).unwrap();
    check("JVP", &jvp, &fd_jvp, 1e-6);
    // Jᵀ w: the gradient of ⟨w, F(h)⟩, entry by entry.
    let phi = |h: &DMatrix<f64>| w.dot(&step(h));
    let fd_vjp = DMatrix::from_fn(b, d, |i, j| {
        let mut e = DMatrix::zeros(b, d);
        e[(i, j)] = eps;
        (phi(&(h_prev + &e)) - phi(&(h_prev - &e))) / (2.0 * eps)
    });
    let vjp = cell.vjp(t, &w).unwrap();
    check("VJP", &vjp, &fd_vjp, 1e-6);
    let (lhs, rhs) = (w.dot(&jvp), vjp.dot(&u));
    assert!(
        (lhs - rhs).abs() <= 1e-12 * (w.norm() * jvp.norm()).max(1.0),
        "adjoint {lhs} vs {rhs}"
    );
}

/// J_t of sequence `i`, formed from the JVPs of the unit vectors (test only).
fn dense_jacobian(cell: &dyn Cell, t: usize, b: usize, d: usize, i: usize) -> DMatrix<f64> {
    let mut j = DMatrix::zeros(d, d);
    for k in 0..d {
        let mut e = DMatrix::zeros(b, d);
        e.column_mut(k).fill(1.0);
        j.column_mut(k)
            .copy_from(&cell.jvp(t, &e).unwrap().row(i).transpose());
    }
    j
}

/// The per-step CG, with and without its preconditioner, against a dense solve of the
/// same normal equations, row by row.
fn check_cg_dense(rng: &mut ChaCha8Rng, cell: &dyn Cell, b: usize, d: usize) {
    for t in 1..=cell.steps() {
        let regs = [1e-3, 1e-2, 0.1, 1.0, 10.0];
        for (reg, pc) in regs
            .into_iter()
            .flat_map(|r| PRECONDITIONERS.map(|pc| (r, pc)))
        {
            let u = random(rng, b, d, 0.3);
            let (z, report) = per_step_cg(cell, t, &u, reg, 1e-12, 1000, pc).unwrap();
            assert!(report.residual <= 1e-12);
            for i in 0..b {
                let j = dense_jacobian(cell, t, b, d, i);
                let a = j.tr_mul(&j) + DMatrix::identity(d, d) * reg;
                let rhs = j.tr_mul(&u.row(i).transpose());
                let exact = a.lu().solve(&rhs).unwrap();
                check(
                    &format!("t {t} r {reg} {pc:?} row {i}"),
                    &z.row(i).transpose(),
                    &exact,
                    1e-8,
                );
            }
        }
    }
}

/// Both preconditioners of the per-step CG.
const PRECONDITIONERS: [Preconditioner; 2] = [Preconditioner::Jacobi, Preconditioner::None];

// ---------- products ----------

#[test]
fn normal_diagonal_is_the_diagonal_of_jtj() {
    let mut rng = rng(21);
    for (b, p, d, t_len) in [(3, 2, 5, 3), (2, 1, 1, 1), (1, 3, 9, 2)] {
        let tanh = tanh_model(&mut rng, b, p, d, t_len);
        let gru = gru_model(&mut rng, b, p, d, t_len);
        let tanh_cell = TanhCell::new(&tanh.params, &tanh.h).unwrap();
        let gru_cell = GruCell::new(&gru.params, &gru.x, &gru.h).unwrap();
        for (name, cell) in [("tanh", &tanh_cell as &dyn Cell), ("gru", &gru_cell)] {
            for t in 1..=t_len {
                let diag = cell.normal_diagonal(t).unwrap();
                for i in 0..b {
                    let j = dense_jacobian(cell, t, b, d, i);
                    let exact = j.tr_mul(&j).diagonal();
                    check(
                        &format!("{name} t {t} row {i}"),
                        &diag.row(i).transpose(),
                        &exact,
                        1e-12,
                    );
                }
            }
            assert!(cell.normal_diagonal(0).is_err() && cell.normal_diagonal(t_len + 1).is_err());
        }
    }
}

#[test]
fn tanh_products_match_finite_differences() {
    let mut rng = rng(1);
    for (b, p, d, t_len) in [(3, 2, 5, 4), (2, 1, 1, 1), (1, 3, 4, 2)] {
        let m = tanh_model(&mut rng, b, p, d, t_len);
        let cell = TanhCell::new(&m.params, &m.h).unwrap();
        assert_eq!(cell.steps(), t_len);
        for t in 1..=t_len {
            let x_t = &m.x[t - 1];
            check_products(
                &mut rng,
                &cell,
                &m.h[t - 1],
                |h| tanh_step(&m.params, h, x_t),
                t,
            );
        }
    }
}

#[test]
fn gru_products_match_finite_differences() {
    let mut rng = rng(2);
    for (b, p, d, t_len) in [(3, 2, 5, 4), (2, 1, 1, 1), (1, 3, 4, 2)] {
        let m = gru_model(&mut rng, b, p, d, t_len);
        let cell = GruCell::new(&m.params, &m.x, &m.h).unwrap();
        assert_eq!(cell.steps(), t_len);
        for t in 1..=t_len {
            let x_t = &m.x[t - 1];
            check_products(
                &mut rng,
                &cell,
                &m.h[t - 1],
                |h| gru_step(&m.params, h, x_t),
                t,
            );
        }
    }
}

// ---------- per-step CG ----------

#[test]
fn per_step_cg_matches_dense_solve_tanh() {
    let mut rng = rng(3);
    for (b, d) in [(3, 5), (2, 1)] {
        let m = tanh_model(&mut rng, b, 2, d, 3);
        check_cg_dense(&mut rng, &TanhCell::new(&m.params, &m.h).unwrap(), b, d);
    }
}

#[test]
fn per_step_cg_matches_dense_solve_gru() {
    let mut rng = rng(4);
    for (b, d) in [(3, 5), (2, 1)] {
        let m = gru_model(&mut rng, b, 2, d, 3);
        check_cg_dense(
            &mut rng,
            &GruCell::new(&m.params, &m.x, &m.h).unwrap(),
            b,
            d,
        );
    }
}

#[test]
fn per_step_cg_reports_impossible_tolerance() {
    let mut rng = rng(5);
    let m = gru_model(&mut rng, 3, 2, 6, 2);
    let cell = GruCell::new(&m.params, &m.x, &m.h).unwrap();
    let u = random(&mut rng, 3, 6, 1.0);
    let err = per_step_cg(&cell, 2, &u, 1e-3, 1e-30, 2, Preconditioner::Jacobi).unwrap_err();
    let cg = tpri::error::cg_error(&err).expect("a CgError");
    assert_eq!(cg.report.iterations, 2);
    assert_eq!(cg.max_iter, 2);
    assert_eq!(cg.tol, 1e-30);
    assert!(cg.report.residual > 1e-30 && cg.report.residual.is_finite());
}

#[test]
fn per_step_cg_rejects_bad_input() {
    let mut rng = rng(6);
    let m = tanh_model(&mut rng, 2, 2, 3, 2);
    let cell = TanhCell::new(&m.params, &m.h).unwrap();
    let u = random(&mut rng, 2, 3, 1.0);
    for reg in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(per_step_cg(&cell, 1, &u, reg, 1e-10, 10, Preconditioner::None).is_err());
    }
    assert!(per_step_cg(&cell, 0, &u, 1.0, 1e-10, 10, Preconditioner::None).is_err());
    assert!(per_step_cg(&cell, 3, &u, 1.0, 1e-10, 10, Preconditioner::None).is_err());
    let nan = u.map(|_| f64::NAN);
    assert!(per_step_cg(&cell, 1, &nan, 1.0, 1e-10, 10, Preconditioner::None).is_err());
    // A zero displacement is solved exactly by z = 0, without iterating.
    let (z, report) =
        per_step_cg(&cell, 1, &(&u * 0.0), 1.0, 1e-10, 10, Preconditioner::None).unwrap();
    assert_eq!(report.iterations, 0);
    assert_eq!(z, DMatrix::zeros(2, 3));
}

// ---------- sweep ----------

#[test]
fn tanh_jacobian_sweep_matches_linearized_sweep_as_r_vanishes() {
    let mut rng = rng(7);
    let reg = 1e-10;
    for (b, p, d, t_len) in [(4, 2, 5, 6), (2, 1, 1, 3), (3, 2, 3, 1)] {
        let m = tanh_model(&mut rng, b, p, d, t_len);
        let grad_h = random(&mut rng, b, d, 1.0);
        let lr_target = 0.05;
        let p_inv = inverse_cholesky(&m.params.w_hh, reg).unwrap();
        let analytic = target_sweep(
            &m.params,
            &p_inv,
            &m.x,
            &m.h,
            &grad_h,
            lr_target,
            TargetMode::Linearized,
        )
        .unwrap();
        let v_top = &m.h[t_len] - &grad_h * lr_target;
        let cell = TanhCell::new(&m.params, &m.h).unwrap();
        let (v, reports) =
            jacobian_sweep(&cell, &m.h, &v_top, reg, 1e-12, 200, Preconditioner::Jacobi).unwrap();
        assert_eq!(v.len(), t_len + 1);
        assert_eq!(reports.len(), t_len - 1);
        assert_eq!(v[0], m.h[0]);
        for t in 1..=t_len {
            let what = format!("v_{t} − h_{t}");
            check(&what, &(&v[t] - &m.h[t]), &(&analytic[t] - &m.h[t]), 1e-6);
        }
    }
}

/// `Preconditioner::Auto` preconditions the GRU's per-step CG and leaves the tanh RNN's
/// plain: the same targets, bit for bit, as asking for each, and not those of the other.
#[test]
fn auto_preconditions_the_gru_and_not_the_tanh_rnn() {
    let mut rng = rng(22);
    let (b, p, d, t_len) = (3, 2, 6, 4);
    let tanh = tanh_model(&mut rng, b, p, d, t_len);
    let gru = gru_model(&mut rng, b, p, d, t_len);
    let tanh_cell = TanhCell::new(&tanh.params, &tanh.h).unwrap();
    let gru_cell = GruCell::new(&gru.params, &gru.x, &gru.h).unwrap();
    let cases = [
        (
            &tanh_cell as &dyn Cell,
            &tanh.h,
            Preconditioner::None,
            Preconditioner::Jacobi,
        ),
        (
            &gru_cell,
            &gru.h,
            Preconditioner::Jacobi,
            Preconditioner::None,
        ),
    ];
    for (cell, h, same, other) in cases {
        let v_top = &h[t_len] + random(&mut rng, b, d, 0.1);
        let sweep = |pc| jacobian_sweep(cell, h, &v_top, 0.1, 1e-12, 100, pc).unwrap();
        let auto = sweep(Preconditioner::Auto);
        assert_eq!(auto, sweep(same), "{:?}", cell.kind());
        assert_ne!(auto.0, sweep(other).0, "{:?}", cell.kind());
    }
}

#[test]
fn gru_jacobian_sweep_fixed_point_and_steps() {
    let mut rng = rng(8);
    let m = gru_model(&mut rng, 3, 2, 4, 5);
    let cell = GruCell::new(&m.params, &m.x, &m.h).unwrap();
    // Targets at the states stay at the states exactly.
    let pc = Preconditioner::Jacobi;
    let (v, _) = jacobian_sweep(&cell, &m.h, &m.h[5], 0.1, 1e-12, 100, pc).unwrap();
    assert_eq!(v, m.h);
    // Otherwise each step is the regularized Gauss–Newton step of its own CG.
    let v_top = &m.h[5] + random(&mut rng, 3, 4, 0.1);
    let (v, reports) = jacobian_sweep(&cell, &m.h, &v_top, 0.1, 1e-12, 100, pc).unwrap();
    assert_eq!(reports.len(), 4);
    for t in (2..=5).rev() {
        let (z, _) = per_step_cg(&cell, t, &(&v[t] - &m.h[t]), 0.1, 1e-12, 100, pc).unwrap();
        assert_eq!(v[t - 1], &m.h[t - 1] + z);
    }
    assert!(jacobian_sweep(&cell, &m.h[1..], &v_top, 0.1, 1e-12, 100, pc).is_err());
}

// ---------- the per-gate inversion ----------

/// The published GRU inversion on the reference: each P_g is the regularized inverse of its
/// gate block (CG and Cholesky agree with a dense solve), targets at the states stay there
/// exactly, the offsets v − h are linear in v_T − h_T (the gates are those of the forward
/// pass), and one step equals the formula of docs/ALGORITHM.md §5 written out by hand.
#[test]
fn gru_per_gate_inverses_and_sweep() {
    let mut rng = rng(12);
    let (b, p, d, t_len) = (3, 2, 5, 4);
    let m = gru_model(&mut rng, b, p, d, t_len);
    let tp = TpConfig {
        reg: 0.7,
        ..TpConfig::default()
    };
    let (by_cg, report) = gate_inverses(&m.params, &tp, false).unwrap();
    let (by_cholesky, none) = gate_inverses(&m.params, &tp, true).unwrap();
    assert!(report.unwrap().iterations >= 1 && none.is_none());
    for g in 0..3 {
        let w = m.params.w_hh.rows(g * d, d).into_owned();
        let dense = (w.transpose() * &w + DMatrix::identity(d, d) * 0.7)
            .lu()
            .solve(&w.transpose())
            .unwrap();
        check(&format!("P_{g} by CG"), &by_cg[g], &dense, 1e-10);
        check(
            &format!("P_{g} by Cholesky"),
            &by_cholesky[g],
            &dense,
            1e-12,
        );
    }
    let sweep = |v_top: &DMatrix<f64>| {
        gru_per_gate_sweep(&m.params, &by_cholesky, &m.x, &m.h, v_top).unwrap()
    };
    assert_eq!(
        sweep(&m.h[t_len]),
        m.h,
        "v_T = h_T leaves every target at its state"
    );
    let shift = random(&mut rng, b, d, 0.1);
    let (once, twice) = (
        sweep(&(&m.h[t_len] + &shift)),
        sweep(&(&m.h[t_len] + &shift * 2.0)),
    );
    for t in 1..=t_len {
        check(
            &format!("v_{t} − h_{t} doubles"),
            &(&twice[t] - &m.h[t]),
            &((&once[t] - &m.h[t]) * 2.0),
            1e-12,
        );
    }
    // Step T by hand, one sequence (row) at a time: column vectors as in the docs.
    let g = gru_gates(&m.params, &m.h[t_len - 1], &m.x[t_len - 1]).unwrap();
    let slope = |u: f64| {
        let c = u.clamp(1e-3, 1.0 - 1e-3);
        c * (1.0 - c)
    };
    for i in 0..b {
        let row = |a: &DMatrix<f64>| a.row(i).transpose();
        let (r, z, n, a) = (row(&g.r), row(&g.z), row(&g.n), row(&g.hn));
        let hp = row(&m.h[t_len - 1]);
        let delta = row(&once[t_len]) - row(&m.h[t_len]);
        let one = DMatrix::from_element(d, 1, 1.0);
        let dn = (&one - n.component_mul(&n))
            .component_mul(&z)
            .component_mul(&delta);
        let want = &hp
            + (&one - &z).component_mul(&delta)
            + &by_cholesky[1]
                * (&n - &hp)
                    .component_mul(&delta)
                    .zip_map(&z, |e, z| e / slope(z))
            + &by_cholesky[0] * a.component_mul(&dn).zip_map(&r, |e, r| e / slope(r))
            + &by_cholesky[2] * r.component_mul(&dn);
        check("v_{T−1} by hand", &row(&once[t_len - 1]), &want, 1e-12);
    }
    // Bad inputs are errors naming the problem, not panics.
    let tanh = random_params(
        &mut rng,
        CellKind::Tanh,
        dims(p, d, 2),
        Init::Gaussian { w_gain: 1.0 },
    );
    let err = format!("{:#}", gate_inverses(&tanh, &tp, true).unwrap_err());
    assert!(err.contains("Params::cell"), "{err}");
    let mut wrong = by_cholesky.clone();
    wrong[0] = DMatrix::zeros(d, d + 1);
    let err = format!(
        "{:#}",
        gru_per_gate_sweep(&m.params, &wrong, &m.x, &m.h, &m.h[t_len]).unwrap_err()
    );
    assert!(err.contains("P_r"), "{err}");
    assert!(gru_per_gate_sweep(&m.params, &by_cholesky, &m.x, &m.h[1..], &m.h[t_len]).is_err());
}

// ---------- GRU forward and BP ----------

#[test]
fn gru_forward_matches_the_pytorch_equations() {
    let mut rng = rng(9);
    let (b, p, d) = (2, 3, 2);
    let m = gru_model(&mut rng, b, p, d, 3);
    assert_eq!(m.h.len(), 4);
    assert_eq!(m.h[0], DMatrix::zeros(b, d));
    let sig = |a: f64| 1.0 / (1.0 + (-a).exp());
    let q = &m.params;
    for t in 1..=3 {
        for i in 0..b {
            let h = m.h[t - 1].row(i).transpose();
            let x = m.x[t - 1].row(i).transpose();
            let gate = |g: usize| {
                let (wh, wi) = (q.w_hh.rows(g * d, d), q.w_ih.rows(g * d, d));
                (wh * &h, wi * &x + q.b.rows(g * d, d), q.b_hh.rows(g * d, d))
            };
            let (wr, ur, br) = gate(0);
            let r = (wr + ur + br).map(sig);
            let (wz, uz, bz) = gate(1);
            let z = (wz + uz + bz).map(sig);
            let (wn, un, bn) = gate(2);
            let n = (un + r.component_mul(&(wn + bn))).map(f64::tanh);
            let expect = z.map(|z| 1.0 - z).component_mul(&n) + z.component_mul(&h);
            let err = (m.h[t].row(i).transpose() - expect).norm();
            assert!(err <= 1e-14, "t {t} row {i}: {err:e}");
        }
    }
}

/// ½ Σ (V h_T + c − y)², a plain regression loss on the head, and its gradient at h_T.
fn gru_loss(params: &Params, x: &[DMatrix<f64>], y: &DMatrix<f64>) -> f64 {
    let h = gru_forward(params, x).unwrap();
    let mut out = h.last().unwrap() * params.head_w.transpose();
    for mut row in out.row_iter_mut() {
        row += params.head_b.transpose();
    }
    0.5 * (out - y).norm_squared()
}

#[test]
fn gru_bptt_matches_finite_differences() {
    let mut rng = rng(10);
    for (b, p, d, t_len) in [(3, 2, 4, 5), (2, 1, 1, 1), (1, 3, 1, 4), (4, 2, 3, 1)] {
        let m = gru_model(&mut rng, b, p, d, t_len);
        let q = m.params.head_w.nrows();
        let y = random(&mut rng, b, q, 1.0);
        let h_last = &m.h[t_len];
        let mut out = h_last * m.params.head_w.transpose();
        for mut row in out.row_iter_mut() {
            row += m.params.head_b.transpose();
        }
        let g_t = (out - &y) * &m.params.head_w;
        let grads = gru_bptt(&m.params, &m.x, &m.h, Injection::Top(&g_t), true).unwrap();
        assert_eq!(grads.rnn.error_norms.len(), t_len);
        assert!((grads.rnn.error_norms[t_len - 1] - g_t.norm()).abs() <= 1e-15);
        let what = format!("BP (b {b} p {p} d {d} T {t_len})");
        check_recurrent_grads(&m.params, &grads, &what, |params| {
            gru_loss(params, &m.x, &y)
        });
    }
}

/// Compares the four recurrent gradients with central differences of `loss`.
fn check_recurrent_grads(
    at: &Params,
    grads: &tpri::kernel_io::GruGrads,
    what: &str,
    loss: impl Fn(&Params) -> f64,
) {
    let analytic = [&grads.rnn.w_hh, &grads.rnn.w_ih, &grads.rnn.b, &grads.b_hh];
    for (k, an) in analytic.into_iter().enumerate() {
        let eps = 1e-6;
        let fd = DMatrix::from_fn(an.nrows(), an.ncols(), |i, j| {
            let loss_at = |delta: f64| {
                let mut params = at.clone();
                params.tensors_mut()[k][(i, j)] += delta;
                loss(&params)
            };
            (loss_at(eps) - loss_at(-eps)) / (2.0 * eps)
        });
        check(&format!("{what}, tensor {k}"), an, &fd, 1e-6);
    }
}

/// The TP surrogate `S = Σ_t ½‖h_t − v_t‖²` with the targets fixed, differentiated through
/// time (h_t a function of every earlier step) and locally (each step from the stored
/// h_{t−1}), against central differences of the matching function.
#[test]
fn gru_surrogate_gradients_match_finite_differences() {
    let mut rng = rng(12);
    for (b, p, d, t_len) in [(3, 2, 4, 5), (1, 1, 1, 3), (2, 3, 2, 1)] {
        let m = gru_model(&mut rng, b, p, d, t_len);
        let v: Vec<_> =
            m.h.iter()
                .map(|h| h + random(&mut rng, b, d, 0.3))
                .collect();
        for through_time in [true, false] {
            let grads =
                gru_bptt(&m.params, &m.x, &m.h, Injection::Targets(&v), through_time).unwrap();
            let what = format!("through_time {through_time} (b {b} p {p} d {d} T {t_len})");
            check_recurrent_grads(&m.params, &grads, &what, |params| {
                let h = gru_forward(params, &m.x).unwrap();
                (1..=t_len)
                    .map(|t| {
                        let h_t = if through_time {
                            h[t].clone()
                        } else {
                            gru_step(params, &m.h[t - 1], &m.x[t - 1])
                        };
                        0.5 * (h_t - &v[t]).norm_squared()
                    })
                    .sum()
            });
        }
    }
}

/// The GRU's recurrences split the batch over the cores (`cpu::steps::core_groups`): each
/// sequence's states and per-gate targets must be the same bits whatever sequences share
/// its run. A batch of 5 at a size that splits over two cores, against each sequence run
/// alone.
#[test]
fn gru_sequences_do_not_depend_on_their_batch() {
    let mut r = rng(77);
    let m = gru_model(&mut r, 5, 3, 64, 300);
    let tp = TpConfig {
        reg: 1.0,
        ..TpConfig::default()
    };
    let (p, _) = gate_inverses(&m.params, &tp, true).unwrap();
    let v_top = &m.h[300] - random(&mut r, 5, 64, 0.1);
    let v = gru_per_gate_sweep(&m.params, &p, &m.x, &m.h, &v_top).unwrap();
    for s in 0..5 {
        let row = |ms: &[DMatrix<f64>]| -> Vec<DMatrix<f64>> {
            ms.iter().map(|m| m.rows(s, 1).into_owned()).collect()
        };
        let (x, h) = (row(&m.x), row(&m.h));
        assert_eq!(gru_forward(&m.params, &x).unwrap(), h, "h of sequence {s}");
        let alone = gru_per_gate_sweep(&m.params, &p, &x, &h, &v_top.rows(s, 1).into_owned());
        assert_eq!(alone.unwrap(), row(&v), "v of sequence {s}");
    }
}

/// The jacobian sweep splits the batch over the cores where it is large enough, each group
/// of sequences walking its steps alone, and every sequence stops its solves on its own
/// residual: at a size that splits (on a machine with two cores or more), each sequence's
/// targets are those of the sweep of that sequence alone, bit for bit, so that results
/// do not depend on the machine's cores; every step's report is converged. The sequences'
/// inputs are scaled 0.1 … 100, so that their states saturate to different degrees and
/// their solves take different numbers of iterations.
#[test]
fn jacobian_sweep_split_over_cores_is_each_sequence_alone() {
    let mut r = rng(79);
    let (b, p, d, t_len) = (8, 2, 64, 80);
    let tol = 1e-8;
    for cell_kind in [CellKind::Tanh, CellKind::Gru] {
        let (params, mut x) = match cell_kind {
            CellKind::Tanh => {
                let m = tanh_model(&mut r, b, p, d, t_len);
                (m.params, m.x)
            }
            CellKind::Gru => {
                let m = gru_model(&mut r, b, p, d, t_len);
                (m.params, m.x)
            }
        };
        for x_t in &mut x {
            for (s, mut row) in x_t.row_iter_mut().enumerate() {
                row *= 10f64.powi(s as i32 % 4 - 1);
            }
        }
        let states = |x: &[DMatrix<f64>]| match cell_kind {
            CellKind::Tanh => forward(&params, x).unwrap(),
            CellKind::Gru => gru_forward(&params, x).unwrap(),
        };
        let sweep = |x: &[DMatrix<f64>], h: &[DMatrix<f64>], v_top: &DMatrix<f64>| {
            let tanh;
            let gru;
            let cell: &dyn Cell = match cell_kind {
                CellKind::Tanh => {
                    tanh = TanhCell::new(&params, h).unwrap();
                    &tanh
                }
                CellKind::Gru => {
                    gru = GruCell::new(&params, x, h).unwrap();
                    &gru
                }
            };
            jacobian_sweep(cell, h, v_top, 1.0, tol, 200, Preconditioner::Jacobi).unwrap()
        };
        let h = states(&x);
        let v_top = &h[t_len] - random(&mut r, b, d, 0.05);
        let (v, reports) = sweep(&x, &h, &v_top);
        assert_eq!(reports.len(), t_len - 1);
        assert!(reports.iter().all(|rep| rep.residual <= tol), "{reports:?}");
        for s in 0..b {
            let row = |ms: &[DMatrix<f64>]| -> Vec<DMatrix<f64>> {
                ms.iter().map(|m| m.rows(s, 1).into_owned()).collect()
            };
            let (x_s, h_s) = (row(&x), row(&h));
            let (want, _) = sweep(&x_s, &h_s, &v_top.rows(s, 1).into_owned());
            let what = format!("{cell_kind:?}: sequence {s}'s targets against its own sweep's");
            support::assert_same_bits(&what, &row(&v), &want);
        }
    }
}
