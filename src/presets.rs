//! The paper's published settings (docs/ALGORITHM.md §7) as named starting points.

use anyhow::{bail, Result};

use crate::config::{
    DtpConfig, Hyper, Inversion, Method, OptimizerConfig, OptimizerKind, TpConfig,
};
use crate::model::CellKind;
use crate::tasks::TaskSpec;
use crate::train::RunConfig;

/// Where `tpri train` looks for MNIST-layout files by default (Debian's
/// `dataset-fashion-mnist` package).
pub const DEFAULT_PIXEL_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Preset names with a one-line description, in the order `tpri train --help` lists them.
pub const PRESETS: [(&str, &str); 19] = [
    (
        "temporal-order-60-tp",
        "temporal order T=60, TP-RI lr 0.1, lr_target 0.01, r 10",
    ),
    (
        "temporal-order-60-bp",
        "temporal order T=60, BPTT lr 1e-5, Nesterov 0.9",
    ),
    (
        "temporal-order-120-tp",
        "temporal order T=120, TP-RI lr 0.01, lr_target 0.01, r 1",
    ),
    (
        "temporal-order-120-bp",
        "temporal order T=120, BPTT lr 1e-5, Nesterov 0.9",
    ),
    (
        "adding-30-tp",
        "adding T=30, TP-RI lr 0.1, lr_target 0.1, r 1",
    ),
    ("adding-30-bp", "adding T=30, BPTT lr 1e-3, Nesterov 0.9"),
    (
        "pixel-mnist-tp",
        "pixel-by-pixel images T=784, B=16, TP-RI lr 0.1, lr_target 1e-4, r 1",
    ),
    (
        "pixel-mnist-bp",
        "pixel-by-pixel images T=784, B=16, BPTT SGD lr 1e-5",
    ),
    (
        "permuted-mnist-tp",
        "permuted pixels T=784, B=16, TP-RI lr 0.1, lr_target 1e-4, r 1",
    ),
    (
        "permuted-mnist-bp",
        "permuted pixels T=784, B=16, BPTT SGD lr 1e-4",
    ),
    (
        "fashion-mnist-gru-tp",
        "pixel-by-pixel Fashion-MNIST T=784, B=16, GRU, TP-RI (jacobian) lr 0.1, lr_target 0.01, r 1",
    ),
    (
        "fashion-mnist-gru-bp",
        "pixel-by-pixel Fashion-MNIST T=784, B=16, GRU, BPTT SGD lr 1e-2",
    ),
    (
        "temporal-order-60-dtp",
        "temporal order T=60, DTP lr 0.01, lr_target 0.1, lr_reverse 1e-3, Nesterov 0.9",
    ),
    (
        "temporal-order-120-dtp",
        "temporal order T=120, DTP lr 0.01, lr_target 0.1, lr_reverse 1e-3, Nesterov 0.9",
    ),
    (
        "adding-30-dtp",
        "adding T=30, DTP lr 0.01, lr_target 0.1, lr_reverse 1e-3, Nesterov 0.9",
    ),
    (
        "pixel-mnist-dtp",
        "pixel-by-pixel images T=784, B=16, DTP lr 0.01, lr_target 1e-7, lr_reverse 1e-8, noise 0.1",
    ),
    (
        "permuted-mnist-dtp",
        "permuted pixels T=784, B=16, DTP lr 0.01, lr_target 1e-7, lr_reverse 1e-8, noise 0.1",
    ),
    (
        "adding-30-tp-quick",
        "adding T=30, TP-RI, 200 iterations: a smoke test",
    ),
    (
        "temporal-order-60-tp-quick",
        "temporal order T=60, TP-RI, 200 iterations: a smoke test",
    ),
];

/// The run configuration a preset names.
pub fn preset(name: &str) -> Result<RunConfig> {
    let tp = |lr: f64, lr_target: f64, reg: f64| Hyper {
        method: Method::Tp,
        tp: TpConfig {
            lr_target,
            reg,
            ..TpConfig::default()
        },
        opt: OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr,
            ..OptimizerConfig::default()
        },
        ..Hyper::default()
    };
    let bp = |lr: f64, kind: OptimizerKind| Hyper {
        method: Method::Bp,
        opt: OptimizerConfig {
            kind,
            lr,
            momentum: 0.9,
            ..OptimizerConfig::default()
        },
        ..Hyper::default()
    };
    // The published DTP runs (exp/paper_conv_plots.py, `oracle='target_auto_enc'`): SGD
    // with Nesterov momentum where a momentum is given, plain SGD where none is.
    let dtp = |lr_target: f64, lr_reverse: f64, noise: f64, momentum: Option<f64>| Hyper {
        method: Method::Dtp,
        tp: TpConfig {
            lr_target,
            ..TpConfig::default()
        },
        opt: OptimizerConfig {
            kind: match momentum {
                Some(_) => OptimizerKind::Nesterov,
                None => OptimizerKind::Sgd,
            },
            lr: 1e-2,
            momentum: momentum.unwrap_or(OptimizerConfig::default().momentum),
            ..OptimizerConfig::default()
        },
        dtp: DtpConfig {
            lr_reverse,
            noise,
            ..DtpConfig::default()
        },
        ..Hyper::default()
    };
    let synthetic = |task: TaskSpec, hyper: Hyper| RunConfig {
        hyper: Hyper {
            loss: task.loss(),
            ..hyper
        },
        task,
        ..RunConfig::default()
    };
    let pixel = |permuted: bool, hyper: Hyper| RunConfig {
        task: TaskSpec::Pixel {
            dir: DEFAULT_PIXEL_DIR.into(),
            chunk: 1,
            standardize: false,
            permuted,
        },
        batch_size: 16,
        hyper,
        ..RunConfig::default()
    };
    let gru = |cfg: RunConfig| RunConfig {
        cell: CellKind::Gru,
        hyper: Hyper {
            tp: TpConfig {
                inversion: Inversion::Jacobian,
                ..cfg.hyper.tp.clone()
            },
            ..cfg.hyper.clone()
        },
        ..cfg
    };
    let order = |seq_len| TaskSpec::TemporalOrder { seq_len };
    let adding = TaskSpec::Adding { seq_len: 30 };
    Ok(match name {
        "temporal-order-60-tp" => synthetic(order(60), tp(0.1, 0.01, 10.0)),
        "temporal-order-60-bp" => synthetic(order(60), bp(1e-5, OptimizerKind::Nesterov)),
        "temporal-order-120-tp" => synthetic(order(120), tp(0.01, 0.01, 1.0)),
        "temporal-order-120-bp" => synthetic(order(120), bp(1e-5, OptimizerKind::Nesterov)),
        "adding-30-tp" => synthetic(adding, tp(0.1, 0.1, 1.0)),
        "adding-30-bp" => synthetic(adding, bp(1e-3, OptimizerKind::Nesterov)),
        "pixel-mnist-tp" => pixel(false, tp(0.1, 1e-4, 1.0)),
        "pixel-mnist-bp" => pixel(false, bp(1e-5, OptimizerKind::Sgd)),
        "permuted-mnist-tp" => pixel(true, tp(0.1, 1e-4, 1.0)),
        "permuted-mnist-bp" => pixel(true, bp(1e-4, OptimizerKind::Sgd)),
        "fashion-mnist-gru-tp" => gru(pixel(false, tp(0.1, 0.01, 1.0))),
        "fashion-mnist-gru-bp" => gru(pixel(false, bp(1e-2, OptimizerKind::Sgd))),
        "temporal-order-60-dtp" => synthetic(order(60), dtp(0.1, 1e-3, 0.0, Some(0.9))),
        "temporal-order-120-dtp" => synthetic(order(120), dtp(0.1, 1e-3, 0.0, Some(0.9))),
        "adding-30-dtp" => synthetic(adding, dtp(0.1, 1e-3, 0.0, Some(0.9))),
        "pixel-mnist-dtp" => pixel(false, dtp(1e-7, 1e-8, 0.1, None)),
        "permuted-mnist-dtp" => pixel(true, dtp(1e-7, 1e-8, 0.1, None)),
        "adding-30-tp-quick" => RunConfig {
            iterations: 200,
            eval_every: 50,
            ..preset("adding-30-tp")?
        },
        "temporal-order-60-tp-quick" => RunConfig {
            iterations: 200,
            eval_every: 50,
            ..preset("temporal-order-60-tp")?
        },
        _ => {
            let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
            bail!(
                "unknown preset {name:?}; the presets are: {}",
                names.join(", ")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_preset_builds_and_validates() {
        for (name, _) in PRESETS {
            let cfg = preset(name).unwrap();
            cfg.validate().unwrap();
            assert_eq!(cfg.hyper.loss, cfg.task.loss(), "{name}");
            assert_eq!(
                cfg.hyper.method == Method::Tp,
                name.contains("-tp"),
                "{name}"
            );
            assert_eq!(
                cfg.hyper.method == Method::Dtp,
                name.contains("-dtp"),
                "{name}"
            );
        }
        assert!(preset("nope")
            .unwrap_err()
            .to_string()
            .contains("adding-30-tp"));
    }
}
