//! The one interface the training loop, `tpri trace` and `tpri check` drive: the f64 CPU
//! reference and the wgpu backend both implement it.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::cg::CgReport;
use crate::config::Hyper;
use crate::limits::Workload;
use crate::memory::MemoryEstimate;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::tasks::Batch;

/// Every intermediate of one iteration at fixed parameters (what `tpri trace` writes).
#[derive(Clone, Debug)]
pub struct Trace {
    /// Hidden states h_0 … h_T, each B×d.
    pub h: Vec<DMatrix<f64>>,
    /// The loss ℓ at these parameters.
    pub loss: f64,
    /// For TP: the surrogate gradient for `rnn.*` (and a trained embedding table's
    /// `embed.weight`, docs/ALGORITHM.md §13) and the loss gradient for `head.*`; for BP:
    /// the loss gradient for all.
    pub grads: Params,
    /// TP only: targets v_0 … v_T (v_0 is never used and holds h_0).
    pub v: Option<Vec<DMatrix<f64>>>,
    /// TP where P is formed (the analytic inversion): P = (WᵀW + rI)⁻¹Wᵀ.
    pub p_inv: Option<DMatrix<f64>>,
    /// TP with the GRU's per-gate inversion: P_r, P_z, P_n, each
    /// `(W_gᵀW_g + rI)⁻¹W_gᵀ` for the gate block W_g of W.
    pub p_gates: Option<[DMatrix<f64>; 3]>,
    /// TP with CG only: how the solve for P went, or the per-gate inversion's three, or the
    /// per-step solves of the sweep (`CgReport::successive`).
    pub cg: Option<CgReport>,
    /// ‖e_t‖_F over the batch for t = 1 … T, the error of the backward recursion
    /// (BP: ∂ℓ/∂h_t). Empty when a backend does not compute it.
    pub error_norms: Vec<f64>,
    /// With outputs at every step (`Loss::CrossEntropySeq`): the loss of each step's
    /// head, ℓ_t for t = 1 … T, each a mean over the B sequences (ℓ is their mean).
    /// Empty with a head at the last step only.
    pub step_losses: Vec<f64>,
}

/// How far back in time the training signal of the last step reached.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostics {
    /// For t = 1 … T: TP, the target displacement ‖v_t − h_t‖_F; BP, ‖∂ℓ/∂h_t‖_F
    /// (Frobenius norms over the batch).
    pub step_norms: Vec<f64>,
    /// Norm of the whole gradient the optimizer applied (all five tensors).
    pub grad_norm: f64,
}

/// What a training step reports when asked (GPU backends read it back lazily).
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// Training loss of the batch, before the update.
    pub loss: f64,
    /// The CG solve of this step, for TP.
    pub cg: Option<CgReport>,
}

/// Loss and accuracy on a batch (for regression, accuracy is the share with |z − y| < 0.04).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Eval {
    /// The loss ℓ (a mean over the batch).
    pub loss: f64,
    /// The share of correct predictions.
    pub accuracy: f64,
}

impl Eval {
    /// The mean of per-batch results weighted by their batch sizes.
    pub fn weighted(parts: impl IntoIterator<Item = (Eval, usize)>) -> Result<Eval> {
        let (mut loss, mut accuracy, mut n) = (0.0, 0.0, 0usize);
        for (e, b) in parts {
            loss += e.loss * b as f64;
            accuracy += e.accuracy * b as f64;
            n = n.saturating_add(b);
        }
        if n == 0 {
            bail!("the evaluation set is empty");
        }
        Ok(Eval {
            loss: loss / n as f64,
            accuracy: accuracy / n as f64,
        })
    }
}

/// What the training loop reads at a log point (`Backend::log_point`).
#[derive(Clone, Debug, PartialEq)]
pub struct LogPoint {
    /// The last step's loss and solve.
    pub stats: StepStats,
    /// Its per-step diagnostics, where the backend computes them.
    pub diagnostics: Option<Diagnostics>,
    /// Parameters and optimizer state after it, when asked for.
    pub state: Option<(Params, OptState)>,
}

/// A device that runs TP-RI and BPTT iterations.
pub trait Backend {
    /// A short human-readable name, e.g. `cpu (f64)` or the adapter name.
    fn name(&self) -> String;

    /// Checks, before anything is built or allocated, that a problem of these sizes can
    /// run here: every size at least 1, no size product overflowing, this backend's
    /// memory estimate within the memory available and, on a GPU, the device's limits
    /// (the largest hidden size, the largest buffer). Returns the estimate. The default is
    /// the f64 CPU reference's ([`Workload::check_cpu`]).
    fn check_workload(&self, workload: &Workload) -> Result<MemoryEstimate> {
        workload.check_cpu()
    }

    /// One iteration's quantities at `params` on `batch`, without updating anything.
    fn trace(&mut self, params: &Params, batch: &Batch, hyper: &Hyper) -> Result<Trace>;

    /// Takes parameters, optimizer state (fresh when `None`) and settings for training.
    fn load(&mut self, params: &Params, opt: Option<&OptState>, hyper: &Hyper) -> Result<()>;

    /// One training iteration on `batch`: gradients, then an optimizer step.
    fn step(&mut self, batch: &Batch) -> Result<()>;

    /// Statistics of the last step; may wait for the device.
    fn last_stats(&mut self) -> Result<StepStats>;

    /// Per-step diagnostics of the last step, where the backend computes them; may wait
    /// for the device.
    fn last_diagnostics(&mut self) -> Result<Option<Diagnostics>> {
        Ok(None)
    }

    /// Loss and accuracy of the current parameters on `batch`.
    fn evaluate(&mut self, batch: &Batch) -> Result<Eval>;

    /// Loss and accuracy over a whole evaluation set, weighted by batch size (a GPU
    /// backend gathers the per-batch results on the device and reads them back once).
    fn evaluate_all(&mut self, batches: &[Batch]) -> Result<Eval> {
        let mut parts = Vec::with_capacity(batches.len());
        for batch in batches {
            parts.push((self.evaluate(batch)?, batch.batch_size()));
        }
        Eval::weighted(parts)
    }

    /// Everything a log point reads after a step, in one go where the device allows
    /// (a GPU backend: one copy and one wait): the statistics, the diagnostics, and with
    /// `with_state` the parameters and optimizer state.
    fn log_point(&mut self, with_state: bool) -> Result<LogPoint> {
        Ok(LogPoint {
            stats: self.last_stats()?,
            diagnostics: self.last_diagnostics()?,
            state: if with_state {
                Some(self.state()?)
            } else {
                None
            },
        })
    }

    /// Current parameters and optimizer state; may wait for the device.
    fn state(&mut self) -> Result<(Params, OptState)>;
}
