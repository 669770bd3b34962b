//! Safetensors files: parameters, batches and traces, the exchange format with PyTorch.
//! Every file is written atomically, so an interrupted write never clobbers a good file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nalgebra::DMatrix;
use safetensors::{Dtype, SafeTensors};

mod naming;
mod params;
mod torch;

pub use naming::{load_params, params_from_any_tensors, save_params_as, ParamNames};
pub use params::{params_from_tensors, params_tensors, save_params, CHECKPOINT_PARAMS_PREFIX};
pub use torch::{params_from_torch_tensors, torch_tensors};

use crate::backend::Trace;
use crate::error::{shape_of, Error};
use crate::model::{Dims, GRU_GATES};
use crate::tasks::{Batch, Targets};

/// A tensor read from a file, widened to f64 (floats) or i64 (integers).
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Floating-point values (F64, F32, F16, BF16 in the file).
    Float(Vec<f64>),
    /// Integer values (I64, I32, U8 in the file).
    Int(Vec<i64>),
}

/// A named tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Size of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// A float tensor.
    pub fn float(shape: Vec<usize>, data: Vec<f64>) -> Self {
        Self {
            shape,
            data: TensorData::Float(data),
        }
    }

    /// A row-major 2-D tensor from a matrix.
    pub fn from_matrix(m: &DMatrix<f64>) -> Self {
        Self::float(
            vec![m.nrows(), m.ncols()],
            m.transpose().as_slice().to_vec(),
        )
    }

    /// A 1-D tensor from a column matrix.
    pub fn from_column(m: &DMatrix<f64>) -> Self {
        Self::float(vec![m.len()], m.as_slice().to_vec())
    }

    /// A [len, rows, cols] tensor from a sequence of equally shaped matrices.
    pub fn from_stack(ms: &[DMatrix<f64>]) -> Self {
        let (r, c) = ms.first().map_or((0, 0), |m| m.shape());
        let data = ms
            .iter()
            .flat_map(|m| m.transpose().as_slice().to_vec())
            .collect();
        Self::float(vec![ms.len(), r, c], data)
    }
}

/// Reads every tensor of a safetensors file (F64, F32, F16, BF16, I64, I32, U8).
///
/// The path must be a regular file (a directory, FIFO or device is named as such,
/// `files::open_regular`); a header naming a tensor twice is an error (the safetensors
/// crate would keep one of them silently).
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let bytes = crate::files::read_regular(path, "tensor file")?;
    let invalid = |e: &dyn std::fmt::Display| {
        Error::format(path, format!("not a valid safetensors file: {e}"))
    };
    if let Some(name) = duplicate_key(&bytes) {
        return Err(invalid(&format!("its header names tensor {name:?} twice")).into());
    }
    let file = SafeTensors::deserialize(&bytes).map_err(|e| invalid(&e))?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F64 => TensorData::Float(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::F32 => TensorData::Float(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()).into())
                    .collect(),
            ),
            Dtype::F16 => TensorData::Float(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).into())
                    .collect(),
            ),
            Dtype::BF16 => TensorData::Float(
                raw.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).into())
                    .collect(),
            ),
            Dtype::I64 => TensorData::Int(
                raw.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::I32 => TensorData::Int(
                raw.chunks_exact(4)
                    .map(|c| i32::from_le_bytes(c.try_into().unwrap()).into())
                    .collect(),
            ),
            Dtype::U8 => TensorData::Int(raw.iter().map(|&b| b.into()).collect()),
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor {name} has unsupported dtype {other:?}"),
                )
                .into())
            }
        };
        out.insert(
            name,
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// The first key that the JSON header of safetensors `bytes` names twice, if any (a header
/// that cannot be read is left to the safetensors crate to report).
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstDuplicate;
    impl<'de> Visitor<'de> for FirstDuplicate {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Ok(Some(key));
                }
            }
            Ok(None)
        }
    }
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    let header = bytes.get(8..end)?;
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(FirstDuplicate).ok().flatten()
}

/// Writes tensors as f64 (floats) or i64 (integers), with string metadata, atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| match &t.data {
            TensorData::Float(v) => (
                name.clone(),
                Dtype::F64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            TensorData::Int(v) => (
                name.clone(),
                Dtype::I64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views = owned
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            Ok((
                name.as_str(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, metadata)?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn take<'a>(
    tensors: &'a HashMap<String, Tensor>,
    name: &str,
    file: &Path,
) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| Error::format(file, format!("the file has no tensor {name}")).into())
}

pub(crate) fn floats<'a>(t: &'a Tensor, name: &str, shape: &[usize]) -> Result<&'a [f64]> {
    if t.shape != shape {
        return Err(Error::shape(
            format!("tensor {name}"),
            shape_of(&t.shape),
            shape_of(shape),
        )
        .into());
    }
    match &t.data {
        TensorData::Float(v) => Ok(v),
        TensorData::Int(_) => bail!("tensor {name} must hold floats, found integers"),
    }
}

/// Reads a batch file (`x` \[B,T,p\]; `y` \[B\] integer labels, \[B,q\] floats, or
/// \[B,T\] integer labels, one per step; for the language model optionally its token ids
/// `tokens` \[B,T\], what a trained embedding gathers from) for `dims`.
///
/// Refused, naming the tensor: other tensors than `x`, `y` and `tokens`, `tokens` not
/// [B, T] integers in [0, 2³²), a size of 0 (B, T or p),
/// an `x` whose p is not `dims.input`, a `y` of another number of sequences, negative
/// labels. The values themselves (NaN, labels out of range) are the backends' to check.
pub fn load_batch(path: &Path, dims: Dims) -> Result<Batch> {
    let tensors = read_tensors(path)?;
    let x = take(&tensors, "x", path)?;
    let y = take(&tensors, "y", path)?;
    let mut others: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "x" | "y" | "tokens"))
        .collect();
    if !others.is_empty() {
        others.sort_unstable();
        let problem = format!(
            "unknown tensor{} {}: a batch file holds x and y, and for the language model its \
             token ids tokens",
            if others.len() > 1 { "s" } else { "" },
            others.join(", ")
        );
        return Err(Error::format(path, problem).into());
    }
    let in_file = |name: &str| format!("tensor {name} in {}", path.display());
    let &[b, t_len, p] = x.shape.as_slice() else {
        return Err(Error::shape(in_file("x"), shape_of(&x.shape), "[B, T, p]").into());
    };
    if b == 0 || t_len == 0 || p == 0 {
        return Err(Error::shape(
            in_file("x"),
            shape_of(&x.shape),
            "[B, T, p] with B, T and p at least 1",
        )
        .into());
    }
    if p != dims.input {
        bail!(
            "tensor x in {} has p = {p} inputs per step, but rnn.w_ih expects {} (expected [B, T, {}])",
            path.display(),
            dims.input,
            dims.input
        );
    }
    let data = floats(x, "x", &[b, t_len, p])?;
    let steps = (0..t_len)
        .map(|t| DMatrix::from_fn(b, p, |i, j| data[(i * t_len + t) * p + j]))
        .collect();
    let kind = if matches!(y.data, TensorData::Int(_)) {
        "integers"
    } else {
        "floats"
    };
    let targets = match (&y.data, y.shape.as_slice()) {
        (TensorData::Int(labels), &[n]) if n == b => {
            let labels = labels
                .iter()
                .map(|&l| {
                    usize::try_from(l).map_err(|_| {
                        Error::value(in_file("y"), format!("holds a negative label {l}"))
                    })
                })
                .collect::<Result<_, _>>()?;
            Targets::Labels(labels)
        }
        (TensorData::Float(v), &[n, q]) if n == b && q > 0 => {
            Targets::Values(DMatrix::from_row_slice(n, q, v))
        }
        (TensorData::Int(labels), &[n, steps]) if n == b && steps == t_len => {
            let labels = labels
                .iter()
                .map(|&l| {
                    usize::try_from(l).map_err(|_| {
                        Error::value(in_file("y"), format!("holds a negative label {l}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Targets::StepLabels(DMatrix::from_row_slice(n, steps, &labels))
        }
        _ => {
            return Err(Error::shape(
                in_file("y"),
                format!("{} ({kind})", shape_of(&y.shape)),
                format!(
                    "[{b}] integer labels, [{b}, q] floats (q ≥ 1), or [{b}, {t_len}] integer \
                     labels (one per step), one row per sequence of x"
                ),
            )
            .into())
        }
    };
    let tokens = match tensors.get("tokens") {
        Some(t) => Some(batch_tokens(t, b, t_len, &in_file("tokens"))?),
        None => None,
    };
    Ok(Batch {
        x: steps,
        y: targets,
        tokens,
    })
}

/// The token ids of a batch file: integers in [0, 2³²) of shape [B, T].
fn batch_tokens(t: &Tensor, b: usize, t_len: usize, name: &str) -> Result<DMatrix<u32>> {
    let (TensorData::Int(ids), true) = (&t.data, t.shape == [b, t_len]) else {
        return Err(Error::shape(
            name,
            shape_of(&t.shape),
            format!("[{b}, {t_len}] integer token ids, one per sequence and step of x"),
        )
        .into());
    };
    let ids = ids
        .iter()
        .map(|&id| {
            u32::try_from(id)
                .map_err(|_| Error::value(name, format!("holds token id {id}, outside [0, 2^32)")))
        })
        .collect::<Result<Vec<u32>, _>>()?;
    Ok(DMatrix::from_row_slice(b, t_len, &ids))
}

/// Writes a batch in the layout `load_batch` reads.
pub fn save_batch(path: &Path, batch: &Batch) -> Result<()> {
    let (b, t_len, p) = (batch.batch_size(), batch.seq_len(), batch.input_size());
    let mut x = vec![0.0; b * t_len * p];
    for (t, x_t) in batch.x.iter().enumerate() {
        for i in 0..b {
            for j in 0..p {
                x[(i * t_len + t) * p + j] = x_t[(i, j)];
            }
        }
    }
    let y = match &batch.y {
        Targets::Labels(l) => Tensor {
            shape: vec![l.len()],
            data: TensorData::Int(l.iter().map(|&c| c as i64).collect()),
        },
        Targets::Values(v) => Tensor::from_matrix(v),
        Targets::StepLabels(l) => Tensor {
            shape: vec![l.nrows(), l.ncols()],
            data: TensorData::Int(l.transpose().iter().map(|&c| c as i64).collect()),
        },
    };
    let mut tensors = BTreeMap::from([
        ("x".to_string(), Tensor::float(vec![b, t_len, p], x)),
        ("y".to_string(), y),
    ]);
    if let Some(ids) = &batch.tokens {
        let data = ids.transpose().iter().map(|&id| i64::from(id)).collect();
        let shape = vec![ids.nrows(), ids.ncols()];
        tensors.insert(
            "tokens".into(),
            Tensor {
                shape,
                data: TensorData::Int(data),
            },
        );
    }
    write_tensors(path, &tensors, None)
}

/// Writes every intermediate of `trace` (see `tpri trace --help` for the names).
pub fn save_trace(path: &Path, trace: &Trace, metadata: HashMap<String, String>) -> Result<()> {
    let mut tensors = params_tensors(&trace.grads, "grad.");
    tensors.insert("h".into(), Tensor::from_stack(&trace.h));
    tensors.insert("loss".into(), Tensor::float(vec![1], vec![trace.loss]));
    if let Some(v) = &trace.v {
        tensors.insert("v".into(), Tensor::from_stack(v));
    }
    if let Some(p) = &trace.p_inv {
        tensors.insert("p_inv".into(), Tensor::from_matrix(p));
    }
    for (p, gate) in trace.p_gates.iter().flatten().zip(GRU_GATES) {
        tensors.insert(format!("p_inv.{gate}"), Tensor::from_matrix(p));
    }
    if !trace.step_losses.is_empty() {
        let n = trace.step_losses.len();
        tensors.insert(
            "step_losses".into(),
            Tensor::float(vec![n], trace.step_losses.clone()),
        );
    }
    write_tensors(path, &tensors, Some(metadata))
}
