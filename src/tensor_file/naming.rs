//! Parameter files under either naming, tpri's or PyTorch's ([`ParamNames`]): which one a
//! file uses, and reading and writing under either.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use super::params::{params_from_tensors, params_tensors};
use super::torch::{params_from_torch_tensors, torch_tensors, TORCH_RNN_NAMES};
use super::{read_tensors, write_tensors, Tensor};
use crate::model::Params;

/// Reads parameters under either naming ([`ParamNames::detect`]): tpri's `rnn.w_hh`,
/// `rnn.w_ih`, `rnn.b_ih`, `rnn.b_hh`, `head.w`, `head.b` (or the GRU's `gru.*` tensors and the head), or
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

/// How the parameter tensors of a file are named.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParamNames {
    /// tpri's own names (checkpoints, `tpri trace`): `rnn.w_hh` \[d,d\], `rnn.w_ih` \[d,p\],
    /// `rnn.b_ih` \[d\], `rnn.b_hh` \[d\] for the tanh RNN (files with the single bias
    /// `rnn.b` of earlier versions read as `rnn.b_ih`, with `rnn.b_hh` zero); `gru.w_hh` \[3d,d\], `gru.w_ih` \[3d,p\], `gru.b_ih` \[3d\],
    /// `gru.b_hh` \[3d\] for the GRU; the head `head.w` \[q,d\], `head.b` \[q\]; a trained
    /// embedding table `embed.weight` \[V,p\] (docs/ALGORITHM.md §13) where there is one.
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
    /// Both cells have PyTorch's two biases, so the names map one to one. DTP's reverse
    /// layer goes by the published code's names, `reverse_Vhh` \[d,d\] and `reverse_ch`
    /// \[d\]. Reading accepts any
    /// prefix before `weight_hh_l0` (none, `rnn.`, `gru.`, `encoder.`, …) and tells the
    /// cells apart by its shape (\[d,d\] or \[3d,d\]); the head must be `head.weight` and
    /// `head.bias`. A trained embedding table is `embed.weight` \[V,p\], an `nn.Embedding(V, p)`
    /// held as `embed`. Files are f64; `load_state_dict` converts to the module's dtype.
    Torch,
}

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
