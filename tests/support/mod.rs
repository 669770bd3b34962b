//! What every test binary shares: seeded random streams, random matrices, random problems
//! (parameters of either cell, a batch for either loss) and the one relative error every
//! comparison goes through. Each test crate includes it from its root with `mod support;`
//! (tests/cpu_reference/main.rs with `#[path = "../support/mod.rs"]`).

#![allow(dead_code)] // each test binary uses a different subset

use nalgebra::{DMatrix, Dim, Matrix, RawStorage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tpri::config::Loss;
use tpri::model::{is_bias, CellKind, Dims, Params};
use tpri::tasks::{Batch, Targets};

// ---------- random streams and matrices ----------

/// A seeded stream; every test draws its inputs fresh from one.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Entries uniform in [lo, hi).
pub fn uniform(rng: &mut ChaCha8Rng, rows: usize, cols: usize, lo: f64, hi: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.random_range(lo..hi))
}

/// Entries uniform in [−scale, scale).
pub fn random(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f64) -> DMatrix<f64> {
    uniform(rng, rows, cols, -scale, scale)
}

/// Entries normal with mean 0 and standard deviation `std` (Box–Muller; `rand_distr` is
/// not a dependency).
pub fn gaussian(rng: &mut ChaCha8Rng, rows: usize, cols: usize, std: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| {
        // 1 − u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    })
}

// ---------- random problems ----------

/// Model sizes: input p, hidden d, output q.
pub fn dims(p: usize, d: usize, q: usize) -> Dims {
    Dims {
        input: p,
        hidden: d,
        output: q,
    }
}

/// Sizes of one randomized case: B sequences of length T, input p, hidden d, output q.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub b: usize,
    pub t: usize,
    pub p: usize,
    pub d: usize,
    pub q: usize,
}

impl Shape {
    /// Sizes in the order B, T, p, d, q.
    pub const fn new(b: usize, t: usize, p: usize, d: usize, q: usize) -> Self {
        Self { b, t, p, d, q }
    }

    pub fn dims(self) -> Dims {
        dims(self.p, self.d, self.q)
    }
}

/// What random parameters are drawn from. Either way every tensor is non-zero.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Every tensor Gaussian, drawn from the stream in `Params::tensors` order: W with
    /// standard deviation `w_gain/√d` (so the recurrence neither explodes nor dies out over
    /// a few steps), U 1/√p, V 1/√d, biases 0.2. Generic matrices, for the checks of the
    /// CPU reference against finite differences and hand computations.
    Gaussian { w_gain: f64 },
    /// The library's initialisation `Params::init_of(cell, dims, seed).unwrap()` (tanh RNN: W, U, V
    /// orthogonal; GRU: PyTorch's ±1/√d) with W multiplied by `gain`, and for the GRU U
    /// too (PyTorch's scale leaves every gate near ½; a gain above 1 spreads them). The tanh
    /// RNN's biases, zero there, are drawn from the stream: b_ih, b_hh, then c, uniform in ±0.3.
    Library { seed: u64, gain: f64 },
}

/// Random parameters of `cell` with sizes `dims`, drawn from `rng` as `init` says.
pub fn random_params(rng: &mut ChaCha8Rng, cell: CellKind, dims: Dims, init: Init) -> Params {
    match init {
        Init::Gaussian { w_gain } => {
            let (p, d) = (dims.input as f64, dims.hidden as f64);
            let mut params = Params::zeros_of(cell, dims).unwrap();
            let names = cell.param_names().iter();
            for (name, m) in names.zip(params.tensors_mut()) {
                let std = if is_bias(name) {
                    0.2
                } else if name.ends_with("w_hh") {
                    w_gain / d.sqrt()
                } else if name.ends_with("w_ih") {
                    1.0 / p.sqrt()
                } else {
                    1.0 / d.sqrt()
                };
                *m = gaussian(rng, m.nrows(), m.ncols(), std);
            }
            params
        }
        Init::Library { seed, gain } => {
            let mut params = Params::init_of(cell, dims, seed).unwrap();
            params.w_hh *= gain;
            match cell {
                CellKind::Tanh => {
                    params.b = random(rng, dims.hidden, 1, 0.3);
                    params.b_hh = random(rng, dims.hidden, 1, 0.3);
                    params.head_b = random(rng, dims.output, 1, 0.3);
                }
                CellKind::Gru => params.w_ih *= gain,
            }
            params
        }
    }
}

/// `Init::Library` parameters determined by `seed` alone (the tanh RNN's biases from a
/// stream seeded with it too): the GPU tests' cases, one number each.
pub fn seeded_params(cell: CellKind, dims: Dims, seed: u64, gain: f64) -> Params {
    random_params(
        &mut rng(seed ^ 0x5eed),
        cell,
        dims,
        Init::Library { seed, gain },
    )
}

/// T input matrices B×p with entries uniform in [−1, 1).
pub fn inputs(rng: &mut ChaCha8Rng, t: usize, b: usize, p: usize) -> Vec<DMatrix<f64>> {
    (0..t).map(|_| random(rng, b, p, 1.0)).collect()
}

/// A random batch of shape `s`: inputs uniform in [−1, 1), then labels uniform in 0..q
/// (cross-entropy; for ce-seq one per step, drawn step by step) or values uniform in
/// [−1, 1) (MSE).
pub fn random_batch(rng: &mut ChaCha8Rng, s: Shape, loss: Loss) -> Batch {
    let x = inputs(rng, s.t, s.b, s.p);
    let y = match loss {
        Loss::CrossEntropy => Targets::Labels((0..s.b).map(|_| rng.random_range(0..s.q)).collect()),
        Loss::Mse => Targets::Values(uniform(rng, s.b, s.q, -1.0, 1.0)),
        Loss::CrossEntropySeq => {
            Targets::StepLabels(DMatrix::from_fn(s.b, s.t, |_, _| rng.random_range(0..s.q)))
        }
    };
    Batch { x, y, tokens: None }
}

/// A random problem of shape `s`: parameters of `cell` (`random_params`), then a batch for
/// `loss` (`random_batch`), both from `rng`.
pub fn random_problem(
    rng: &mut ChaCha8Rng,
    cell: CellKind,
    s: Shape,
    loss: Loss,
    init: Init,
) -> (Params, Batch) {
    let params = random_params(rng, cell, s.dims(), init);
    let batch = random_batch(rng, s, loss);
    (params, batch)
}

// ---------- comparisons ----------

/// `‖got − want‖ / ‖want‖` (Frobenius norms) after asserting that both have the same shape
/// and that every element of each is finite, so that a poisoned NaN a kernel failed to
/// overwrite, or an overflow, fails here instead of passing a comparison. A zero reference
/// compares absolutely: `‖got‖`.
pub fn rel_err<R1, C1, S1, R2, C2, S2>(
    what: &str,
    got: &Matrix<f64, R1, C1, S1>,
    want: &Matrix<f64, R2, C2, S2>,
) -> f64
where
    R1: Dim,
    C1: Dim,
    S1: RawStorage<f64, R1, C1>,
    R2: Dim,
    C2: Dim,
    S2: RawStorage<f64, R2, C2>,
{
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    if let Some((i, v)) = got.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        panic!("{what}: element {i} is {v} (not written, or overflowed)");
    }
    if let Some((i, v)) = want.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        panic!("{what}: element {i} of the reference is {v}");
    }
    let diff = got
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let norm = want.iter().map(|b| b * b).sum::<f64>().sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// Asserts `rel_err ≤ tol` and returns it.
pub fn check<R1, C1, S1, R2, C2, S2>(
    what: &str,
    got: &Matrix<f64, R1, C1, S1>,
    want: &Matrix<f64, R2, C2, S2>,
    tol: f64,
) -> f64
where
    R1: Dim,
    C1: Dim,
    S1: RawStorage<f64, R1, C1>,
    R2: Dim,
    C2: Dim,
    S2: RawStorage<f64, R2, C2>,
{
    let e = rel_err(what, got, want);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
    e
}

/// `check` over a sequence of matrices, stacked.
pub fn check_all(what: &str, got: &[DMatrix<f64>], want: &[DMatrix<f64>], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: count");
    check(what, &stacked(got), &stacked(want), tol)
}

/// `check` against a reference that must not vanish: a zero reference would make a
/// relative check meaningless, so the cases are drawn to avoid it and this asserts so.
pub fn assert_close(what: &str, got: &DMatrix<f64>, want: &DMatrix<f64>, tol: f64) {
    assert!(
        want.norm() > 1e-8,
        "{what}: reference is (nearly) zero, the check would be vacuous"
    );
    check(what, got, want, tol);
}

/// Every element of `ms`, one matrix after another, as one column.
pub fn stacked(ms: &[DMatrix<f64>]) -> DMatrix<f64> {
    let all: Vec<_> = ms.iter().flat_map(|m| m.iter().copied()).collect();
    DMatrix::from_vec(all.len(), 1, all)
}

/// `values` as one column.
pub fn column(values: &[f64]) -> DMatrix<f64> {
    DMatrix::from_column_slice(values.len(), 1, values)
}

/// `v` as a 1×1 matrix.
pub fn scalar(v: f64) -> DMatrix<f64> {
    DMatrix::from_element(1, 1, v)
}

/// The offsets v_t − h_t of targets `v` from states `h`, step by step.
pub fn offsets(v: &[DMatrix<f64>], h: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    v.iter().zip(h).map(|(v_t, h_t)| v_t - h_t).collect()
}

/// `check_all` of targets `got` against `want` and of their offsets from the states `h`
/// (at a small γ_h the offsets v − h are far below f32's resolution of h, and only they
/// carry the sweep's information); returns the offsets' error.
pub fn check_targets(
    what: &str,
    got: &[DMatrix<f64>],
    want: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    tol: f64,
) -> f64 {
    check_all(&format!("v {what}"), got, want, tol);
    check_all(
        &format!("v − h {what}"),
        &offsets(got, h),
        &offsets(want, h),
        tol,
    )
}

/// Gives `params` a trained embedding table of `vocab` rows (normal with standard
/// deviation `std`; the language model draws it with 1) and `batch` random token ids below
/// `vocab`, its x made what the table gives them (so that a backend reading x and one
/// gathering agree).
pub fn embed(rng: &mut ChaCha8Rng, params: &mut Params, batch: &mut Batch, vocab: usize, std: f64) {
    let (b, t, p) = (batch.batch_size(), batch.seq_len(), params.dims().input);
    let table = gaussian(rng, vocab, p, std);
    let ids = DMatrix::from_fn(b, t, |_, _| rng.random_range(0..vocab as u32));
    batch.x = (0..t)
        .map(|k| DMatrix::from_fn(b, p, |i, j| table[(ids[(i, k)] as usize, j)]))
        .collect();
    batch.tokens = Some(ids);
    params.embedding = Some(table);
}

/// Asserts that `got` and `want` (matrices of the same shapes) hold the same bits, saying
/// how far apart they are when they do not.
pub fn assert_same_bits(what: &str, got: &[DMatrix<f64>], want: &[DMatrix<f64>]) {
    let apart = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).amax())
        .fold(0.0, f64::max);
    assert!(got == want, "{what}: {apart:e} apart");
}
