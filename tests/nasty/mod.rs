//! Inputs that break things, for the property tests that no public function of the
//! library panics (tests/robust_api.rs, tests/robust_kernels.rs): sizes of 0 and too large
//! to address, NaN and huge values, tensors of the wrong shape; and the loop that runs
//! random cases under `catch_unwind` and collects what panicked.

#![allow(dead_code)]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tpri::config::Loss;
use tpri::model::{CellKind, Params};
use tpri::tasks::{Batch, Targets};

use crate::support::dims;

/// A float that breaks arithmetic, or an ordinary one.
pub fn nasty(rng: &mut ChaCha8Rng) -> f64 {
    const POOL: [f64; 7] = [
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e300,
        1e-300,
    ];
    POOL[rng.random_range(0..POOL.len())]
}

/// `good` usually, now and then a nasty float.
pub fn mostly(rng: &mut ChaCha8Rng, good: f64) -> f64 {
    if rng.random_bool(0.08) {
        nasty(rng)
    } else {
        good
    }
}

/// A size of 1 to 3, now and then 0.
pub fn small(rng: &mut ChaCha8Rng) -> usize {
    if rng.random_bool(0.1) {
        0
    } else {
        rng.random_range(1..4)
    }
}

/// A size: small, or one too large for any machine.
pub fn size(rng: &mut ChaCha8Rng) -> usize {
    match rng.random_range(0..10) {
        0 => usize::MAX,
        1 => 1 << 33,
        2 => 3_037_000_500,
        _ => small(rng),
    }
}

/// Random entries, one of them nasty now and then.
pub fn matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> DMatrix<f64> {
    let mut m = DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-1.0..1.0));
    if !m.is_empty() && rng.random_bool(0.1) {
        let k = rng.random_range(0..m.len());
        m.as_mut_slice()[k] = nasty(rng);
    }
    m
}

pub fn random_params(rng: &mut ChaCha8Rng) -> Params {
    let cell = if rng.random_bool(0.5) {
        CellKind::Tanh
    } else {
        CellKind::Gru
    };
    let d = dims(small(rng), small(rng), small(rng));
    let mut p = Params::zeros_of(cell, d).unwrap();
    for m in p.tensors_mut() {
        *m = matrix(rng, m.nrows(), m.ncols());
    }
    // Now and then one tensor of another shape.
    if rng.random_bool(0.15) {
        let (r, c) = (small(rng), small(rng));
        let m = matrix(rng, r, c);
        match rng.random_range(0..6) {
            0 => p.w_hh = m,
            1 => p.w_ih = m,
            2 => p.b = m,
            3 => p.b_hh = m,
            4 => p.head_w = m,
            _ => p.head_b = m,
        }
    }
    p
}

pub fn random_batch(rng: &mut ChaCha8Rng, like: &Params, loss: Loss) -> Batch {
    let d = like.dims();
    let jitter = |rng: &mut ChaCha8Rng, n: usize| {
        if rng.random_bool(0.05) {
            small(rng)
        } else {
            n
        }
    };
    let (t, b, p) = (small(rng), small(rng), jitter(rng, d.input));
    let x = (0..t)
        .map(|_| {
            let rows = jitter(rng, b);
            matrix(rng, rows, p)
        })
        .collect();
    let rows = jitter(rng, b);
    let labels = (loss == Loss::CrossEntropy) != rng.random_bool(0.1);
    let y = if labels {
        let q = jitter(rng, d.output).max(1);
        Targets::Labels((0..rows).map(|_| rng.random_range(0..q)).collect())
    } else {
        let q = jitter(rng, d.output);
        Targets::Values(matrix(rng, rows, q))
    };
    Batch { x, y, tokens: None }
}

pub fn pick<T: Copy>(rng: &mut ChaCha8Rng, from: &[T]) -> T {
    from[rng.random_range(0..from.len())]
}

/// Runs `case` on fresh streams (from `TPRI_FUZZ_SEED`, else `seed`) for up to `cases`
/// cases and five seconds, each under `catch_unwind`, and fails naming every kind of panic
/// with a case seed that repeats it. Returns how many cases ran (at least 50, or it fails).
pub fn no_panics(seed: u64, cases: usize, case: impl FnMut(&mut ChaCha8Rng)) -> usize {
    no_panics_within(seed, (cases, 50), Duration::from_secs(5), case)
}

/// `no_panics` for up to `cases.0` cases and `time`, failing below `cases.1` cases.
pub fn no_panics_within(
    seed: u64,
    (cases, least): (usize, usize),
    time: Duration,
    mut case: impl FnMut(&mut ChaCha8Rng),
) -> usize {
    let seed = std::env::var("TPRI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Instant::now();
    let mut panics = HashMap::new();
    let mut ran = 0;
    while ran < cases && start.elapsed() < time {
        let case_seed: u64 = rng.random();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            case(&mut ChaCha8Rng::seed_from_u64(case_seed))
        }));
        if let Err(p) = outcome {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.entry(msg).or_insert(case_seed);
        }
        ran += 1;
    }
    assert!(ran >= least, "only {ran} cases in the time allowed");
    eprintln!(
        "{ran} random cases in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        panics.is_empty(),
        "{} kinds of panic in {ran} cases (message → case seed): {panics:#?}",
        panics.len()
    );
    ran
}
