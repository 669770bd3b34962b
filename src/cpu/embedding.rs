//! The language model's trained embedding table (docs/ALGORITHM.md §13; twins of
//! `shaders/embedding_gather.wgsl` and `shaders/embedding_grad.wgsl`): the inputs gathered
//! from the table, and the table's gradient scattered back from the errors δ_t.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::cpu::steps::{gemm, Mat, Steps};
use crate::error::Error;
use crate::model::Params;
use crate::tasks::Batch;
use crate::validate::check_tokens;

/// The inputs x_1 … x_T of `batch` in the working layout: gathered from the trained table
/// where `params` have one (by the batch's token ids, which must be there and fit it:
/// `validate::check_tokens`), else the batch's own x.
pub fn inputs(params: &Params, batch: &Batch) -> Result<Steps> {
    check_tokens(params.vocabulary(), batch)?;
    match (&params.embedding, &batch.tokens) {
        (Some(table), Some(ids)) => gather(table, ids),
        _ => Ok(Steps::from_rows(
            &batch.x,
            batch.batch_size(),
            params.dims().input,
        )),
    }
}

/// x_t = E\[id_t\] for every sequence and step: `tokens` B×T, `table` E [V, p]; the result
/// holds T steps of width p. An id ≥ V is an error naming it.
pub fn gather(table: &DMatrix<f64>, tokens: &DMatrix<u32>) -> Result<Steps> {
    let rows = table.nrows();
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= rows) {
        return Err(Error::value(
            "Batch::tokens",
            format!("holds token id {id}, but the embedding table has only {rows} rows"),
        )
        .into());
    }
    let (b, t_len) = tokens.shape();
    let p = table.ncols();
    let mut x = Steps::zeros(t_len, b, p);
    for t in 0..t_len {
        for (s, col) in x.step_mut(t).chunks_exact_mut(p).enumerate() {
            let row = table.row(tokens[(s, t)] as usize);
            for (xj, &ej) in col.iter_mut().zip(row.iter()) {
                *xj = ej;
            }
        }
    }
    Ok(x)
}

/// ∇E [V, p] from the pre-activation errors `delta` (δ_t for t = 1 … T at steps 0 … T − 1,
/// width d), the input weights U [d, p] and the token ids `tokens` B×T of a table of
/// `rows` = V rows: the gradient flowing into each input, ∇x_t = δ_t U (row form), summed
/// into the row of the token it embeds,
///
/// ```text
/// ∇E[v] = Σ_{(s,t): id_{s,t} = v} U ᵀδ_{s,t} = U ᵀ S_v,     S_v = Σ_{(s,t): id_{s,t} = v} δ_{s,t}
/// ```
///
/// The per-token sums S_v come first (one pass over δ), then one product for the distinct
/// tokens of the batch only: n·d·p multiply-adds instead of T·B·d·p. Rows of tokens the
/// batch lacks are zero.
///
/// Crate-internal: it trusts its inputs (ids below `rows`, δ of T steps of B sequences
/// and width d), which an iteration has checked before it gets here.
pub(crate) fn embedding_grad(
    u: &DMatrix<f64>,
    delta: &Steps,
    tokens: &DMatrix<u32>,
    rows: usize,
) -> DMatrix<f64> {
    let (d, p) = u.shape();
    let (b, t_len) = tokens.shape();
    // Column k of `sums` is S of the k-th distinct token, in order of first appearance.
    let mut column_of = vec![usize::MAX; rows];
    let mut distinct = Vec::new();
    let mut sums: Vec<f64> = Vec::new();
    for t in 0..t_len {
        for (s, delta_s) in delta.step(t).chunks_exact(d).enumerate().take(b) {
            let v = tokens[(s, t)] as usize;
            if column_of[v] == usize::MAX {
                column_of[v] = distinct.len();
                distinct.push(v);
                sums.resize(sums.len() + d, 0.0);
            }
            let k = column_of[v];
            for (acc, &dj) in sums[k * d..(k + 1) * d].iter_mut().zip(delta_s) {
                *acc += dj;
            }
        }
    }
    let n = distinct.len();
    // G = Sᵀ U [n, p], column-major.
    let mut g = vec![0.0; n * p];
    if n > 0 {
        gemm(1.0, Mat::cols(&sums, d, n).t(), Mat::of(u), 0.0, &mut g);
    }
    let mut grad = DMatrix::zeros(rows, p);
    for (k, &v) in distinct.iter().enumerate() {
        for j in 0..p {
            grad[(v, j)] = g[j * n + k];
        }
    }
    grad
}
