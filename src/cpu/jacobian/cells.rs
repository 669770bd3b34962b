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
            h: Cow::Borrowed(h),
            gates: kept_or_formed(params, x, h, gates),
        }
    }
}

impl Cell for GruCell<'_> {
    fn steps(&self) -> usize {
        self.gates.steps()
    }

    fn width(&self) -> usize {
        self.params.w_hh.ncols()
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
        // backward of e = 1 (`gru_step_backward`: J_tᵀ w = z ⊙ w + W_hhᵀ (a ⊙ w)).
        let w = self.params.w_hh.as_slice();
        scratch.resize(3 * d, 0.0);
        let columns = out
            .chunks_exact_mut(d)
            .zip(self.gates.at(t - 1, seqs).chunks_exact(4 * d))
            .zip(self.h.at(t - 1, seqs).chunks_exact(d));
        for ((o, g), h_prev) in columns {
            let (a_r, rest) = scratch.split_at_mut(d);
            let (a_z, a_n) = rest.split_at_mut(d);
            for j in 0..d {
                let gates = (g[j], g[d + j], g[2 * d + j], g[3 * d + j]);
                let [da_r, da_z, da_n] = gru_step_backward(1.0, gates, h_prev[j]);
                (a_r[j], a_z[j], a_n[j]) = (da_r, da_z, da_n * gates.0);
            }
            for (i, o_i) in o.iter_mut().enumerate() {
                // W_hh is column-major [3d, d]: its column i holds W_r, W_z, W_n's.
                let (w_r, rest) = w[i * 3 * d..(i + 1) * 3 * d].split_at(d);
                let (w_z, w_n) = rest.split_at(d);
                let entry = |k: usize| a_r[k] * w_r[k] + a_z[k] * w_z[k] + a_n[k] * w_n[k];
                let mut sum = [0.0; 4];
                for k in 0..d {
                    let e = entry(k);
                    sum[k % 4] += e * e;
                }
                // The diagonal entry's z_i, added to the sum over k: (e + z)² − e².
                let (e, z) = (entry(i), g[d + i]);
                *o_i = (sum[0] + sum[1]) + (sum[2] + sum[3]) + z * (2.0 * e + z);
            }
        }
        Ok(())
    }
}
