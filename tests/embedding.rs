//! The language model's trained embedding table (docs/ALGORITHM.md §13) in the library:
//! parameter files with `embed.weight` under both namings, refused mismatches with clear
//! errors, the optimizer moving E, and ∇E against central differences of the loss (BP).

use std::collections::HashMap;
use std::path::Path;

use nalgebra::DMatrix;
use tpri::backend::Backend;
use tpri::config::{Hyper, Loss, Method, OptimizerConfig, OptimizerKind};
use tpri::cpu::iteration::iteration;
use tpri::cpu::CpuBackend;
use tpri::model::{CellKind, Params};
use tpri::optimizer_state::OptState;
use tpri::tensor_file::{
    load_params, params_from_any_tensors, read_tensors, save_params, save_params_as, write_tensors,
    ParamNames, Tensor,
};

mod cli_support;
mod support;

use cli_support::scratch;
use support::{embed, random_batch, random_params, rng, Init, Shape};

const LOSS: Loss = Loss::CrossEntropySeq;

/// A tanh-RNN language-model problem with a trained table of `vocab` rows.
fn problem(seed: u64, s: Shape, vocab: usize) -> (Params, tpri::tasks::Batch) {
    let mut params = random_params(
        &mut rng(seed),
        CellKind::Tanh,
        s.dims(),
        Init::Gaussian { w_gain: 0.9 },
    );
    let mut batch = random_batch(&mut rng(seed + 1), s, LOSS);
    embed(&mut rng(seed + 2), &mut params, &mut batch, vocab, 1.0);
    (params, batch)
}

fn bp() -> Hyper {
    Hyper {
        method: Method::Bp,
        loss: LOSS,
        ..Hyper::default()
    }
}

#[test]
fn parameter_files_hold_embed_weight_under_both_namings() {
    let dir = scratch("embedding-files");
    let (params, _) = problem(1, Shape::new(2, 3, 4, 5, 6), 9);
    for names in [ParamNames::Tpri, ParamNames::Torch] {
        let path = dir.join(format!("{names:?}.safetensors"));
        save_params_as(&path, &params, names).unwrap();
        let tensors = read_tensors(&path).unwrap();
        assert_eq!(tensors["embed.weight"].shape, vec![9, 4], "{names:?}");
        let back = load_params(&path).unwrap();
        assert_eq!(back, params, "{names:?}: the round trip is exact");
    }
    // Without a table, none comes back.
    let plain = Params {
        embedding: None,
        ..params
    };
    let path = dir.join("plain.safetensors");
    save_params(&path, &plain).unwrap();
    assert_eq!(load_params(&path).unwrap().embedding, None);
}

/// Rewrites the tensor `name` of the parameter file `from` into `to` with shape `shape`.
fn with_shape(from: &Path, to: &Path, name: &str, shape: Vec<usize>) {
    let mut tensors = read_tensors(from).unwrap();
    let n = shape.iter().product();
    tensors.insert(name.into(), Tensor::float(shape, vec![0.5; n]));
    write_tensors(to, &tensors.into_iter().collect(), None).unwrap();
}

#[test]
fn a_table_of_the_wrong_width_or_vocabulary_is_refused_naming_it() {
    let dir = scratch("embedding-mismatch");
    let (params, batch) = problem(2, Shape::new(2, 3, 4, 5, 6), 9);
    let good = dir.join("good.safetensors");
    save_params(&good, &params).unwrap();
    // e ≠ p: the file is refused when read.
    for (i, shape) in [vec![9, 3], vec![9], vec![0, 4]].into_iter().enumerate() {
        let bad = dir.join(format!("bad{i}.safetensors"));
        with_shape(&good, &bad, "embed.weight", shape.clone());
        let err = format!("{:#}", load_params(&bad).unwrap_err());
        assert!(
            err.contains("embed.weight") && err.contains("[V, p]") || err.contains("V ≥ 1"),
            "{shape:?}: {err}"
        );
    }
    // The PyTorch naming is checked by the same code.
    let torch = dir.join("torch.safetensors");
    save_params_as(&torch, &params, ParamNames::Torch).unwrap();
    let mut tensors: HashMap<String, Tensor> = read_tensors(&torch).unwrap();
    tensors.insert(
        "embed.weight".into(),
        Tensor::float(vec![9, 2], vec![0.0; 18]),
    );
    let err = format!(
        "{:#}",
        params_from_any_tensors(&tensors, &torch).unwrap_err()
    );
    assert!(err.contains("embed.weight"), "{err}");
    // Optimizer state with a table of another vocabulary.
    let mut opt = OptState::new(&params);
    opt.m.embedding = Some(DMatrix::zeros(8, 4));
    let err = format!(
        "{:#}",
        OptState::for_params(Some(&opt), &params).unwrap_err()
    );
    assert!(err.contains("[8, 4]") && err.contains("[9, 4]"), "{err}");
    // Token ids past the table's rows.
    let mut past = batch.clone();
    past.tokens.as_mut().unwrap()[(1, 2)] = 9;
    let err = format!("{:#}", iteration(&params, &past, &bp(), None).unwrap_err());
    assert!(
        err.contains("Batch::tokens") && err.contains("token id 9") && err.contains("9 rows"),
        "{err}"
    );
    // A batch without token ids, and a table with the GRU or DTP.
    let mut none = batch.clone();
    none.tokens = None;
    let err = format!("{:#}", iteration(&params, &none, &bp(), None).unwrap_err());
    assert!(err.contains("Batch::tokens"), "{err}");
    let dtp = Hyper {
        method: Method::Dtp,
        ..bp()
    };
    let err = format!("{:#}", iteration(&params, &batch, &dtp, None).unwrap_err());
    assert!(err.contains("Params::embedding"), "{err}");
}

/// ∇E of BP is the loss's gradient: central differences of ℓ in every entry of E.
#[test]
fn bp_embedding_gradient_matches_central_differences() {
    let (params, batch) = problem(3, Shape::new(3, 4, 2, 3, 5), 6);
    let trace = iteration(&params, &batch, &bp(), None).unwrap();
    let grad = trace.grads.embedding.clone().unwrap();
    let table = params.embedding.clone().unwrap();
    let loss = |e: DMatrix<f64>| {
        let p = Params {
            embedding: Some(e),
            ..params.clone()
        };
        iteration(&p, &batch, &bp(), None).unwrap().loss
    };
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for i in 0..table.nrows() {
        for j in 0..table.ncols() {
            let (mut up, mut down) = (table.clone(), table.clone());
            up[(i, j)] += h;
            down[(i, j)] -= h;
            let fd = (loss(up) - loss(down)) / (2.0 * h);
            worst = worst.max((fd - grad[(i, j)]).abs());
        }
    }
    eprintln!("∇E vs central differences: largest difference {worst:.2e}");
    assert!(worst < 1e-8, "{worst:e}");
    // Rows of tokens the batch lacks are zero.
    let tokens = batch.tokens.as_ref().unwrap();
    for v in 0..table.nrows() as u32 {
        if !tokens.iter().any(|&t| t == v) {
            assert!(grad.row(v as usize).iter().all(|&g| g == 0.0));
        }
    }
}

/// The CPU backend steps E with every optimizer, and the frozen inputs match the gathered
/// ones at the start (the same loss).
#[test]
fn every_optimizer_moves_the_table() {
    let (params, batch) = problem(4, Shape::new(3, 4, 2, 3, 5), 6);
    let frozen = Params {
        embedding: None,
        ..params.clone()
    };
    let at = |p: &Params| iteration(p, &batch, &bp(), None).unwrap().loss;
    assert!((at(&params) - at(&frozen)).abs() < 1e-12);
    for kind in [
        OptimizerKind::Sgd,
        OptimizerKind::Nesterov,
        OptimizerKind::Adam,
    ] {
        let hyper = Hyper {
            opt: OptimizerConfig {
                kind,
                lr: 0.05,
                ..OptimizerConfig::default()
            },
            ..bp()
        };
        let mut cpu = CpuBackend::new();
        cpu.load(&params, None, &hyper).unwrap();
        for _ in 0..3 {
            cpu.step(&batch).unwrap();
        }
        let (after, opt) = cpu.state().unwrap();
        let (e0, e1) = (params.embedding.as_ref().unwrap(), after.embedding.unwrap());
        assert!((e0 - &e1).norm() > 1e-6, "{kind:?}: E did not move");
        assert!(opt.m.embedding.is_some() && opt.v.embedding.is_some());
    }
}
