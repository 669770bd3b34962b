//! How a run's update direction lines up with the gradient of its loss
//! (`RunConfig::alignment`, docs/ALGORITHM.md §10): TP-RI's surrogate gradient, or DTP's,
//! against BPTT's at the same parameters on the same batch.

use anyhow::{Context, Result};
use nalgebra::DMatrix;
use serde::Serialize;

use crate::backend::Backend;
use crate::config::{Hyper, Method};
use crate::model::{CellKind, Params, EMBEDDING_NAME};
use crate::tasks::Batch;
use crate::train::{RunConfig, RunSink};

/// A method's gradient g against BPTT's ∇ℓ on one batch, over the tensors the method
/// trains by its own rule: the cell's and a trained embedding table's. The head is left
/// out (every method steps it along ∇ℓ), and so is DTP's reverse layer (BPTT has none).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alignment {
    /// cos(g, ∇ℓ) over those tensors together; `None` where either is zero or not finite.
    pub cosine: Option<f64>,
    /// ‖g‖ / ‖∇ℓ‖ over them: how much longer the method's step is than BPTT's at the same
    /// learning rate. `None` where ∇ℓ is zero or either is not finite.
    pub norm_ratio: Option<f64>,
    /// cos(g, ∇ℓ) tensor by tensor (name, cosine), in [`compared`] order.
    pub tensors: Vec<(&'static str, Option<f64>)>,
}

/// The tensors an [`Alignment`] compares, by name, for a `cell` with or without a trained
/// embedding table: the columns of a run's `alignment.csv`.
pub fn compared(cell: CellKind, embedding: bool) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = cell
        .param_names()
        .iter()
        .copied()
        .filter(|n| !n.starts_with("head."))
        .collect();
    if embedding {
        names.push(EMBEDDING_NAME);
    }
    names
}

/// Traces `hyper`'s method and BPTT at `params` on `batch` (`Backend::trace`: nothing of
/// the training state changes) and compares their gradients.
pub fn measure(
    backend: &mut dyn Backend,
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
) -> Result<Alignment> {
    let method = backend
        .trace(params, batch, hyper)
        .context("tracing the method's gradient")?;
    let bp_params = Params {
        dtp: None,
        ..params.clone()
    };
    let bp_hyper = Hyper {
        method: Method::Bp,
        ..hyper.clone()
    };
    let bp = backend
        .trace(&bp_params, batch, &bp_hyper)
        .context("tracing BPTT's gradient")?;
    Ok(Alignment::between(&method.grads, &bp.grads))
}

/// Tells `sink` when `cfg` asks for the alignment of a BPTT run, which has nothing to
/// compare (a sweep over methods may ask it of every run).
pub(super) fn announce(cfg: &RunConfig, sink: &mut dyn RunSink) {
    if cfg.alignment && !cfg.measures_alignment() {
        sink.note(
            "alignment is on, but this run is BPTT (method bp), the gradient it would be \
             compared with: nothing is measured and no alignment.csv is written",
        );
    }
}

/// The alignment at an evaluation, where `cfg` measures it: the method's and BPTT's
/// gradients at the parameters of iteration `at` on the first held-out batch. A
/// diagnostic: where it cannot be measured (a solve of the trace that does not converge,
/// say) `sink` is told and the run goes on.
pub(super) fn at_evaluation(
    cfg: &RunConfig,
    backend: &mut dyn Backend,
    eval_set: &[Batch],
    (i, params): (u64, &Params),
    sink: &mut dyn RunSink,
) -> Option<Alignment> {
    if !cfg.measures_alignment() {
        return None;
    }
    let measured = eval_set
        .first()
        .context("the held-out set is empty")
        .and_then(|batch| measure(backend, params, batch, &cfg.backend_hyper()));
    match measured {
        Ok(a) => Some(a),
        Err(e) => {
            sink.note(&format!(
                "iteration {i}: the alignment with BPTT's gradient could not be measured: {e:#}"
            ));
            None
        }
    }
}

impl Alignment {
    /// Compares the gradient `g` of a method with BPTT's `bp` (the same cell and sizes),
    /// tensor by tensor by name; a tensor one of them lacks has no cosine.
    pub fn between(g: &Params, bp: &Params) -> Self {
        let (g_all, bp_all) = (g.tensors(), bp.tensors());
        let mut whole = Sums::default();
        let mut tensors = Vec::new();
        for name in compared(bp.cell, bp.embedding.is_some()) {
            let pair = named(&g_all, name).zip(named(&bp_all, name));
            let cosine = pair.and_then(|(a, b)| {
                let sums = Sums::of(a, b);
                whole.add(sums);
                sums.cosine()
            });
            tensors.push((name, cosine));
        }
        Self {
            cosine: whole.cosine(),
            norm_ratio: whole.ratio(),
            tensors,
        }
    }
}

/// The tensor called `name` among `all` (`Params::tensors`).
fn named<'a>(all: &[(&'static str, &'a DMatrix<f64>)], name: &str) -> Option<&'a DMatrix<f64>> {
    all.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
}

/// ⟨g, b⟩, ‖g‖² and ‖b‖² over some tensors.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    dot: f64,
    gg: f64,
    bb: f64,
}

impl Sums {
    fn of(g: &DMatrix<f64>, b: &DMatrix<f64>) -> Self {
        if g.shape() != b.shape() {
            // Not the same tensor (a caller's mistake): no cosine, rather than a panic.
            return Self {
                dot: f64::NAN,
                ..Self::default()
            };
        }
        Self {
            dot: g.dot(b),
            gg: g.norm_squared(),
            bb: b.norm_squared(),
        }
    }

    fn add(&mut self, other: Self) {
        self.dot += other.dot;
        self.gg += other.gg;
        self.bb += other.bb;
    }

    fn cosine(self) -> Option<f64> {
        let c = self.dot / (self.gg.sqrt() * self.bb.sqrt());
        (self.gg > 0.0 && self.bb > 0.0 && c.is_finite()).then_some(c.clamp(-1.0, 1.0))
    }

    fn ratio(self) -> Option<f64> {
        let r = (self.gg / self.bb).sqrt();
        (self.bb > 0.0 && r.is_finite() && self.dot.is_finite()).then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dims;

    fn params(seed: u64) -> Params {
        let dims = Dims {
            input: 2,
            hidden: 3,
            output: 2,
        };
        Params::init(dims, seed).unwrap()
    }

    #[test]
    fn a_gradient_is_aligned_with_itself_and_a_multiple() {
        let g = params(1);
        let mut twice = g.clone();
        for m in twice.tensors_mut() {
            *m *= -2.0;
        }
        let a = Alignment::between(&g, &g);
        assert!((a.cosine.unwrap() - 1.0).abs() < 1e-12);
        assert!((a.norm_ratio.unwrap() - 1.0).abs() < 1e-12);
        let a = Alignment::between(&twice, &g);
        assert!((a.cosine.unwrap() + 1.0).abs() < 1e-12);
        assert!((a.norm_ratio.unwrap() - 2.0).abs() < 1e-12);
        let names: Vec<_> = a.tensors.iter().map(|t| t.0).collect();
        assert_eq!(names, ["rnn.w_hh", "rnn.w_ih", "rnn.b_ih", "rnn.b_hh"]);
    }

    #[test]
    fn the_head_does_not_count_and_zero_or_missing_gradients_have_no_cosine() {
        let (g, bp) = (params(1), params(2));
        let mut other_head = g.clone();
        other_head.head_w *= 7.0;
        other_head.head_b.fill(3.0);
        assert_eq!(
            Alignment::between(&other_head, &bp),
            Alignment::between(&g, &bp)
        );
        let zero = g.zeros_like();
        let a = Alignment::between(&zero, &bp);
        assert_eq!((a.cosine, a.norm_ratio), (None, Some(0.0)));
        let a = Alignment::between(&g, &zero);
        assert_eq!((a.cosine, a.norm_ratio), (None, None));
        let mut with_table = bp.clone();
        with_table.embedding = Some(DMatrix::from_element(5, 2, 1.0));
        let a = Alignment::between(&g, &with_table);
        assert_eq!(a.tensors.last(), Some(&(EMBEDDING_NAME, None)));
        assert_eq!(a.cosine, Alignment::between(&g, &bp).cosine);
        let mut nan = g.clone();
        nan.w_hh[0] = f64::NAN;
        let a = Alignment::between(&nan, &bp);
        assert_eq!((a.cosine, a.norm_ratio, a.tensors[0].1), (None, None, None));
    }
}
