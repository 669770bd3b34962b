//! Parameters under PyTorch's names (`ParamNames::Torch`): ours → PyTorch's → ours is
//! exact for both cells, the tanh RNN's two PyTorch biases are added when read, and, where
//! python3 has torch, PyTorch's own nn.RNN / nn.GRU and nn.Linear load the file and compute
//! what the f64 reference computes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tpri::nalgebra::DMatrix;
use tpri::prelude::*;
use tpri::tensor_file::{
    load_params, read_tensors, save_batch, save_params, save_params_as, write_tensors, ParamNames,
    Tensor, TensorData,
};

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tpri-torch-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DIMS: Dims = Dims {
    input: 3,
    hidden: 5,
    output: 2,
};

/// Parameters of `cell` with every tensor, biases included, random.
fn random_params(cell: CellKind, seed: u64) -> Params {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = Params::init_of(cell, DIMS, seed).unwrap();
    for m in params.tensors_mut() {
        *m = DMatrix::from_fn(m.nrows(), m.ncols(), |_, _| rng.random_range(-0.8..0.8));
    }
    params
}

fn shapes(tensors: &HashMap<String, Tensor>) -> BTreeMap<String, Vec<usize>> {
    tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect()
}

fn floats(t: &Tensor) -> &[f64] {
    match &t.data {
        TensorData::Float(v) => v,
        TensorData::Int(_) => panic!("integers"),
    }
}

#[test]
fn ours_to_torch_names_to_ours_is_exact() {
    let dir = TempDir::new("round-trip");
    let (p, d, q) = (DIMS.input, DIMS.hidden, DIMS.output);
    for (cell, module, g) in [(CellKind::Tanh, "rnn", 1), (CellKind::Gru, "gru", 3)] {
        let params = random_params(cell, 1);
        let torch = dir.0.join(format!("{module}-torch.safetensors"));
        save_params_as(&torch, &params, ParamNames::Torch).unwrap();
        let tensors = read_tensors(&torch).unwrap();
        let want: BTreeMap<String, Vec<usize>> = [
            (format!("{module}.weight_hh_l0"), vec![g * d, d]),
            (format!("{module}.weight_ih_l0"), vec![g * d, p]),
            (format!("{module}.bias_ih_l0"), vec![g * d]),
            (format!("{module}.bias_hh_l0"), vec![g * d]),
            ("head.weight".to_string(), vec![q, d]),
            ("head.bias".to_string(), vec![q]),
        ]
        .into();
        assert_eq!(shapes(&tensors), want, "{cell:?}");
        assert_eq!(ParamNames::detect(&tensors), ParamNames::Torch);
        // Both cells have PyTorch's two biases, one to one.
        let b_hh = floats(&tensors[&format!("{module}.bias_hh_l0")]);
        assert_eq!(b_hh, params.b_hh.as_slice());
        // Row-major like PyTorch: element [i, j] of weight_hh_l0 is W[i, j].
        let w = floats(&tensors[&format!("{module}.weight_hh_l0")]);
        assert_eq!(w[d + 2], params.w_hh[(1, 2)]);
        let back = load_params(&torch).unwrap();
        assert_eq!(back, params, "{cell:?}");
        // And on to tpri's names and back again.
        let ours = dir.0.join(format!("{module}-tpri.safetensors"));
        save_params(&ours, &back).unwrap();
        assert_eq!(
            ParamNames::detect(&read_tensors(&ours).unwrap()),
            ParamNames::Tpri
        );
        assert_eq!(load_params(&ours).unwrap(), params, "{cell:?}");
    }
}

#[test]
fn torch_biases_stay_apart_for_the_tanh_rnn_under_any_prefix() {
    let dir = TempDir::new("biases");
    let params = random_params(CellKind::Tanh, 2);
    let d = DIMS.hidden;
    // A bare nn.RNN state dict (no module prefix) next to the head, with both biases set.
    let b_ih: Vec<f64> = (0..d).map(|i| 0.1 * i as f64).collect();
    let b_hh: Vec<f64> = (0..d).map(|i| 1.0 - 0.3 * i as f64).collect();
    let tensors = BTreeMap::from([
        (
            "weight_hh_l0".to_string(),
            Tensor::from_matrix(&params.w_hh),
        ),
        (
            "weight_ih_l0".to_string(),
            Tensor::from_matrix(&params.w_ih),
        ),
        (
            "bias_ih_l0".to_string(),
            Tensor::float(vec![d], b_ih.clone()),
        ),
        (
            "bias_hh_l0".to_string(),
            Tensor::float(vec![d], b_hh.clone()),
        ),
        (
            "head.weight".to_string(),
            Tensor::from_matrix(&params.head_w),
        ),
        ("head.bias".to_string(), Tensor::from_column(&params.head_b)),
    ]);
    let path = dir.0.join("bare.safetensors");
    write_tensors(&path, &tensors, None).unwrap();
    let read = load_params(&path).unwrap();
    assert_eq!(read.cell, CellKind::Tanh);
    assert_eq!(read.b.as_slice(), b_ih.as_slice());
    assert_eq!(read.b_hh.as_slice(), b_hh.as_slice());
    assert_eq!(read.w_hh, params.w_hh);
    assert_eq!(read.head_b, params.head_b);

    // A GRU saved under another module name is still a GRU: the shape says so.
    let gru = random_params(CellKind::Gru, 3);
    let renamed: BTreeMap<String, Tensor> = tpri::tensor_file::torch_tensors(&gru)
        .into_iter()
        .map(|(k, t)| (k.replace("gru.", "encoder."), t))
        .collect();
    let path = dir.0.join("encoder.safetensors");
    write_tensors(&path, &renamed, None).unwrap();
    assert_eq!(load_params(&path).unwrap(), gru);
}

#[test]
fn malformed_torch_files_are_clear_errors() {
    let dir = TempDir::new("errors");
    let params = random_params(CellKind::Tanh, 4);
    let good = tpri::tensor_file::torch_tensors(&params);
    let cases: Vec<(BTreeMap<String, Tensor>, &str)> = vec![
        (
            {
                let mut t = good.clone();
                t.insert(
                    "rnn.weight_hh_l0".into(),
                    Tensor::float(vec![5, 4], vec![0.0; 20]),
                );
                t
            },
            "[d, d] for nn.RNN or [3d, d] for nn.GRU",
        ),
        (
            {
                let mut t = good.clone();
                t.insert(
                    "rnn2.weight_hh_l0".into(),
                    Tensor::from_matrix(&params.w_hh),
                );
                t
            },
            "several recurrent layers",
        ),
        (
            {
                let mut t = good.clone();
                t.remove("head.bias");
                t
            },
            "head.bias",
        ),
        (
            {
                let mut t = good.clone();
                t.insert(
                    "rnn.bias_hh_l0".into(),
                    Tensor::float(vec![4], vec![0.0; 4]),
                );
                t
            },
            "rnn.bias_hh_l0",
        ),
    ];
    for (i, (tensors, want)) in cases.into_iter().enumerate() {
        let path = dir.0.join(format!("bad{i}.safetensors"));
        write_tensors(&path, &tensors, None).unwrap();
        let err = format!("{:#}", load_params(&path).unwrap_err());
        assert!(err.contains(want), "case {i}: {err}");
    }
}

/// What PyTorch computes from the exported file: `head(rnn(x)[:, -1])` in float64, as
/// JSON rows.
const TORCH_SCRIPT: &str = r#"
import json, sys
import torch
from safetensors.torch import load_file

params, batch, module = sys.argv[1], sys.argv[2], sys.argv[3]
state = load_file(params)
x = load_file(batch)["x"].double()
p = x.shape[2]
d = state[module + ".weight_hh_l0"].shape[1]
q = state["head.weight"].shape[0]


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        layer = torch.nn.RNN if module == "rnn" else torch.nn.GRU
        setattr(self, module, layer(p, d, batch_first=True))
        self.head = torch.nn.Linear(d, q)


model = Model().double()
model.load_state_dict(state)
with torch.no_grad():
    out, _ = getattr(model, module)(x)
    z = model.head(out[:, -1])
print(json.dumps(z.tolist()))
"#;

#[test]
fn pytorch_loads_the_export_and_agrees_when_available() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipped: python3 with torch and safetensors is not installed");
        return;
    }
    let dir = TempDir::new("pytorch");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, t) = (4, 6);
    let batch = Batch {
        tokens: None,
        x: (0..t)
            .map(|_| DMatrix::from_fn(b, DIMS.input, |_, _| rng.random_range(-1.0..1.0)))
            .collect(),
        y: Targets::Values(DMatrix::zeros(b, DIMS.output)),
    };
    let batch_path = dir.0.join("batch.safetensors");
    save_batch(&batch_path, &batch).unwrap();
    for (cell, module) in [(CellKind::Tanh, "rnn"), (CellKind::Gru, "gru")] {
        let params = random_params(cell, 6);
        let path = dir.0.join(format!("{module}.safetensors"));
        save_params_as(&path, &params, ParamNames::Torch).unwrap();
        let out = Command::new("python3")
            .args(["-c", TORCH_SCRIPT])
            .arg(&path)
            .arg(&batch_path)
            .arg(module)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let torch: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
        let hyper = Hyper {
            method: Method::Bp,
            loss: Loss::Mse,
            ..Hyper::for_cell(cell)
        };
        let trace = CpuBackend::new().trace(&params, &batch, &hyper).unwrap();
        let h_t = trace.h.last().unwrap();
        let z = h_t * params.head_w.transpose()
            + DMatrix::from_fn(b, DIMS.output, |_, j| params.head_b[j]);
        for (i, row) in torch.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!(
                    (v - z[(i, j)]).abs() < 1e-12,
                    "{cell:?} z[{i}, {j}]: torch {v}, tpri {}",
                    z[(i, j)]
                );
            }
        }
    }
}

/// A file with the tanh RNN's single bias `rnn.b` (what tpri wrote before it had PyTorch's
/// two) reads as `b_ih` with `b_hh` zero, and computes what it computed then.
#[test]
fn a_single_legacy_bias_reads_as_b_ih() {
    let dir = TempDir::new("legacy");
    let params = random_params(CellKind::Tanh, 4);
    let mut tensors: BTreeMap<String, Tensor> = params
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("rnn.b_"))
        .map(|(name, m)| {
            let t = if name.starts_with("head.b") {
                Tensor::from_column(m)
            } else {
                Tensor::from_matrix(m)
            };
            (name.to_string(), t)
        })
        .collect();
    tensors.insert(
        "rnn.b".into(),
        Tensor::from_column(&params.tanh_bias().unwrap()),
    );
    let path = dir.0.join("legacy.safetensors");
    write_tensors(&path, &tensors, None).unwrap();
    let read = load_params(&path).unwrap();
    assert_eq!(read.b, params.tanh_bias().unwrap());
    assert!(read.b_hh.iter().all(|&v| v == 0.0));
    assert_eq!(read.b_hh.shape(), params.b_hh.shape());
    assert_eq!(read.w_hh, params.w_hh);
    assert_eq!(read.head_b, params.head_b);
    // The same model: the forward pass is unchanged up to the rounding of b_ih + b_hh.
    let x = vec![DMatrix::from_fn(2, DIMS.input, |i, j| 0.3 * (i + j) as f64 - 0.4); 3];
    let (a, b) = (
        tpri::cpu::forward::forward(&read, &x).unwrap(),
        tpri::cpu::forward::forward(&params, &x).unwrap(),
    );
    for (ha, hb) in a.iter().zip(&b) {
        assert!((ha - hb).amax() < 1e-15);
    }
}
