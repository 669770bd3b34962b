//! Parameters under PyTorch's names ([`ParamNames::Torch`](super::ParamNames::Torch)): the state dict of a module
//! holding `nn.RNN` or `nn.GRU`, `nn.Linear` and, where trained, `nn.Embedding`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nalgebra::DMatrix;

use super::params::{params_from_tensors, params_tensors, reject_unknown};
use super::{floats, take, Tensor};
use crate::dtp::REVERSE_NAMES;
use crate::error::{shape_of, Error};
use crate::model::{CellKind, Params, EMBEDDING_NAME};

/// PyTorch's names of the recurrent tensors of one layer (`l0`), in the order tpri's
/// `w_hh`, `w_ih`, `b` (`b_ih`), `b_hh` come.
pub(super) const TORCH_RNN_NAMES: [&str; 4] =
    ["weight_hh_l0", "weight_ih_l0", "bias_ih_l0", "bias_hh_l0"];

/// Parameters as named tensors under PyTorch's names ([`ParamNames::Torch`](super::ParamNames::Torch)).
pub fn torch_tensors(params: &Params) -> BTreeMap<String, Tensor> {
    let module = match params.cell {
        CellKind::Tanh => "rnn",
        CellKind::Gru => "gru",
    };
    let recurrent = [
        Tensor::from_matrix(&params.w_hh),
        Tensor::from_matrix(&params.w_ih),
        Tensor::from_column(&params.b),
        Tensor::from_column(&params.b_hh),
    ];
    let mut out: BTreeMap<String, Tensor> = TORCH_RNN_NAMES
        .iter()
        .zip(recurrent)
        .map(|(name, t)| (format!("{module}.{name}"), t))
        .collect();
    out.insert("head.weight".into(), Tensor::from_matrix(&params.head_w));
    out.insert("head.bias".into(), Tensor::from_column(&params.head_b));
    if let Some(e) = &params.embedding {
        out.insert(EMBEDDING_NAME.into(), Tensor::from_matrix(e));
    }
    if let Some(r) = &params.dtp {
        out.insert(TORCH_REVERSE_NAMES[0].into(), Tensor::from_matrix(&r.w_rev));
        out.insert(TORCH_REVERSE_NAMES[1].into(), Tensor::from_column(&r.b_rev));
    }
    out
}

/// The published code's names of DTP's reverse layer (`reverse_Vhh`, `reverse_ch`, at the
/// top of its RNN module), in `dtp::REVERSE_NAMES` order.
const TORCH_REVERSE_NAMES: [&str; 2] = ["reverse_Vhh", "reverse_ch"];

/// The parameters in tensors named as PyTorch names them ([`ParamNames::Torch`](super::ParamNames::Torch)), read
/// from `file` (named in errors).
pub fn params_from_torch_tensors(tensors: &HashMap<String, Tensor>, file: &Path) -> Result<Params> {
    let mut prefixes: Vec<&str> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(TORCH_RNN_NAMES[0]))
        .collect();
    prefixes.sort_unstable();
    let prefix = match prefixes.as_slice() {
        [one] => *one,
        [] => bail!("{} has no tensor named *weight_hh_l0", file.display()),
        many => bail!(
            "{} holds several recurrent layers ({}); tpri reads one",
            file.display(),
            many.iter()
                .map(|p| format!("{p}weight_hh_l0"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let keys: Vec<String> = TORCH_RNN_NAMES
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .chain(["head.weight".to_string(), "head.bias".to_string()])
        .collect();
    let stored = keys
        .iter()
        .map(|k| take(tensors, k, file))
        .collect::<Result<Vec<_>>>()?;
    let mut known: Vec<&str> = keys.iter().map(String::as_str).collect();
    known.extend(TORCH_REVERSE_NAMES);
    known.push(EMBEDDING_NAME);
    reject_unknown(tensors, "", &known, file)?;
    let (&[rows, d], &[_, p], &[q, _]) = (
        stored[0].shape.as_slice(),
        stored[1].shape.as_slice(),
        stored[4].shape.as_slice(),
    ) else {
        bail!(
            "{}: {}, {} and head.weight must be matrices",
            file.display(),
            keys[0],
            keys[1]
        );
    };
    for (i, size, what) in [
        (0, d, "column (the hidden size d)"),
        (1, p, "column (the input size p)"),
        (4, q, "row (the output size q)"),
    ] {
        if size == 0 {
            return Err(Error::shape(
                format!("tensor {} in {}", keys[i], file.display()),
                shape_of(&stored[i].shape),
                format!("at least one {what}"),
            )
            .into());
        }
    }
    let cell = match rows {
        _ if rows == d => CellKind::Tanh,
        _ if Some(rows) == d.checked_mul(3) => CellKind::Gru,
        _ => bail!(
            "{}: {} has shape [{rows}, {d}]: [d, d] for nn.RNN or [3d, d] for nn.GRU",
            file.display(),
            keys[0]
        ),
    };
    let g = rows;
    let expected = [
        vec![g, d],
        vec![g, p],
        vec![g],
        vec![g],
        vec![q, d],
        vec![q],
    ];
    for ((t, want), key) in stored.iter().zip(&expected).zip(&keys) {
        if &t.shape != want {
            return Err(Error::shape(
                format!("tensor {key} in {}", file.display()),
                shape_of(&t.shape),
                format!("{} for p = {p}, d = {d}, q = {q}", shape_of(want)),
            )
            .into());
        }
    }
    let mut read = stored
        .iter()
        .zip(&expected)
        .zip(&keys)
        .map(|((t, shape), key)| {
            let data = floats(t, key, shape).with_context(|| format!("in {}", file.display()))?;
            let cols = shape.get(1).copied().unwrap_or(1);
            Ok(DMatrix::from_row_slice(shape[0], cols, data))
        });
    let mut next = || -> Result<DMatrix<f64>> { read.next().expect("six tensors") };
    let (w_hh, w_ih, b, b_hh, head_w, head_b) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    let mut params = Params {
        cell,
        w_hh,
        w_ih,
        b,
        b_hh,
        head_w,
        head_b,
        dtp: None,
        embedding: None,
    };
    // The embedding's name is the same under both namings.
    let renamed: HashMap<String, Tensor> = TORCH_REVERSE_NAMES
        .iter()
        .zip(REVERSE_NAMES)
        .chain([(&EMBEDDING_NAME, EMBEDDING_NAME)])
        .filter_map(|(torch, ours)| Some((ours.to_string(), tensors.get(*torch)?.clone())))
        .collect();
    if !renamed.is_empty() {
        // Read as tpri's names, checked against the cell's sizes by the same code.
        let mut all = params_tensors(&params, "");
        all.extend(renamed);
        let all = all.into_iter().collect();
        params = params_from_tensors(&all, "", file)?;
    }
    Ok(params)
}
