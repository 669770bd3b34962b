//! Random problems for the unit tests of the working-layout kernels (the integration tests
//! in `tests/` reach the row forms only).

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::init::Init;
use crate::model::{CellKind, Dims, Params};

/// A seeded stream.
pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Entries uniform in [−scale, scale).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, rows: usize, cols: usize, scale: f64) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-scale..scale))
}

/// T matrices B × p of entries uniform in [−1, 1).
pub(crate) fn inputs(rng: &mut ChaCha8Rng, t: usize, b: usize, p: usize) -> Vec<DMatrix<f64>> {
    (0..t).map(|_| uniform(rng, b, p, 1.0)).collect()
}

/// PyTorch's initialization of a `cell` of `p` inputs and `d` units (one output), with W
/// drawn again uniform in ±`w_gain`/√d.
pub(crate) fn params(
    rng: &mut ChaCha8Rng,
    cell: CellKind,
    (p, d): (usize, usize),
    w_gain: f64,
) -> Params {
    let dims = Dims {
        input: p,
        hidden: d,
        output: 1,
    };
    let mut params = Params::init_with(cell, Init::Pytorch, dims, rng.random()).unwrap();
    let rows = params.w_hh.nrows();
    params.w_hh = uniform(rng, rows, d, w_gain / (d as f64).sqrt());
    params
}
