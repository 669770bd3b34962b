//! Parameters in safetensors files, under tpri's names or PyTorch's (`weight_hh_l0`, …).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nalgebra::DMatrix;

use super::{floats, read_tensors, take, write_tensors, Tensor};
use crate::model::{is_bias, CellKind, Dims, Params, GRU_PARAM_NAMES};

/// Reads parameters under either naming ([`ParamNames::detect`]): tpri's `rnn.w_hh`,
/// `rnn.w_ih`, `rnn.b`, `head.w`, `head.b` (or the GRU's `gru.*` tensors and the head), or
/// PyTorch's ([`ParamNames::Torch`]), checking they fit together.
pub fn load_params(path: &Path) -> Result<Params> {
    params_from_any_tensors(&read_tensors(path)?, path)
}

/// The parameters in tensors read from `file`, under either naming
/// ([`ParamNames::detect`]).
pub fn params_from_any_tensors(tensors: &HashMap<String, Tensor>, file: &Path) -> Result<Params> {
    match ParamNames::detect(tensors) {
        ParamNames::Tpri => params_from_tensors(tensors, "", file),
        ParamNames::Torch => params_from_torch_tensors(tensors, file),
    }
}

/// The prefix of the parameters in a checkpoint (`run_dir`); the optimizer's slots are
/// under `opt.m.` and `opt.v.`.
pub const CHECKPOINT_PARAMS_PREFIX: &str = "params.";

/// How the parameter tensors of a file are named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParamNames {
    /// tpri's own names (checkpoints, `tpri trace`): `rnn.w_hh` \[d,d\], `rnn.w_ih` \[d,p\],
    /// `rnn.b` \[d\] for the tanh RNN; `gru.w_hh` \[3d,d\], `gru.w_ih` \[3d,p\], `gru.b_ih` \[3d\],
    /// `gru.b_hh` \[3d\] for the GRU; the head `head.w` \[q,d\], `head.b` \[q\].
    #[default]
    Tpri,
    /// PyTorch's own names: the state dict of a module holding an `nn.RNN(p, d)` (tanh)
    /// as `rnn` or an `nn.GRU(p, d)` as `gru`, and an `nn.Linear(d, q)` as `head`:
    /// `rnn.weight_hh_l0` \[d,d\], `rnn.weight_ih_l0` \[d,p\], `rnn.bias_ih_l0` \[d\],
    /// `rnn.bias_hh_l0` \[d\] (GRU: `gru.*`, \[3d,…\], gates r, z, n in PyTorch's order, which
    /// is tpri's), `head.weight` \[q,d\], `head.bias` \[q\]. So
    /// `model.load_state_dict(safetensors.torch.load_file(path))` loads a file written
    /// this way into
    ///
    /// ```python
    /// class Model(nn.Module):
    ///     def __init__(self, p, d, q):
    ///         super().__init__()
    ///         self.rnn = nn.RNN(p, d, batch_first=True)  # or self.gru = nn.GRU(...)
    ///         self.head = nn.Linear(d, q)
    /// ```
    ///
    /// The tanh RNN has one bias b where PyTorch has two that it adds: b is written as
    /// `bias_ih_l0` with `bias_hh_l0` zero, and reading adds them. Reading accepts any
    /// prefix before `weight_hh_l0` (none, `rnn.`, `gru.`, `encoder.`, …) and tells the
    /// cells apart by its shape (\[d,d\] or \[3d,d\]); the head must be `head.weight` and
    /// `head.bias`. Files are f64; `load_state_dict` converts to the module's dtype.
    Torch,
}

/// PyTorch's names of the recurrent tensors of one layer (`l0`), in the order tpri's
/// `w_hh`, `w_ih`, `b` (`b_ih`), `b_hh` come.
const TORCH_RNN_NAMES: [&str; 4] = ["weight_hh_l0", "weight_ih_l0", "bias_ih_l0", "bias_hh_l0"];

impl ParamNames {
    /// `Torch` when some tensor's name ends in `weight_hh_l0`, else `Tpri`.
    pub fn detect(tensors: &HashMap<String, Tensor>) -> Self {
        if tensors.keys().any(|k| k.ends_with(TORCH_RNN_NAMES[0])) {
            ParamNames::Torch
        } else {
            ParamNames::Tpri
        }
    }
}

/// Parameters as named tensors under PyTorch's names ([`ParamNames::Torch`]).
pub fn torch_tensors(params: &Params) -> BTreeMap<String, Tensor> {
    let module = match params.cell {
        CellKind::Tanh => "rnn",
        CellKind::Gru => "gru",
    };
    // The tanh RNN's single bias is PyTorch's b_ih + b_hh, with b_hh = 0.
    let b_hh = match params.cell {
        CellKind::Tanh => DMatrix::zeros(params.b.nrows(), 1),
        CellKind::Gru => params.b_hh.clone(),
    };
    let recurrent = [
        Tensor::from_matrix(&params.w_hh),
        Tensor::from_matrix(&params.w_ih),
        Tensor::from_column(&params.b),
        Tensor::from_column(&b_hh),
    ];
    let mut out: BTreeMap<String, Tensor> = TORCH_RNN_NAMES
        .iter()
        .zip(recurrent)
        .map(|(name, t)| (format!("{module}.{name}"), t))
        .collect();
    out.insert("head.weight".into(), Tensor::from_matrix(&params.head_w));
    out.insert("head.bias".into(), Tensor::from_column(&params.head_b));
    out
}

/// The parameters in tensors named as PyTorch names them ([`ParamNames::Torch`]), read
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
    let name = |n: &str| format!("{prefix}{n}");
    let w_hh = take(tensors, &name(TORCH_RNN_NAMES[0]), file)?;
    let w_ih = take(tensors, &name(TORCH_RNN_NAMES[1]), file)?;
    let head_w = take(tensors, "head.weight", file)?;
    let (&[rows, d], &[_, p], &[q, _]) = (
        w_hh.shape.as_slice(),
        w_ih.shape.as_slice(),
        head_w.shape.as_slice(),
    ) else {
        bail!(
            "{}: {}, {} and head.weight must be matrices",
            file.display(),
            name(TORCH_RNN_NAMES[0]),
            name(TORCH_RNN_NAMES[1])
        );
    };
    let cell = match rows {
        _ if rows == d => CellKind::Tanh,
        _ if rows == 3 * d => CellKind::Gru,
        _ => bail!(
            "{}: {} has shape [{rows}, {d}]: [d, d] for nn.RNN or [3d, d] for nn.GRU",
            file.display(),
            name(TORCH_RNN_NAMES[0])
        ),
    };
    let mut params = Params::zeros_of(
        cell,
        Dims {
            input: p,
            hidden: d,
            output: q,
        },
    );
    let read = |key: &str, slot: &DMatrix<f64>| -> Result<DMatrix<f64>> {
        let shape = if slot.ncols() == 1 && key.contains("bias") {
            vec![slot.nrows()]
        } else {
            vec![slot.nrows(), slot.ncols()]
        };
        let data = floats(take(tensors, key, file)?, key, &shape)
            .with_context(|| format!("in {}", file.display()))?;
        Ok(DMatrix::from_row_slice(slot.nrows(), slot.ncols(), data))
    };
    let g = cell.gates() * d;
    let bias = DMatrix::zeros(g, 1);
    params.w_hh = read(&name(TORCH_RNN_NAMES[0]), &params.w_hh)?;
    params.w_ih = read(&name(TORCH_RNN_NAMES[1]), &params.w_ih)?;
    let b_ih = read(&name(TORCH_RNN_NAMES[2]), &bias)?;
    let b_hh = read(&name(TORCH_RNN_NAMES[3]), &bias)?;
    match cell {
        CellKind::Tanh => params.b = b_ih + b_hh,
        CellKind::Gru => {
            params.b = b_ih;
            params.b_hh = b_hh;
        }
    }
    params.head_w = read("head.weight", &params.head_w)?;
    params.head_b = read("head.bias", &params.head_b)?;
    Ok(params)
}

/// The parameters stored under `prefix` (e.g. `opt.m.`) in tensors read from `file`; a
/// `gru.w_hh` tensor makes them a GRU's.
pub fn params_from_tensors(
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    file: &Path,
) -> Result<Params> {
    let get = |name: &str| take(tensors, &format!("{prefix}{name}"), file);
    let cell = if tensors.contains_key(&format!("{prefix}{}", GRU_PARAM_NAMES[0])) {
        CellKind::Gru
    } else {
        CellKind::Tanh
    };
    let names = cell.param_names();
    let (w_hh, w_ih, head_w) = (get(names[0])?, get(names[1])?, get(names[names.len() - 2])?);
    let (Some(&d), Some(&p), Some(&q)) =
        (w_hh.shape.get(1), w_ih.shape.get(1), head_w.shape.first())
    else {
        bail!(
            "{}: {prefix}{}, {prefix}{} and {prefix}head.w must be matrices",
            file.display(),
            names[0],
            names[1]
        );
    };
    let mut params = Params::zeros_of(
        cell,
        Dims {
            input: p,
            hidden: d,
            output: q,
        },
    );
    for (name, slot) in names.iter().zip(params.tensors_mut()) {
        let shape: Vec<usize> = if is_bias(name) {
            vec![slot.nrows()]
        } else {
            vec![slot.nrows(), slot.ncols()]
        };
        let key = format!("{prefix}{name}");
        let data =
            floats(get(name)?, &key, &shape).with_context(|| format!("in {}", file.display()))?;
        *slot = DMatrix::from_row_slice(slot.nrows(), slot.ncols(), data);
    }
    Ok(params)
}

/// Writes parameters as f64 tensors under tpri's names ([`ParamNames::Tpri`]).
pub fn save_params(path: &Path, params: &Params) -> Result<()> {
    save_params_as(path, params, ParamNames::Tpri)
}

/// Writes parameters as f64 tensors under the names `names` chooses; PyTorch's get the
/// header metadata `format: pt` that `safetensors.torch` writes.
pub fn save_params_as(path: &Path, params: &Params, names: ParamNames) -> Result<()> {
    match names {
        ParamNames::Tpri => write_tensors(path, &params_tensors(params, ""), None),
        ParamNames::Torch => write_tensors(
            path,
            &torch_tensors(params),
            Some(HashMap::from([("format".to_string(), "pt".to_string())])),
        ),
    }
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
