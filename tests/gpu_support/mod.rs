//! Shared helpers of the GPU tests: one context per test binary, random inputs, and the
//! comparison every check uses. A machine without an adapter FAILS these tests (with a hint)
//! rather than skipping them: a silently skipped GPU suite proves nothing.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::{Arc, OnceLock};

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tpri::backend::Backend;
use tpri::config::{Hyper, Loss, Method};
use tpri::cpu::CpuBackend;
use tpri::gpu::{AdapterChoice, F16Conversions, GpuBackend, GpuContext, GPU_CG_TOL};
use tpri::model::{Dims, Params};
use tpri::tasks::{build_task, Batch, Targets, TaskSpec};

/// The shared context; panics with the reason when no adapter can be opened.
pub fn ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| match GpuContext::new(&AdapterChoice::Auto) {
        Ok(ctx) => {
            eprintln!("GPU tests on {}", ctx.describe());
            Arc::new(ctx)
        }
        Err(e) => panic!(
            "GPU tests need a GPU adapter and found none usable: {e:#}\n\
             (no real GPU? `apt-get install mesa-vulkan-drivers` provides lavapipe)"
        ),
    })
    .clone()
}

/// A second context on the same adapter whose f16 storage converts with integer code
/// (round to nearest even everywhere), whatever the adapter offers.
pub fn integer_f16_ctx() -> Arc<GpuContext> {
    static CTX: OnceLock<Arc<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::with_f16(&AdapterChoice::Auto, F16Conversions::Integer)
            .expect("the adapter ctx() opened opens again");
        assert_eq!(ctx.f16_conversions(), F16Conversions::Integer);
        Arc::new(ctx)
    })
    .clone()
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Entries uniform in [−scale, scale].
pub fn random(rows: usize, cols: usize, scale: f64, rng: &mut ChaCha8Rng) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-scale..=scale))
}

/// Orthogonal initialisation, with biases made non-zero so that they are exercised.
pub fn params(dims: Dims, seed: u64) -> Params {
    let mut p = Params::init(dims, seed);
    let mut r = rng(seed ^ 0x5eed);
    p.b = random(dims.hidden, 1, 0.3, &mut r);
    p.head_b = random(dims.output, 1, 0.3, &mut r);
    p
}

/// T input matrices B×p with entries in [−1, 1].
pub fn inputs(t: usize, b: usize, p: usize, rng: &mut ChaCha8Rng) -> Vec<DMatrix<f64>> {
    (0..t).map(|_| random(b, p, 1.0, rng)).collect()
}

/// ‖gpu − ref‖ / ‖ref‖ after checking every GPU value is finite (so a poisoned NaN the
/// kernel failed to overwrite fails here). A zero reference compares absolutely.
pub fn rel_err(what: &str, gpu: &DMatrix<f64>, reference: &DMatrix<f64>) -> f64 {
    assert_eq!(gpu.shape(), reference.shape(), "{what}: shape");
    if let Some(i) = gpu.iter().position(|v| !v.is_finite()) {
        panic!(
            "{what}: element {i} is {} (not written, or overflowed)",
            gpu[i]
        );
    }
    let diff = (gpu - reference).norm();
    let norm = reference.norm();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// Asserts `rel_err ≤ tol` and returns it.
pub fn check(what: &str, gpu: &DMatrix<f64>, reference: &DMatrix<f64>, tol: f64) -> f64 {
    let e = rel_err(what, gpu, reference);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
    e
}

/// `check` over a sequence of matrices, stacked.
pub fn check_all(what: &str, gpu: &[DMatrix<f64>], reference: &[DMatrix<f64>], tol: f64) -> f64 {
    assert_eq!(gpu.len(), reference.len(), "{what}: count");
    let stack = |ms: &[DMatrix<f64>]| {
        let rows: Vec<_> = ms.iter().flat_map(|m| m.iter().copied()).collect();
        DMatrix::from_vec(rows.len(), 1, rows)
    };
    check(what, &stack(gpu), &stack(reference), tol)
}

/// The bound of every GPU-vs-reference comparison: f32 keeps about 7 digits; sums of a few
/// thousand terms and T ≤ 784 steps of a contracting recursion lose one to two of them.
pub const TOL: f64 = 1e-4;

/// A random batch: inputs in [−1, 1], labels or values in [0, 1).
pub fn batch(t: usize, b: usize, p: usize, q: usize, loss: Loss, seed: u64) -> Batch {
    let mut r = rng(seed);
    let x = inputs(t, b, p, &mut r);
    let y = match loss {
        Loss::CrossEntropy => {
            Targets::Labels((0..b).map(|s| (s * 5 + seed as usize) % q).collect())
        }
        Loss::Mse => Targets::Values(random(b, q, 0.5, &mut r).add_scalar(0.5)),
    };
    Batch { x, y }
}

/// Trains `start` for 50 steps with `hyper` on both backends, on the same adding-task
/// batches (T = 10, B = 8), and checks that the two runs stay together: the loss every
/// fifth step, each accepted CG solve, the evaluation, the parameters and the last step's
/// per-step norms, all within 1e-3 relative (see `fifty_training_steps_agree_with_reference`
/// in gpu_iteration.rs for why 1e-3). Returns the worst loss gap and the most CG iterations.
pub fn train_side_by_side(start: &Params, hyper: &Hyper, what: &str) -> (f64, usize) {
    let task = build_task(&TaskSpec::Adding { seq_len: 10 }, 7, 5).unwrap();
    let batches: Vec<_> = (0..50).map(|k| task.train_batch(k, 8)).collect();
    let eval_batch = task.eval_batches(5).remove(0);
    let mut cpu = CpuBackend::new();
    let mut gpu = GpuBackend::new(ctx());
    cpu.load(start, None, hyper).unwrap();
    gpu.load(start, None, hyper).unwrap();
    let tol = hyper.tp.cg_tol.unwrap_or(GPU_CG_TOL);
    let (mut worst, mut cg_most) = (0.0_f64, 0);
    for (k, b) in batches.iter().enumerate() {
        cpu.step(b).unwrap();
        gpu.step(b).unwrap();
        // Reading every few steps exercises both the lazy and the immediate path.
        if k % 5 == 4 {
            let (c, g) = (cpu.last_stats().unwrap(), gpu.last_stats().unwrap());
            let rel = (g.loss - c.loss).abs() / c.loss;
            assert!(
                rel <= 1e-3,
                "{what} step {k}: loss {} vs {} ({rel:.1e})",
                g.loss,
                c.loss
            );
            assert_eq!(g.cg.is_some(), hyper.method == Method::Tp, "{what}");
            if let Some(cg) = g.cg {
                assert!(cg.residual <= tol, "{what}: {cg:?}");
                cg_most = cg_most.max(cg.iterations);
            }
            worst = worst.max(rel);
        }
    }
    let (ce, ge) = (
        cpu.evaluate(&eval_batch).unwrap(),
        gpu.evaluate(&eval_batch).unwrap(),
    );
    assert!(
        (ge.loss - ce.loss).abs() <= 1e-3 * ce.loss,
        "{what}: eval {ge:?} vs {ce:?}"
    );
    let ((cp, cs), (gp, gs)) = (cpu.state().unwrap(), gpu.state().unwrap());
    assert_eq!(cs.step, gs.step);
    for ((name, g), (_, c)) in gp.tensors().into_iter().zip(cp.tensors()) {
        check(&format!("{name} after 50 steps, {what}"), g, c, 1e-3);
    }
    let (cd, gd) = (
        cpu.last_diagnostics().unwrap().unwrap(),
        gpu.last_diagnostics().unwrap().unwrap(),
    );
    let column = |v: &[f64]| DMatrix::from_column_slice(v.len(), 1, v);
    check(
        &format!("step norms, {what}"),
        &column(&gd.step_norms),
        &column(&cd.step_norms),
        1e-3,
    );
    (worst, cg_most)
}
