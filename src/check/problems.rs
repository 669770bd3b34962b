//! The random problems of `tpri check`: the covering set of cases and each one's
//! parameters and batch.

use anyhow::Result;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Hyper, Inversion, Loss, Method, TargetMode, TpConfig, TpGrad};
use crate::model::{CellKind, Dims, Params};
use crate::tasks::{Batch, Targets};

/// One random problem: sizes and settings.
#[derive(Clone, Debug)]
pub struct Case {
    /// What the case exercises, as `tpri check` prints it.
    pub name: String,
    /// The recurrent cell (tanh RNN or GRU).
    pub cell: CellKind,
    /// Input, hidden and output sizes.
    pub dims: Dims,
    /// Sequences per batch B.
    pub batch: usize,
    /// Sequence length T.
    pub seq_len: usize,
    /// The settings of the iteration.
    pub hyper: Hyper,
    /// The rows V of a trained embedding table (docs/ALGORITHM.md §13), `None` for
    /// inputs given with the batch.
    pub embedding: Option<usize>,
}

/// CG iterations the per-step solves of the jacobian cases may take: they need about six
/// at r = 1, and a cap near that keeps the worst case the GPU records launches for small.
const JACOBIAN_MAX_ITER: usize = 16;

/// A covering set of cases: sizes off the workgroup grid, both cells, every target mode,
/// every inversion, both gradient modes, every loss (outputs at every step included), and
/// BP.
pub fn cases() -> Vec<Case> {
    let tp = |mode, grad, loss| Hyper {
        method: Method::Tp,
        loss,
        tp: TpConfig {
            target_mode: mode,
            tp_grad: grad,
            lr_target: 0.1,
            reg: 1.0,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let jacobian = |grad, loss| {
        let mut h = tp(TargetMode::Linearized, grad, loss);
        h.tp.inversion = Inversion::Jacobian;
        h.tp.cg_max_iter = JACOBIAN_MAX_ITER;
        h
    };
    let per_gate = |grad, loss| {
        let mut h = tp(TargetMode::Linearized, grad, loss);
        h.tp.inversion = Inversion::PerGate;
        h
    };
    use CellKind::{Gru, Tanh};
    let bp = |loss| Hyper {
        method: Method::Bp,
        loss,
        ..Hyper::default()
    };
    let dtp = |noise, grad, loss| {
        let mut h = tp(TargetMode::Linearized, grad, loss);
        h.method = Method::Dtp;
        h.dtp.noise = noise;
        h
    };
    let shapes = [
        (7, 3, 4, 33),
        (100, 2, 16, 33),
        (1, 1, 1, 2),
        (257, 5, 3, 7),
    ];
    let settings = [
        (
            "tp linearized",
            Tanh,
            tp(
                TargetMode::Linearized,
                TpGrad::ThroughTime,
                Loss::CrossEntropy,
            ),
        ),
        (
            "tp difference",
            Tanh,
            tp(TargetMode::Difference, TpGrad::ThroughTime, Loss::Mse),
        ),
        (
            "tp plain",
            Tanh,
            tp(TargetMode::Plain, TpGrad::ThroughTime, Loss::CrossEntropy),
        ),
        (
            "tp local",
            Tanh,
            tp(TargetMode::Linearized, TpGrad::Local, Loss::Mse),
        ),
        ("bp ce", Tanh, bp(Loss::CrossEntropy)),
        ("bp mse", Tanh, bp(Loss::Mse)),
        (
            "tp jacobian",
            Tanh,
            jacobian(TpGrad::ThroughTime, Loss::Mse),
        ),
        (
            "tp jacobian local",
            Tanh,
            jacobian(TpGrad::Local, Loss::CrossEntropy),
        ),
        (
            "gru tp jacobian",
            Gru,
            jacobian(TpGrad::ThroughTime, Loss::CrossEntropy),
        ),
        (
            "gru tp jacobian local",
            Gru,
            jacobian(TpGrad::Local, Loss::Mse),
        ),
        ("gru bp ce", Gru, bp(Loss::CrossEntropy)),
        ("gru bp mse", Gru, bp(Loss::Mse)),
    ];
    // After all the others, so that adding them kept every earlier case's index, and with
    // it its seed (`run_checks`).
    let later = [
        (
            "gru tp per-gate",
            Gru,
            per_gate(TpGrad::ThroughTime, Loss::CrossEntropy),
        ),
        (
            "gru tp per-gate local",
            Gru,
            per_gate(TpGrad::Local, Loss::Mse),
        ),
        (
            "lm tp linearized",
            Tanh,
            tp(
                TargetMode::Linearized,
                TpGrad::ThroughTime,
                Loss::CrossEntropySeq,
            ),
        ),
        (
            "lm tp difference local",
            Tanh,
            tp(TargetMode::Difference, TpGrad::Local, Loss::CrossEntropySeq),
        ),
        (
            "lm tp plain",
            Tanh,
            tp(
                TargetMode::Plain,
                TpGrad::ThroughTime,
                Loss::CrossEntropySeq,
            ),
        ),
        ("lm bp", Tanh, bp(Loss::CrossEntropySeq)),
        ("dtp", Tanh, dtp(0.1, TpGrad::ThroughTime, Loss::Mse)),
        (
            "dtp local",
            Tanh,
            dtp(0.0, TpGrad::Local, Loss::CrossEntropy),
        ),
    ];
    // Trained embedding tables, last of all (again keeping the earlier seeds), with
    // vocabularies of 7 and 33 words.
    let embedded = [
        (
            "lm embed tp linearized",
            Tanh,
            tp(
                TargetMode::Linearized,
                TpGrad::ThroughTime,
                Loss::CrossEntropySeq,
            ),
        ),
        ("lm embed bp", Tanh, bp(Loss::CrossEntropySeq)),
    ];
    let mut out = Vec::new();
    for group in [&settings[..], &later[..], &embedded[..]] {
        for (i, &(d, p, b, t)) in shapes.iter().enumerate() {
            for (j, (label, cell, hyper)) in group.iter().enumerate() {
                // Every setting on the first two shapes; one each on the others.
                if i >= 2 && j % 2 != i % 2 {
                    continue;
                }
                let q = match hyper.loss {
                    Loss::Mse => 1,
                    Loss::CrossEntropy => 4,
                    Loss::CrossEntropySeq => 5,
                };
                let embedding = label.starts_with("lm embed").then_some(7 + 26 * (i % 2));
                out.push(Case {
                    embedding,
                    name: format!("{label} d={d} T={t} B={b}"),
                    cell: *cell,
                    dims: Dims {
                        input: p,
                        hidden: d,
                        output: q,
                    },
                    batch: b,
                    seq_len: t,
                    hyper: hyper.clone(),
                });
            }
        }
    }
    out
}

/// Random parameters near the trained regime and a random batch for `case`: for the tanh
/// RNN an orthogonal W scaled below 1 and small biases (DTP's reverse layer orthogonal,
/// its bias small too); for the GRU PyTorch's initialisation (the cell's tensors uniform
/// in ±1/√d, biases included) and a small random head bias.
pub fn problem(case: &Case, seed: u64) -> Result<(Params, Batch)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = match case.hyper.method {
        Method::Dtp => Params::init_dtp(case.dims, seed),
        Method::Tp | Method::Bp => Params::init_of(case.cell, case.dims, seed),
    }?;
    let mut noise = |rows, cols, scale: f64| {
        DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-scale..scale))
    };
    let Dims {
        hidden: d,
        output: q,
        input: p,
    } = case.dims;
    if case.cell == CellKind::Tanh {
        params.w_hh *= 0.9;
        params.b = noise(d, 1, 0.1);
        params.b_hh = noise(d, 1, 0.1);
        if let Some(rev) = &mut params.dtp {
            rev.b_rev = noise(d, 1, 0.1);
        }
    }
    params.head_b = noise(q, 1, 0.1);
    let mut x: Vec<DMatrix<f64>> = (0..case.seq_len)
        .map(|_| noise(case.batch, p, 1.0))
        .collect();
    // A trained table: random token ids, and x what the table gives them.
    let tokens = case.embedding.map(|v| {
        let table = noise(v, p, 1.0);
        let uniform = noise(case.batch, case.seq_len, 1.0);
        let ids = uniform.map(|u| (((u + 1.0) / 2.0 * v as f64) as u32).min(v as u32 - 1));
        for (t, x_t) in x.iter_mut().enumerate() {
            *x_t = DMatrix::from_fn(case.batch, p, |i, j| table[(ids[(i, t)] as usize, j)]);
        }
        params.embedding = Some(table);
        ids
    });
    let y = match case.hyper.loss {
        Loss::CrossEntropy => Targets::Labels(
            (0..case.batch)
                .map(|i| (i * 7 + seed as usize) % q)
                .collect(),
        ),
        Loss::Mse => Targets::Values(noise(case.batch, q, 1.0)),
        Loss::CrossEntropySeq => {
            Targets::StepLabels(DMatrix::from_fn(case.batch, case.seq_len, |i, t| {
                (i * 7 + t * 3 + seed as usize) % q
            }))
        }
    };
    Ok((params, Batch { x, y, tokens }))
}
