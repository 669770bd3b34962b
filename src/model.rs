//! The tanh RNN with its linear head (SPEC §1): parameters and their seeded initialisation.

use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Sizes of the model: input p, hidden d, output q.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dims {
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
}

/// Names of the parameter tensors, in the order `Params::tensors` yields them.
pub const PARAM_NAMES: [&str; 5] = ["rnn.w_hh", "rnn.w_ih", "rnn.b", "head.w", "head.b"];

/// Parameters of the RNN and its head. Biases are column matrices so that every
/// tensor is handled alike (optimizers, files, norms). Gradients use the same type.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// W: d×d.
    pub w_hh: DMatrix<f64>,
    /// U: d×p.
    pub w_ih: DMatrix<f64>,
    /// b: d×1.
    pub b: DMatrix<f64>,
    /// V: q×d.
    pub head_w: DMatrix<f64>,
    /// c: q×1.
    pub head_b: DMatrix<f64>,
}

impl Params {
    /// All-zero parameters of the given sizes (also the zero gradient).
    pub fn zeros(dims: Dims) -> Self {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        Self {
            w_hh: DMatrix::zeros(d, d),
            w_ih: DMatrix::zeros(d, p),
            b: DMatrix::zeros(d, 1),
            head_w: DMatrix::zeros(q, d),
            head_b: DMatrix::zeros(q, 1),
        }
    }

    /// Seeded initialisation: W, U and V (semi-)orthogonal, biases zero.
    pub fn init(dims: Dims, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        Self {
            w_hh: semi_orthogonal(d, d, &mut rng),
            w_ih: semi_orthogonal(d, p, &mut rng),
            b: DMatrix::zeros(d, 1),
            head_w: semi_orthogonal(q, d, &mut rng),
            head_b: DMatrix::zeros(q, 1),
        }
    }

    /// The sizes these parameters belong to.
    pub fn dims(&self) -> Dims {
        Dims {
            input: self.w_ih.ncols(),
            hidden: self.w_hh.nrows(),
            output: self.head_w.nrows(),
        }
    }

    /// The tensors paired with their names (`PARAM_NAMES` order).
    pub fn tensors(&self) -> [(&'static str, &DMatrix<f64>); 5] {
        [
            (PARAM_NAMES[0], &self.w_hh),
            (PARAM_NAMES[1], &self.w_ih),
            (PARAM_NAMES[2], &self.b),
            (PARAM_NAMES[3], &self.head_w),
            (PARAM_NAMES[4], &self.head_b),
        ]
    }

    /// Mutable tensors in `PARAM_NAMES` order.
    pub fn tensors_mut(&mut self) -> [&mut DMatrix<f64>; 5] {
        [
            &mut self.w_hh,
            &mut self.w_ih,
            &mut self.b,
            &mut self.head_w,
            &mut self.head_b,
        ]
    }

    /// Checks that every tensor has the shape `dims` implies, naming the first that does not.
    pub fn check_dims(&self, dims: Dims) -> Result<()> {
        let want = Params::zeros(dims);
        for ((name, got), (_, exp)) in self.tensors().iter().zip(want.tensors().iter()) {
            if got.shape() != exp.shape() {
                bail!(
                    "tensor {name} has shape {:?}, expected {:?}",
                    got.shape(),
                    exp.shape()
                );
            }
        }
        Ok(())
    }
}

/// `P Qᵀ` from the thin SVD of a matrix with entries uniform in [−1, 1].
fn semi_orthogonal(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> DMatrix<f64> {
    if rows == 0 || cols == 0 {
        return DMatrix::zeros(rows, cols);
    }
    let a = DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-1.0..=1.0));
    let svd = a.svd(true, true);
    let u = svd.u.expect("SVD was asked for U");
    let v_t = svd.v_t.expect("SVD was asked for Vᵀ");
    u * v_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_semi_orthogonal_and_seeded() {
        for (d, p, q) in [(5, 3, 2), (1, 1, 1), (4, 6, 4)] {
            let dims = Dims {
                input: p,
                hidden: d,
                output: q,
            };
            let a = Params::init(dims, 7);
            assert_eq!(a, Params::init(dims, 7));
            assert_ne!(a, Params::init(dims, 8));
            let w = &a.w_hh;
            assert!((w.transpose() * w - DMatrix::identity(d, d)).norm() < 1e-12);
            // U is d×p: orthonormal columns when p ≤ d, rows otherwise.
            let u = &a.w_ih;
            let g = if p <= d {
                u.transpose() * u
            } else {
                u * u.transpose()
            };
            assert!((&g - DMatrix::identity(g.nrows(), g.nrows())).norm() < 1e-12);
            assert_eq!(a.b.norm(), 0.0);
            a.check_dims(dims).unwrap();
        }
    }
}
