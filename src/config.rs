//! Hyperparameters shared by the CLI, config files, checkpoints and tests.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::CellKind;

/// Which loss the head is trained with (docs/ALGORITHM.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Softmax cross-entropy against integer labels, mean over sequences.
    #[cfg_attr(feature = "cli", value(name = "ce"))]
    #[serde(rename = "ce")]
    CrossEntropy,
    /// Squared error, mean over all B·q entries.
    Mse,
    /// Softmax cross-entropy of a head at every step against one label per step (the next
    /// token of a language model), mean over all B·T predictions: the published code's
    /// `cross_entropy_seq` (docs/ALGORITHM.md §13).
    #[cfg_attr(feature = "cli", value(name = "ce-seq"))]
    #[serde(rename = "ce-seq")]
    CrossEntropySeq,
}

impl Loss {
    /// Whether the model has an output at every step (`CrossEntropySeq`) rather than at
    /// the last step only.
    pub fn every_step(self) -> bool {
        self == Loss::CrossEntropySeq
    }
}

/// How the recurrent weights are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Target propagation with regularized inversion (docs/ALGORITHM.md §2).
    Tp,
    /// Backpropagation through time (docs/ALGORITHM.md §3).
    Bp,
    /// Difference target propagation with a learned reverse layer, the paper's DTP
    /// baseline (docs/ALGORITHM.md §14; tanh RNN only).
    Dtp,
}

/// How a target is carried from step t to step t−1 (docs/ALGORITHM.md §2 step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum TargetMode {
    /// `v_{t−1} = h_{t−1} + P[(v_t − h_t) ⊘ (1 − clamp(h_t)²)]` (the default).
    Linearized,
    /// `v_{t−1} = h_{t−1} + f⁻¹(clamp(v_t)) − f⁻¹(clamp(h_t))`.
    Difference,
    /// `v_{t−1} = f⁻¹(clamp(v_t))`.
    Plain,
}

/// How the surrogate loss is differentiated (docs/ALGORITHM.md §2 step 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum TpGrad {
    /// Through time, as the published implementation does (the default).
    ThroughTime,
    /// Each step's input held fixed: no recursion.
    Local,
}

/// How `P = (WᵀW + rI)⁻¹Wᵀ` is applied in the analytic inversion (docs/ALGORITHM.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Solver {
    /// Form P by batched conjugate gradient (docs/ALGORITHM.md §4).
    Cg,
    /// Form P by an exact Cholesky factorisation (CPU reference only).
    Cholesky,
    /// Never form P: solve `(WᵀW + rI) z = Wᵀ s` by batched CG at every step for every
    /// sequence (on the GPU inside the fused sweep, linearized targets only).
    PerStep,
    /// The cheaper of `cg` and `per-step` by the device's cost model (`plan::Plan::new`
    /// states the rule and the measurement behind it; docs/ALGORITHM.md §4).
    Auto,
}

/// How a target is carried back through a step (docs/ALGORITHM.md §2 step 5 against §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Inversion {
    /// The tanh RNN's closed form through `P = (WᵀW + rI)⁻¹Wᵀ`, in any target mode.
    Analytic,
    /// Any cell: `(J_tᵀJ_t + rI)⁻¹ J_tᵀ (v_t − h_t)` by per-step batched CG from Jacobian
    /// products (linearized targets only). The GRU's default.
    Jacobian,
    /// The GRU only: the published code's inversion, the cell's transposed Jacobian with
    /// each gate block's `W_gᵀ` replaced by `P_g = (W_gᵀW_g + rI)⁻¹W_gᵀ` and each sigmoid
    /// derivative divided by instead of multiplied (linearized targets only; the three P_g
    /// formed as `Solver` says: CG, or Cholesky on the CPU). docs/ALGORITHM.md §5.
    PerGate,
}

impl Inversion {
    /// The inversion as `--inversion` and the config files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Inversion::Analytic => "analytic",
            Inversion::Jacobian => "jacobian",
            Inversion::PerGate => "per-gate",
        }
    }

    /// The inversion `cell` uses when none is asked for: the closed form where there is one.
    pub fn default_for(cell: CellKind) -> Self {
        match cell {
            CellKind::Tanh => Inversion::Analytic,
            CellKind::Gru => Inversion::Jacobian,
        }
    }
}

/// How the jacobian inversion's per-step CG is preconditioned (docs/ALGORITHM.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Preconditioner {
    /// Per cell (the default): `Jacobi` for the GRU, whose trained Jacobians it pays for,
    /// `None` for the tanh RNN, where it did not cut the iterations (docs/ALGORITHM.md §5).
    #[default]
    Auto,
    /// By the inverse of the normal matrix's diagonal, `1 / (diag(J_tᵀJ_t) + r)`, formed
    /// at each step from the cell's linearization without forming J_t: the same solution
    /// to the tolerance.
    Jacobi,
    /// Plain CG.
    None,
}

impl Preconditioner {
    /// The preconditioner as `--precondition` and the config files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Preconditioner::Auto => "auto",
            Preconditioner::Jacobi => "jacobi",
            Preconditioner::None => "none",
        }
    }

    /// What the per-step CG of `cell` runs with: `Jacobi` or `None` (`Auto` picks by cell).
    pub fn resolve(self, cell: CellKind) -> Preconditioner {
        match (self, cell) {
            (Preconditioner::Auto, CellKind::Gru) => Preconditioner::Jacobi,
            (Preconditioner::Auto, CellKind::Tanh) => Preconditioner::None,
            (chosen, _) => chosen,
        }
    }
}

/// The optimizer applied to every parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// Plain gradient step.
    Sgd,
    /// SGD with Nesterov momentum (PyTorch's convention).
    Nesterov,
    /// Adam (PyTorch's convention, bias-corrected).
    Adam,
}

/// Optimizer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Which update rule (SGD by default).
    pub kind: OptimizerKind,
    /// Learning rate γ_θ.
    pub lr: f64,
    /// Learning rate of the head's parameters (V, c) where it differs from `lr`; `None`:
    /// `lr`, as in the published code (docs/ALGORITHM.md §8). TP-RI's recurrent update is
    /// γ_h times a gradient while the head's is the loss's own, so comparing BPTT with a
    /// head rate of its own is what tells the targets' effect from the rates'
    /// (docs/REPRODUCTION.md, "Temporal order, T = 60: targets or learning rate").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_head: Option<f64>,
    /// The largest gradient norm a step takes (PyTorch's `clip_grad_norm_`): where the
    /// gradient of the tensors a step moves has a larger Euclidean norm n, it is scaled by
    /// max / (n + 1e-6) first; `None`: never, as in the published code (docs/ALGORITHM.md
    /// §8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
    /// Momentum for Nesterov.
    pub momentum: f64,
    /// Adam's decay rate of the first moment.
    pub beta1: f64,
    /// Adam's decay rate of the second moment.
    pub beta2: f64,
    /// Adam's term added to the root of the second moment.
    pub eps: f64,
}

impl OptimizerConfig {
    /// The learning rate of the head's parameters: `lr_head`, else `lr`.
    pub fn head_lr(&self) -> f64 {
        self.lr_head.unwrap_or(self.lr)
    }

    /// What a gradient of Euclidean norm `norm` is multiplied by before the step: 1, or
    /// with `clip_norm` set, PyTorch's `min(1, max / (norm + 1e-6))`.
    pub fn clip_scale(&self, norm: f64) -> f64 {
        self.clip_norm
            .map_or(1.0, |max| (max / (norm + CLIP_EPS)).min(1.0))
    }
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            lr: 0.1,
            lr_head: None,
            clip_norm: None,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Settings of the target propagation (ignored by BP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TpConfig {
    /// Target step γ_h.
    pub lr_target: f64,
    /// Regularization r > 0 of the inversion.
    pub reg: f64,
    /// How targets are carried back a step.
    pub target_mode: TargetMode,
    /// How the surrogate loss is differentiated.
    pub tp_grad: TpGrad,
    /// The inversion: `Analytic` by default, which the GRU lacks; see
    /// [`TpConfig::for_cell`] and [`Inversion::default_for`].
    pub inversion: Inversion,
    /// How P is applied (analytic inversion), or how the per-gate inversion forms its three
    /// P_g (`Cg`, `Cholesky`; `Auto` is `Cg`); the jacobian one always solves per step.
    pub solver: Solver,
    /// Relative residual at which CG stops; `None` takes the backend's default
    /// (`CPU_CG_TOL` in f64, looser on f32 GPUs).
    pub cg_tol: Option<f64>,
    /// Cap on CG iterations; missing `cg_tol` by then is an error.
    pub cg_max_iter: usize,
    /// The preconditioner of the jacobian inversion's per-step CG (the other inversions
    /// ignore it). Configs written before it existed read as the default, `Auto`.
    pub precondition: Preconditioner,
}

impl Default for TpConfig {
    fn default() -> Self {
        Self {
            lr_target: 0.1,
            reg: 1.0,
            target_mode: TargetMode::Linearized,
            tp_grad: TpGrad::ThroughTime,
            inversion: Inversion::Analytic,
            solver: Solver::Auto,
            cg_tol: None,
            cg_max_iter: 100,
            precondition: Preconditioner::Auto,
        }
    }
}

impl TpConfig {
    /// The defaults for a model of `cell`: [`TpConfig::default`] with the inversion
    /// [`Inversion::default_for`] gives the cell (analytic for the tanh RNN, jacobian for
    /// the GRU), as `tpri` does when `--inversion` is not given.
    pub fn for_cell(cell: CellKind) -> Self {
        Self {
            inversion: Inversion::default_for(cell),
            ..Self::default()
        }
    }
}

/// Settings of DTP's learned reverse layer (`Method::Dtp`; ignored by the other methods).
/// DTP also takes `TpConfig::lr_target` (γ_h) and `TpConfig::tp_grad`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DtpConfig {
    /// Learning rate of the reverse layer's own optimizer step (the published code's
    /// `lr_reverse`; the optimizer's kind and momentum are the forward parameters').
    pub lr_reverse: f64,
    /// Standard deviation σ of the Gaussian noise added to h_{t−1} in the reconstruction
    /// loss (the published `noise`).
    pub noise: f64,
    /// Seeds the noise stream (`dtp::NoiseKey`) together with the iteration's number. The
    /// training loop sets it to `RunConfig::seed`, so it is not saved with the settings.
    #[serde(skip)]
    pub noise_seed: u64,
}

impl Default for DtpConfig {
    /// The published code's defaults (`run_optim`): lr_reverse 0.1, no noise.
    fn default() -> Self {
        Self {
            lr_reverse: 0.1,
            noise: 0.0,
            noise_seed: 0,
        }
    }
}

/// Default CG tolerance of the f64 reference: tight enough that P matches an exact solve
/// to about 1e-12.
pub const CPU_CG_TOL: f64 = 1e-12;

/// Clamp margin ε of docs/ALGORITHM.md §2.
pub const CLAMP_EPS: f64 = 1e-3;

/// What `clip_norm`'s scale adds to the gradient's norm, PyTorch's `clip_grad_norm_`'s
/// 1e-6 (docs/ALGORITHM.md §8); `shaders/optimizer.wgsl` has it too.
pub const CLIP_EPS: f64 = 1e-6;

/// Everything one training iteration depends on, besides parameters and data.
///
/// `Hyper::default()` suits the tanh RNN; for any cell, start from [`Hyper::for_cell`],
/// which picks the inversion the cell takes (a GRU has no closed-form inverse, and
/// [`crate::plan::Plan::check`] rejects the default analytic one for it). Backends take the
/// settings as given: they never change an inversion asked for explicitly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hyper {
    /// TP-RI or BPTT.
    pub method: Method,
    /// The loss of the head; it must match the targets of the batches.
    pub loss: Loss,
    /// Settings of the target propagation (ignored by BPTT).
    pub tp: TpConfig,
    /// The optimizer of every parameter.
    pub opt: OptimizerConfig,
    /// DTP's reverse layer (ignored by the other methods).
    pub dtp: DtpConfig,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            method: Method::Tp,
            loss: Loss::CrossEntropy,
            tp: TpConfig::default(),
            opt: OptimizerConfig::default(),
            dtp: DtpConfig::default(),
        }
    }
}

impl Hyper {
    /// The defaults for a model of `cell`: [`Hyper::default`] with
    /// [`TpConfig::for_cell`] (the inversion [`Inversion::default_for`] gives `cell`).
    pub fn for_cell(cell: CellKind) -> Self {
        Self {
            tp: TpConfig::for_cell(cell),
            ..Self::default()
        }
    }

    /// Rejects settings no iteration can run with, naming the field (`Hyper::opt.lr`, …)
    /// and the value.
    pub fn validate(&self) -> Result<()> {
        let o = &self.opt;
        let bad = |field: &str, problem: String| Err(Error::setting(field, problem).into());
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return bad(
                "Hyper::opt.lr",
                format!(
                    "the learning rate must be positive and finite, got {}",
                    o.lr
                ),
            );
        }
        if let Some(lr_head) = o.lr_head.filter(|v| !(*v > 0.0 && v.is_finite())) {
            return bad(
                "Hyper::opt.lr_head",
                format!("the head's learning rate must be positive and finite, got {lr_head}"),
            );
        }
        if let Some(max) = o.clip_norm.filter(|v| !(*v > 0.0 && v.is_finite())) {
            return bad(
                "Hyper::opt.clip_norm",
                format!("the largest gradient norm must be positive and finite, got {max}"),
            );
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad(
                "Hyper::opt.momentum",
                format!("the momentum must be in [0, 1), got {}", o.momentum),
            );
        }
        for (field, beta) in [("Hyper::opt.beta1", o.beta1), ("Hyper::opt.beta2", o.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(field, format!("Adam betas must be in [0, 1), got {beta}"));
            }
        }
        if !(o.eps > 0.0 && o.eps.is_finite()) {
            return bad(
                "Hyper::opt.eps",
                format!("Adam eps must be positive and finite, got {}", o.eps),
            );
        }
        if self.method == Method::Dtp {
            return self.validate_dtp();
        }
        if self.method == Method::Tp {
            let t = &self.tp;
            if !(t.reg > 0.0 && t.reg.is_finite()) {
                return bad(
                    "Hyper::tp.reg",
                    format!(
                        "the regularization r must be positive and finite, got {}",
                        t.reg
                    ),
                );
            }
            self.check_lr_target()?;
            if let Some(tol) = t.cg_tol.filter(|&tol| !(tol > 0.0 && tol.is_finite())) {
                return bad(
                    "Hyper::tp.cg_tol",
                    format!("the CG tolerance must be positive and finite, got {tol}"),
                );
            }
            if t.cg_max_iter == 0 {
                return bad(
                    "Hyper::tp.cg_max_iter",
                    "the CG iteration cap must be at least 1".into(),
                );
            }
            let closed_form = t.inversion == Inversion::Analytic;
            if !closed_form && t.target_mode != TargetMode::Linearized {
                let name = t.inversion.name();
                return bad(
                    "Hyper::tp.target_mode",
                    format!(
                        "the {name} inversion gives linearized targets only, not target mode {:?}",
                        t.target_mode
                    ),
                );
            }
        }
        Ok(())
    }

    /// γ_h of TP-RI and DTP: non-negative and finite (0 is allowed).
    fn check_lr_target(&self) -> Result<()> {
        let lr_target = self.tp.lr_target;
        if !(lr_target >= 0.0 && lr_target.is_finite()) {
            return Err(Error::setting(
                "Hyper::tp.lr_target",
                format!("the target step must be non-negative and finite, got {lr_target}"),
            )
            .into());
        }
        Ok(())
    }

    /// DTP's settings: γ_h as for TP-RI, the reverse layer's learning rate and noise.
    fn validate_dtp(&self) -> Result<()> {
        self.check_lr_target()?;
        let r = &self.dtp;
        for (field, what, value) in [
            (
                "Hyper::dtp.lr_reverse",
                "the reverse layer's learning rate",
                r.lr_reverse,
            ),
            (
                "Hyper::dtp.noise",
                "the noise's standard deviation σ",
                r.noise,
            ),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                return Err(Error::setting(
                    field,
                    format!("{what} must be non-negative and finite, got {value}"),
                )
                .into());
            }
        }
        Ok(())
    }
}
