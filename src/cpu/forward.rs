//! Forward pass of the tanh RNN (twin of `shaders/forward.wgsl`).

use nalgebra::DMatrix;

use crate::model::Params;

/// Hidden states h_0 = 0, h_1 … h_T (each B×d) for inputs `x` (T matrices B×p).
pub fn forward(params: &Params, x: &[DMatrix<f64>]) -> Vec<DMatrix<f64>> {
    let b = x.first().map_or(0, |m| m.nrows());
    let d = params.w_hh.nrows();
    let w_t = params.w_hh.transpose();
    let u_t = params.w_ih.transpose();
    let bias = params.b.transpose();
    let mut h = Vec::with_capacity(x.len() + 1);
    h.push(DMatrix::zeros(b, d));
    for x_t in x {
        let mut a = &h[h.len() - 1] * &w_t + x_t * &u_t;
        for mut row in a.row_iter_mut() {
            row += &bias;
        }
        h.push(a.map(f64::tanh));
    }
    h
}
