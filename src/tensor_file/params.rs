//! Parameters in safetensors files under tpri's names (PyTorch's: `torch`; either:
//! `naming`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use nalgebra::DMatrix;

use super::{floats, take, write_tensors, Tensor, TensorData};
use crate::dtp::{ReverseLayer, REVERSE_NAMES};
use crate::error::{shape_of, Error};
use crate::model::{
    is_bias, CellKind, Dims, Params, EMBEDDING_NAME, GRU_PARAM_NAMES, LEGACY_RNN_BIAS, PARAM_NAMES,
};

/// The prefix of the parameters in a checkpoint (`run_dir`); the optimizer's slots are
/// under `opt.m.` and `opt.v.`.
pub const CHECKPOINT_PARAMS_PREFIX: &str = "params.";

/// The parameters stored under `prefix` (e.g. `opt.m.`) in tensors read from `file`; a
/// `gru.*` tensor makes them a GRU's.
///
/// A tanh RNN's single bias `rnn.b` (files of earlier versions) reads as `rnn.b_ih` with
/// `rnn.b_hh` zero.
///
/// Refused, with an error naming the tensor: `rnn.*` and `gru.*` tensors together, a
/// missing tensor, any other tensor under `prefix` (e.g. `rnn.b` beside `rnn.b_ih`), a
/// size of 0, and shapes that do not fit together — all checked on the shapes alone,
/// before anything is allocated for them.
pub fn params_from_tensors(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    file: &Path,
) -> Result<Params> {
    let key = |name: &str| format!("{prefix}{name}");
    let has_any = |names: &[&str]| names.iter().any(|n| tensors.contains_key(&key(n)));
    let split;
    let tensors = match (has_any(&[LEGACY_RNN_BIAS]), has_any(&PARAM_NAMES[2..4])) {
        (true, false) => {
            split = split_legacy_bias(tensors, &key(LEGACY_RNN_BIAS), prefix);
            &split
        }
        (true, true) => {
            return Err(Error::format(
                file,
                format!(
                    "holds {prefix}{LEGACY_RNN_BIAS} beside {prefix}{} or {prefix}{}: the \
                     tanh RNN's bias is either the single {LEGACY_RNN_BIAS} of earlier \
                     versions or the two {} and {}",
                    PARAM_NAMES[2], PARAM_NAMES[3], PARAM_NAMES[2], PARAM_NAMES[3]
                ),
            )
            .into())
        }
        (false, _) => tensors,
    };
    let has_any = |names: &[&str]| names.iter().any(|n| tensors.contains_key(&key(n)));
    // The head's names are shared; the recurrent ones tell the cells apart.
    let (rnn, gru) = (has_any(&PARAM_NAMES[..4]), has_any(&GRU_PARAM_NAMES[..4]));
    if rnn && gru {
        return Err(Error::format(
            file,
            format!(
                "holds both {prefix}rnn.* and {prefix}gru.* tensors; a file holds the \
                 parameters of one cell"
            ),
        )
        .into());
    }
    let cell = if gru { CellKind::Gru } else { CellKind::Tanh };
    // DTP's reverse layer: both of its tensors, or neither.
    let [reverse, has_b] = REVERSE_NAMES.map(|n| tensors.contains_key(&key(n)));
    if reverse != has_b {
        let [w, b] = REVERSE_NAMES.map(key);
        let (there, missing) = if reverse { (w, b) } else { (b, w) };
        let problem = format!("holds {there} without {missing}: DTP's reverse layer has both");
        return Err(Error::format(file, problem).into());
    }
    let reverse_names = if reverse { &REVERSE_NAMES[..] } else { &[] };
    // The language model's trained embedding table, where there is one.
    let embedding = tensors.contains_key(&key(EMBEDDING_NAME));
    let embedding_names = if embedding {
        &[EMBEDDING_NAME][..]
    } else {
        &[]
    };
    let names = [cell.param_names(), embedding_names, reverse_names].concat();
    let stored = names
        .iter()
        .map(|n| take(tensors, &key(n), file))
        .collect::<Result<Vec<_>>>()?;
    reject_unknown(tensors, prefix, &names, file)?;
    let dim = |i: usize, axis: usize| stored[i].shape.get(axis).copied();
    let head = cell.param_names().len() - 2;
    let (Some(d), Some(p), Some(q)) = (dim(0, 1), dim(1, 1), dim(head, 0)) else {
        return Err(Error::format(
            file,
            format!(
                "{} {:?}, {} {:?} and {} {:?} must be matrices",
                key(names[0]),
                stored[0].shape,
                key(names[1]),
                stored[1].shape,
                key(names[head]),
                stored[head].shape
            ),
        )
        .into());
    };
    let dims = Dims {
        input: p,
        hidden: d,
        output: q,
    };
    let expected = check_shapes(cell, dims, &names, &stored, &|i| key(names[i]), file)?;
    // Empty tensors of the right kinds, each replaced by the file's below.
    let mut params = Params::zeroed(
        cell,
        Dims {
            input: 0,
            hidden: 0,
            output: 0,
        },
    );
    params.dtp = reverse.then(|| ReverseLayer::zeros(0));
    params.embedding = embedding.then(|| DMatrix::zeros(0, 0));
    for ((slot, t), (i, (rows, cols))) in params
        .tensors_mut()
        .into_iter()
        .zip(&stored)
        .zip(expected.into_iter().enumerate())
    {
        let name = key(names[i]);
        let shape = if is_bias(&name) {
            vec![rows]
        } else {
            vec![rows, cols]
        };
        let data = floats(t, &name, &shape).with_context(|| format!("in {}", file.display()))?;
        *slot = DMatrix::from_row_slice(rows, cols, data);
    }
    Ok(params)
}

/// `tensors` with the single bias at `legacy` renamed `{prefix}rnn.b_ih` and a zero
/// `{prefix}rnn.b_hh` of its shape beside it.
fn split_legacy_bias(
    tensors: &HashMap<String, Tensor>,
    legacy: &str,
    prefix: &str,
) -> HashMap<String, Tensor> {
    let mut out = tensors.clone();
    if let Some(b) = out.remove(legacy) {
        let zero = Tensor {
            shape: b.shape.clone(),
            data: match &b.data {
                TensorData::Float(v) => TensorData::Float(vec![0.0; v.len()]),
                TensorData::Int(v) => TensorData::Int(vec![0; v.len()]),
            },
        };
        out.insert(format!("{prefix}{}", PARAM_NAMES[2]), b);
        out.insert(format!("{prefix}{}", PARAM_NAMES[3]), zero);
    }
    out
}

/// Checks, from the stored shapes alone, that `d`, `p` and `q` are at least 1 and that
/// every tensor (`stored`, with the names `names`: `cell.param_names()`, then the
/// embedding's and the reverse layer's where there are such; in messages named by `name`)
/// has the shape they give (the embedding table: [V, p] with V ≥ 1 its own); returns
/// those shapes (biases as columns).
fn check_shapes(
    cell: CellKind,
    dims: Dims,
    names: &[&str],
    stored: &[&Tensor],
    name: &dyn Fn(usize) -> String,
    file: &Path,
) -> Result<Vec<(usize, usize)>> {
    let head = cell.param_names().len() - 2;
    for (i, size, what) in [
        (0, dims.hidden, "column (the hidden size d)"),
        (1, dims.input, "column (the input size p)"),
        (head, dims.output, "row (the output size q)"),
    ] {
        if size == 0 {
            return Err(Error::shape(
                format!("tensor {} in {}", name(i), file.display()),
                shape_of(&stored[i].shape),
                format!("at least one {what}"),
            )
            .into());
        }
    }
    let mut expected = Params::shapes(cell, dims);
    let cell_len = expected.len();
    for (i, n) in names.iter().enumerate().skip(cell_len) {
        if *n == EMBEDDING_NAME {
            let rows = stored[i].shape.first().copied().unwrap_or(0);
            expected.push((rows.max(1), dims.input));
        } else if *n == REVERSE_NAMES[0] {
            expected.extend(ReverseLayer::shapes(dims.hidden));
        }
    }
    for (i, (t, &(rows, cols))) in stored.iter().zip(&expected).enumerate() {
        let want = if is_bias(names[i]) {
            vec![rows]
        } else {
            vec![rows, cols]
        };
        if t.shape != want {
            return Err(Error::shape(
                format!("tensor {} in {}", name(i), file.display()),
                shape_of(&t.shape),
                format!(
                    "{} for p = {}, d = {}, q = {}{}",
                    shape_of(&want),
                    dims.input,
                    dims.hidden,
                    dims.output,
                    if names[i] == EMBEDDING_NAME {
                        " (the embedding table: V ≥ 1 rows, one per word, and p columns)"
                    } else {
                        ""
                    }
                ),
            )
            .into());
        }
    }
    Ok(expected)
}

/// Refuses tensors under `prefix` that are not among `known` (names after the prefix).
pub(super) fn reject_unknown(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    known: &[&str],
    file: &Path,
) -> Result<()> {
    let mut unknown: Vec<&str> = tensors
        .keys()
        .filter(|k| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| !known.contains(&rest))
        })
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    let known: Vec<String> = known.iter().map(|n| format!("{prefix}{n}")).collect();
    Err(Error::format(
        file,
        format!(
            "unknown tensor{} {}: the parameters are exactly {}",
            if unknown.len() > 1 { "s" } else { "" },
            unknown.join(", "),
            known.join(", ")
        ),
    )
    .into())
}

/// Writes parameters as f64 tensors under tpri's names
/// ([`ParamNames::Tpri`](super::ParamNames::Tpri)).
pub fn save_params(path: &Path, params: &Params) -> Result<()> {
    write_tensors(path, &params_tensors(params, ""), None)
}

/// Parameters (or gradients) as named tensors, each name prefixed by `prefix`.
pub fn params_tensors(params: &Params, prefix: &str) -> BTreeMap<String, Tensor> {
    params
        .tensors()
        .into_iter()
        .map(|(name, m)| {
            let t = if is_bias(name) {
                Tensor::from_column(m)
            } else {
                Tensor::from_matrix(m)
            };
            (format!("{prefix}{name}"), t)
        })
        .collect()
}
