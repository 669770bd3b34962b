//! Backpropagation through time for BP and for the TP surrogate (SPEC §2 step 6, §3;
//! twin of `shaders/bptt.wgsl`).

use nalgebra::DMatrix;

use crate::model::Params;

/// What is injected into the backward recursion.
#[derive(Clone, Copy, Debug)]
pub enum Injection<'a> {
    /// BP: `e_T = g_T = ∇_{h_T} ℓ`, nothing at other steps.
    Top(&'a DMatrix<f64>),
    /// TP surrogate: `h_t − v_t` at every step, targets v_0 … v_T.
    Targets(&'a [DMatrix<f64>]),
}

/// Gradients of the recurrent parameters W (d×d), U (d×p), b (d×1), and the size of the
/// error at each step.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnGrads {
    pub w_hh: DMatrix<f64>,
    pub w_ih: DMatrix<f64>,
    pub b: DMatrix<f64>,
    /// ‖e_t‖_F over the batch for t = 1 … T (for BP, the norm of ∂ℓ/∂h_t): how far back
    /// in time the training signal reaches.
    pub error_norms: Vec<f64>,
}

/// Gradients of W, U, b from the errors e_t: with `through_time`,
/// `e_t = inject_t + Wᵀ D_{t+1} e_{t+1}`; without, `e_t = inject_t` (the local mode).
pub fn bptt(
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> RnnGrads {
    let (d, p) = params.w_ih.shape();
    let t_len = x.len();
    let mut g = RnnGrads {
        w_hh: DMatrix::zeros(d, d),
        w_ih: DMatrix::zeros(d, p),
        b: DMatrix::zeros(d, 1),
        error_norms: vec![0.0; t_len],
    };
    // D_{t+1} e_{t+1} of the step after the current one.
    let mut delta_next: Option<DMatrix<f64>> = None;
    for t in (1..=t_len).rev() {
        let mut e = match injection {
            Injection::Top(g_top) if t == t_len => g_top.clone(),
            Injection::Top(_) => DMatrix::zeros(h[t].nrows(), d),
            Injection::Targets(v) => &h[t] - &v[t],
        };
        if through_time {
            if let Some(dn) = &delta_next {
                e += dn * &params.w_hh;
            }
        }
        g.error_norms[t - 1] = e.norm();
        let delta = e.zip_map(&h[t], |e, ht| e * (1.0 - ht * ht));
        g.w_hh += delta.tr_mul(&h[t - 1]);
        g.w_ih += delta.tr_mul(&x[t - 1]);
        for (j, col) in delta.column_iter().enumerate() {
            g.b[j] += col.sum();
        }
        delta_next = Some(delta);
    }
    g
}
