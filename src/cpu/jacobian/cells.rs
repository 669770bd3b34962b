//! The two cells linearized (`Cell`): the tanh RNN's `J_t = D_t W` and the GRU's Jacobian
//! through its gates, their products and the diagonal of `J_tᵀ J_t` (the per-step CG's
//! preconditioner), on the working layout.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use anyhow::Result;
use nalgebra::DMatrix;

use super::{check_product, Cell, Step};
use crate::arguments::{cell_inputs, cell_params, steps};
use crate::cpu::gru::{gate_history, gru_step_backward, kept_or_formed};
use crate::cpu::simd::step_product;
use crate::cpu::steps::Steps;
use crate::model::{CellKind, Params};

/// The tanh RNN, `J_t = D_t W` with `D_t = diag(1 − h_t²)`. The exact derivative, not the
/// clamped one of docs/ALGORITHM.md §2's sweep: the two agree wherever |h_t| < 1 − ε.
pub struct TanhCell<'a> {
    w: &'a DMatrix<f64>,
    /// Wᵀ, column-major, so that Jᵀ's product reads it in place too.
    w_t: DMatrix<f64>,
    /// (W ⊙ W)ᵀ, for the diagonal of JᵀJ, formed when first asked for.
    w_sq_t: OnceLock<DMatrix<f64>>,
    /// h_0 … h_T, whose 1 − h_t² is D_t.
    h: Cow<'a, Steps>,
}

impl<'a> TanhCell<'a> {
    /// Linearizes the tanh RNN `params` at the states `h` (h_0 … h_T, each B × d): an
    /// error naming the argument where a shape does not fit.
    pub fn new(params: &'a Params, h: &[DMatrix<f64>]) -> Result<Self> {
        let d = cell_params(params, CellKind::Tanh, "TanhCell::new")?.hidden;
        let b = h.first().map_or(0, |m| m.nrows());
        steps("h", h, h.len().max(1), (b, d))?;
        Ok(Self {
            w: &params.w_hh,
            w_t: params.w_hh.transpose(),
            w_sq_t: OnceLock::new(),
            h: Cow::Owned(Steps::from_rows(h, b, d)),
        })
    }

    /// Linearizes at the states `h` (h_0 … h_T) in the working layout.
    pub(crate) fn at(params: &'a Params, h: &'a Steps) -> Self {
        Self {
            w: &params.w_hh,
            w_t: params.w_hh.transpose(),
            w_sq_t: OnceLock::new(),
            h: Cow::Borrowed(h),
        }
    }

    /// D_t = 1 − h_t² of the sequences `seqs`, element by element.
    fn deriv(&self, t: usize, seqs: &Range<usize>) -> impl Iterator<Item = f64> + '_ {
        self.h.at(t, seqs).iter().map(|&v| 1.0 - v * v)
    }
}

impl Cell for TanhCell<'_> {
    fn steps(&self) -> usize {
        self.h.steps().saturating_sub(1)
    }

    fn width(&self) -> usize {
        self.w.ncols()
    }

    fn kind(&self) -> CellKind {
        CellKind::Tanh
    }

    fn batch(&self) -> usize {
        self.h.batch()
    }

    fn jvp_into(
        &self,
        (t, seqs): Step<'_>,
        u: &[f64],
        out: &mut [f64],
        _: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), u, out)?;
        step_product(self.w.as_slice(), self.width(), u, false, out);
        for (o, dv) in out.iter_mut().zip(self.deriv(t, seqs)) {
            *o *= dv;
        }
        Ok(())
    }

    fn vjp_into(
        &self,
        (t, seqs): Step<'_>,
        w: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), w, out)?;
        scratch.clear();
        scratch.extend(w.iter().zip(self.deriv(t, seqs)).map(|(a, dv)| a * dv));
        step_product(self.w_t.as_slice(), self.width(), scratch, false, out);
        Ok(())
    }

    fn normal_diagonal_into(
        &self,
        (t, seqs): Step<'_>,
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), &*out, &*out)?;
        // (JᵀJ)_ii = Σ_k D_k² W_ki²: (W ⊙ W)ᵀ applied to D².
        scratch.clear();
        scratch.extend(self.deriv(t, seqs).map(|dv| dv * dv));
        let w_sq_t = self.w_sq_t.get_or_init(|| self.w_t.map(|v| v * v));
        step_product(w_sq_t.as_slice(), self.width(), scratch, false, out);
        Ok(())
    }
}

/// The GRU of `cpu::gru`, linearized through its gates (all of which depend on h_{t−1}).
pub struct GruCell<'a> {
    params: &'a Params,
    /// W_hhᵀ [d, 3d], column-major, for Jᵀ's product.
    w_t: DMatrix<f64>,
    /// The products of the gate blocks' entries [d, 6d] for the diagonal of JᵀJ
    /// (`gate_squares`), formed when first asked for.
    squares_t: OnceLock<DMatrix<f64>>,
    /// h_0 … h_T.
    h: Cow<'a, Steps>,
    /// The gates r | z | n | hn of steps 1 … T (step t at t − 1, 4d values a column).
    gates: Cow<'a, Steps>,
}

impl<'a> GruCell<'a> {
    /// Linearizes the GRU `params` at the states `h` (h_0 … h_T, each B × d) and inputs `x`
    /// (x_1 … x_T, each B × p): an error naming the argument where a shape does not fit.
    pub fn new(params: &'a Params, x: &[DMatrix<f64>], h: &[DMatrix<f64>]) -> Result<Self> {
        let (dims, t_len, b) = cell_inputs(params, CellKind::Gru, x, "GruCell::new")?;
        steps("h", h, t_len + 1, (b, dims.hidden))?;
        let x = Steps::from_rows(x, b, dims.input);
        let h = Steps::from_rows(h, b, dims.hidden);
        let gates = gate_history(params, &x, &h);
        Ok(Self {
            params,
            w_t: params.w_hh.transpose(),
            squares_t: OnceLock::new(),
            h: Cow::Owned(h),
            gates: Cow::Owned(gates),
        })
    }

    /// Linearizes at the states `h` in the working layout, at the gates the forward pass
    /// kept (`None`: formed again from h and x).
    pub(crate) fn at(
        params: &'a Params,
        x: &Steps,
        h: &'a Steps,
        gates: Option<&'a Steps>,
    ) -> Self {
        Self {
            params,
            w_t: params.w_hh.transpose(),
            squares_t: OnceLock::new(),
            h: Cow::Borrowed(h),
            gates: kept_or_formed(params, x, h, gates),
        }
    }
}

/// The six products of the gate blocks' entries the GRU's diag(JᵀJ) is linear in, as the
/// columns of one d × 6d matrix (column-major): for unit i, row i holds W_r,ki², W_z,ki²,
/// W_n,ki², W_r,ki W_z,ki, W_r,ki W_n,ki, W_z,ki W_n,ki over k, block by block. Then
/// Σ_k (Σ_g a_g,k W_g,ki)² is row i times [a_r²; a_z²; a_n²; 2a_r a_z; 2a_r a_n; 2a_z a_n],
/// one matrix product for a step's sequences (`step_product`) instead of a scalar loop per
/// sequence and unit.
fn gate_squares(w_hh: &DMatrix<f64>) -> DMatrix<f64> {
    let d = w_hh.ncols();
    let pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)];
    DMatrix::from_fn(d, 6 * d, |i, c| {
        let (g, h) = pairs[c / d];
        let k = c % d;
        w_hh[(g * d + k, i)] * w_hh[(h * d + k, i)]
    })
}

impl Cell for GruCell<'_> {
    fn steps(&self) -> usize {
        self.gates.steps()
    }

    fn width(&self) -> usize {
        self.params.w_hh.ncols()
    }

    fn kind(&self) -> CellKind {
        CellKind::Gru
    }

    fn batch(&self) -> usize {
        self.h.batch()
    }

    fn jvp_into(
        &self,
        (t, seqs): Step<'_>,
        u: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), u, out)?;
        let d = self.width();
        // Tangent of gh = W h + b_hh, all three gates at once.
        scratch.resize(3 * u.len(), 0.0);
        step_product(self.params.w_hh.as_slice(), 3 * d, u, false, scratch);
        let columns = out
            .chunks_exact_mut(d)
            .zip(u.chunks_exact(d))
            .zip(scratch.chunks_exact(3 * d))
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((((o, u), du), g), h_prev) in columns {
            for j in 0..d {
                let (r, z, n, hn) = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let dr = r * (1.0 - r) * du[j];
                let dz = z * (1.0 - z) * du[d + j];
                let dn = (1.0 - n * n) * (dr * hn + r * du[2 * d + j]);
                o[j] = (h_prev[j] - n) * dz + (1.0 - z) * dn + z * u[j];
            }
        }
        Ok(())
    }

    fn vjp_into(
        &self,
        (t, seqs): Step<'_>,
        w: &[f64],
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), w, out)?;
        let d = self.width();
        // The BP step backward is exactly Jᵀ w: z ⊙ w, then Wᵀ dgh.
        scratch.resize(3 * w.len(), 0.0);
        let columns = out
            .chunks_exact_mut(d)
            .zip(w.chunks_exact(d))
            .zip(scratch.chunks_exact_mut(3 * d))
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((((o, w), dgh), g), h_prev) in columns {
            for j in 0..d {
                let gates = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let [da_r, da_z, da_n] = gru_step_backward(w[j], gates, h_prev[j]);
                dgh[j] = da_r;
                dgh[d + j] = da_z;
                dgh[2 * d + j] = da_n * gates.0;
                o[j] = gates.1 * w[j];
            }
        }
        step_product(self.w_t.as_slice(), d, scratch, true, out);
        Ok(())
    }

    fn normal_diagonal_into(
        &self,
        (t, seqs): Step<'_>,
        out: &mut [f64],
        scratch: &mut Vec<f64>,
    ) -> Result<()> {
        check_product(self, (t, seqs), &*out, &*out)?;
        let d = self.width();
        // Column i of J_t is z ⊙ e_i + Σ_g a_g ⊙ W_g[:, i] with a = (a_r, a_z, a_n) the step
        // backward of e = 1 (`gru_step_backward`: J_tᵀ w = z ⊙ w + W_hhᵀ (a ⊙ w)): the sum
        // over k without z through `gate_squares`, then (e + z_i)² − e² for the diagonal
        // entry's e = Σ_g a_g,i W_g,ii.
        let squares_t = self
            .squares_t
            .get_or_init(|| gate_squares(&self.params.w_hh));
        let w = &self.params.w_hh;
        let n = seqs.len();
        scratch.resize(6 * d * n, 0.0);
        let columns = scratch
            .chunks_exact_mut(6 * d)
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((y, g), h_prev) in columns {
            for j in 0..d {
                let gates = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let [a_r, a_z, a_n] = gru_step_backward(1.0, gates, h_prev[j]);
                let a_n = a_n * gates.0;
                for (block, v) in [
                    a_r * a_r,
                    a_z * a_z,
                    a_n * a_n,
                    2.0 * a_r * a_z,
                    2.0 * a_r * a_n,
                    2.0 * a_z * a_n,
                ]
                .into_iter()
                .enumerate()
                {
                    y[block * d + j] = v;
                }
            }
        }
        step_product(squares_t.as_slice(), d, scratch, false, out);
        let columns = out
            .chunks_exact_mut(d)
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((o, g), h_prev) in columns {
            for (i, o_i) in o.iter_mut().enumerate() {
                let gates = (g[i], g[d + i], g[2 * d + i], g[3 * d + i]);
                let [a_r, a_z, a_n] = gru_step_backward(1.0, gates, h_prev[i]);
                let e = a_r * w[(i, i)] + a_z * w[(d + i, i)] + a_n * gates.0 * w[(2 * d + i, i)];
                // The expanded square may round a little below zero where it vanishes.
                *o_i = o_i.max(0.0) + gates.1 * (2.0 * e + gates.1);
            }
        }
        Ok(())
    }
}
