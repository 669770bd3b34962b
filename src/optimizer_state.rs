//! The optimizer's state between steps, the same on both backends and in checkpoints.

use anyhow::{Context, Result};

use crate::error::Error;
use crate::model::Params;

/// Optimizer state: the step count and one or two slots per parameter
/// (Nesterov: the momentum buffer in `m`; Adam: first and second moments).
#[derive(Clone, Debug, PartialEq)]
pub struct OptState {
    /// Steps taken (Adam's bias corrections count them).
    pub step: u64,
    /// The first slot: Nesterov's momentum buffer, Adam's first moment.
    pub m: Params,
    /// The second slot: Adam's second moment.
    pub v: Params,
}

impl OptState {
    /// A fresh state for `params`: step 0, zero slots.
    pub fn new(params: &Params) -> Self {
        Self {
            step: 0,
            m: params.zeros_like(),
            v: params.zeros_like(),
        }
    }
}

impl OptState {
    /// `given` checked against `params` (same cell, same sizes, finite values), or a
    /// fresh state when `None`: what a backend's `load` starts from.
    pub fn for_params(given: Option<&OptState>, params: &Params) -> Result<Self> {
        let Some(opt) = given else {
            return Ok(Self::new(params));
        };
        for (slot, field) in [(&opt.m, "OptState::m"), (&opt.v, "OptState::v")] {
            if slot.cell != params.cell {
                return Err(Error::setting(
                    field,
                    format!(
                        "optimizer state of a {:?} cell does not match the parameters of a {:?} cell",
                        slot.cell, params.cell
                    ),
                )
                .into());
            }
            if slot.dtp.is_some() != params.dtp.is_some() {
                let has = |yes: bool| if yes { "holds" } else { "lacks" };
                return Err(Error::setting(
                    field,
                    format!(
                        "optimizer state that {} DTP's reverse layer (dtp.*) does not match \
                         parameters that {} it",
                        has(slot.dtp.is_some()),
                        has(params.dtp.is_some())
                    ),
                )
                .into());
            }
            let shape = |e: &Option<nalgebra::DMatrix<f64>>| e.as_ref().map(|e| e.shape());
            if shape(&slot.embedding) != shape(&params.embedding) {
                let what = |e: &Option<nalgebra::DMatrix<f64>>| match shape(e) {
                    Some((v, p)) => format!("an embedding table (embed.weight) [{v}, {p}]"),
                    None => "no embedding table".to_string(),
                };
                return Err(Error::setting(
                    field,
                    format!(
                        "optimizer state with {} does not match parameters with {}",
                        what(&slot.embedding),
                        what(&params.embedding)
                    ),
                )
                .into());
            }
            slot.check_dims(params.dims()).with_context(|| {
                format!("optimizer state {field} does not match the parameters")
            })?;
            for (name, m) in slot.tensors() {
                if m.iter().any(|v| !v.is_finite()) {
                    return Err(Error::value(
                        format!("{field} ({name})"),
                        "holds a value that is not finite",
                    )
                    .into());
                }
            }
        }
        Ok(opt.clone())
    }
}
