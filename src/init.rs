//! The seeded initialisation of the parameters (docs/ALGORITHM.md §1, §5): orthogonal, as
//! the published code means to initialise both cells, or PyTorch's defaults, which its GRU
//! keeps in effect (`Init`). Either way the head is semi-orthogonal with a zero bias, as the
//! published code sets it.

use anyhow::Result;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dtp::ReverseLayer;
use crate::model::{CellKind, Dims, Params};

/// How the recurrent cell's tensors start (`--init`; docs/ALGORITHM.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Every weight matrix (each gate block of the GRU's on its own) semi-orthogonal, every
    /// bias zero: the published code's `init_params`. The tanh RNN's default.
    Orthogonal,
    /// PyTorch's defaults for `nn.RNN` / `nn.GRU`: every weight and bias uniform in
    /// (−1/√d, 1/√d) (the tanh RNN's one bias is PyTorch's two added). The GRU's default:
    /// the published GRU's per-gate `init_params` assigns to slices, which leaves these.
    Pytorch,
}

impl Init {
    /// The initialisation `cell` gets when none is asked for: what the published code's
    /// model of that cell ends up with (orthogonal for the tanh RNN, PyTorch's for the GRU).
    pub fn default_for(cell: CellKind) -> Self {
        match cell {
            CellKind::Tanh => Init::Orthogonal,
            CellKind::Gru => Init::Pytorch,
        }
    }
}

impl Params {
    /// Seeded tanh-RNN initialisation: W, U and V (semi-)orthogonal, biases zero
    /// (`Init::Orthogonal` for the tanh RNN, docs/ALGORITHM.md §1). Errors as
    /// [`Params::zeros_of`].
    pub fn init(dims: Dims, seed: u64) -> Result<Self> {
        Self::init_with(CellKind::Tanh, Init::Orthogonal, dims, seed)
    }

    /// Seeded initialisation of `cell` with its default, [`Init::default_for`]. Errors as
    /// [`Params::zeros_of`].
    pub fn init_of(cell: CellKind, dims: Dims, seed: u64) -> Result<Self> {
        Self::init_with(cell, Init::default_for(cell), dims, seed)
    }

    /// Seeded initialisation of `cell` as `init` says, the head semi-orthogonal with a zero
    /// bias (docs/ALGORITHM.md §1). The random stream is drawn in `Params::tensors` order
    /// (the GRU's gate blocks r, z, n in turn), the head last. Errors as
    /// [`Params::zeros_of`]: a size of 0, or tensors too large to address or to fit in
    /// memory.
    pub fn init_with(cell: CellKind, init: Init, dims: Dims, seed: u64) -> Result<Self> {
        Self::check_allocation(cell, dims)?;
        Ok(Self::init_from(
            cell,
            init,
            dims,
            &mut ChaCha8Rng::seed_from_u64(seed),
        ))
    }

    /// [`Params::init_with`] for the tanh RNN with DTP's reverse layer (`Method::Dtp`,
    /// docs/ALGORITHM.md §14): the same tensors, then the reverse layer's V drawn
    /// (semi-)orthogonal from the same stream and its c zero, as the published code
    /// initialises it.
    pub fn init_dtp_with(init: Init, dims: Dims, seed: u64) -> Result<Self> {
        Self::check_allocation(CellKind::Tanh, dims)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = Self::init_from(CellKind::Tanh, init, dims, &mut rng);
        let d = dims.hidden;
        Ok(Self {
            dtp: Some(ReverseLayer {
                w_rev: semi_orthogonal(d, d, &mut rng),
                b_rev: DMatrix::zeros(d, 1),
            }),
            ..params
        })
    }

    /// [`Params::init_dtp_with`] the tanh RNN's default, `Init::Orthogonal`.
    pub fn init_dtp(dims: Dims, seed: u64) -> Result<Self> {
        Self::init_dtp_with(Init::Orthogonal, dims, seed)
    }

    /// `init_with`'s tensors drawn from `rng`, for sizes `check_allocation` passed.
    fn init_from(cell: CellKind, init: Init, dims: Dims, rng: &mut ChaCha8Rng) -> Self {
        let mut params = Self::zeroed(cell, dims);
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        match init {
            Init::Orthogonal => {
                // Gate by gate: the published code orthogonalizes each d-row block alone.
                for (w, cols) in [(&mut params.w_hh, d), (&mut params.w_ih, p)] {
                    for g in 0..cell.gates() {
                        w.rows_mut(g * d, d)
                            .copy_from(&semi_orthogonal(d, cols, rng));
                    }
                }
            }
            Init::Pytorch => {
                let k = 1.0 / (d.max(1) as f64).sqrt();
                let mut uniform = |m: &DMatrix<f64>| {
                    DMatrix::from_fn(m.nrows(), m.ncols(), |_, _| rng.random_range(-k..k))
                };
                params.w_hh = uniform(&params.w_hh);
                params.w_ih = uniform(&params.w_ih);
                params.b = uniform(&params.b);
                params.b_hh = uniform(&params.b_hh);
            }
        }
        params.head_w = semi_orthogonal(q, d, rng);
        params
    }
}

/// `P Qᵀ` from the thin SVD of a matrix with entries uniform in [−1, 1]: orthonormal
/// columns or rows, whichever the shape allows (the published `rand_orth`; its range
/// only scales A, which `P Qᵀ` does not see).
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

    /// `m` has orthonormal columns (rows ≥ cols) or orthonormal rows.
    fn semi_orthogonal_error(m: &DMatrix<f64>) -> f64 {
        let g = if m.nrows() >= m.ncols() {
            m.transpose() * m
        } else {
            m * m.transpose()
        };
        (&g - DMatrix::identity(g.nrows(), g.nrows())).norm()
    }

    #[test]
    fn init_is_semi_orthogonal_and_seeded() {
        for (d, p, q) in [(5, 3, 2), (1, 1, 1), (4, 6, 4)] {
            let dims = Dims {
                input: p,
                hidden: d,
                output: q,
            };
            let a = Params::init(dims, 7).unwrap();
            assert_eq!(a, Params::init(dims, 7).unwrap());
            assert_ne!(a, Params::init(dims, 8).unwrap());
            assert_eq!(a, Params::init_of(CellKind::Tanh, dims, 7).unwrap());
            for m in [&a.w_hh, &a.w_ih, &a.head_w] {
                assert!(semi_orthogonal_error(m) < 1e-12);
            }
            assert_eq!(a.b.norm(), 0.0);
            assert_eq!(a.head_b.norm(), 0.0);
            a.check_dims(dims).unwrap();
        }
    }

    #[test]
    fn gru_inits_follow_pytorch_layout_and_their_definitions() {
        let dims = Dims {
            input: 2,
            hidden: 5,
            output: 3,
        };
        let d = dims.hidden;
        let g = Params::init_of(CellKind::Gru, dims, 1).unwrap();
        assert_eq!(
            g,
            Params::init_with(CellKind::Gru, Init::Pytorch, dims, 1).unwrap()
        );
        let shapes: Vec<_> = g.tensors().iter().map(|(n, m)| (*n, m.shape())).collect();
        assert_eq!(
            shapes,
            [
                ("gru.w_hh", (15, 5)),
                ("gru.w_ih", (15, 2)),
                ("gru.b_ih", (15, 1)),
                ("gru.b_hh", (15, 1)),
                ("head.w", (3, 5)),
                ("head.b", (3, 1)),
            ]
        );
        assert_eq!(g.dims(), dims);
        // PyTorch's: the cell uniform in ±1/√d; the head as the published code sets it.
        let k = 1.0 / 5f64.sqrt();
        for m in [&g.w_hh, &g.w_ih, &g.b, &g.b_hh] {
            assert!(m.amax() < k && m.amax() > 0.0);
        }
        assert!(semi_orthogonal_error(&g.head_w) < 1e-12);
        assert_eq!(g.head_b.norm(), 0.0);
        // Orthogonal: every gate block on its own, biases zero.
        let o = Params::init_with(CellKind::Gru, Init::Orthogonal, dims, 1).unwrap();
        for gate in 0..3 {
            assert!(semi_orthogonal_error(&o.w_hh.rows(gate * d, d).into_owned()) < 1e-12);
            assert!(semi_orthogonal_error(&o.w_ih.rows(gate * d, d).into_owned()) < 1e-12);
        }
        assert_eq!(o.b.norm() + o.b_hh.norm() + o.head_b.norm(), 0.0);
        assert!(semi_orthogonal_error(&o.head_w) < 1e-12);
        // The tanh RNN's PyTorch init: both of its biases uniform, like nn.RNN's.
        let t = Params::init_with(CellKind::Tanh, Init::Pytorch, dims, 1).unwrap();
        assert!(t.w_hh.amax() < k && t.b.amax() < k && t.b.amax() > 0.0);
        assert!(t.b_hh.amax() < k && t.b_hh.amax() > 0.0);
        t.check_dims(dims).unwrap();
        assert_eq!(Init::default_for(CellKind::Tanh), Init::Orthogonal);
        assert!(Params::init_with(
            CellKind::Gru,
            Init::Orthogonal,
            Dims { hidden: 0, ..dims },
            1
        )
        .is_err());
    }
}
