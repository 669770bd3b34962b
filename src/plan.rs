//! What an iteration runs, decided once for both backends: a model's cell, the
//! hyperparameters, the device and the batch's sizes go in; the gradient's method and, for
//! TP-RI, how the targets are solved for come out (docs/ALGORITHM.md §2, §4, §5). Every
//! combination a backend cannot run is refused here, from one table, with one message.

use anyhow::Result;

use crate::config::{Hyper, Inversion, Loss, Method, Solver, TargetMode};
use crate::error::Error;
use crate::model::CellKind;

/// Where an iteration runs, as far as it changes what can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The f64 CPU reference: every solve, every target mode.
    Cpu,
    /// The wgpu backend; `f16_histories` when it stores the histories h and v − h in f16.
    Gpu {
        /// The histories are stored in f16 (`gpu::Storage::F16`).
        f16_histories: bool,
    },
}

/// How the targets of a TP-RI iteration are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSolve {
    /// Form `P = (WᵀW + rI)⁻¹Wᵀ` once (by CG, or on the CPU by Cholesky), then the
    /// analytic sweep of §2 step 5 in any target mode.
    FormP {
        /// Cholesky instead of CG (the CPU reference only).
        cholesky: bool,
    },
    /// The analytic sweep without P: `(WᵀW + rI) z = Wᵀ s` solved by CG at every step for
    /// every sequence (§4).
    PerStep,
    /// The Jacobian-based inversion of §5, by CG at every step for every sequence.
    Jacobian,
    /// The GRU's per-gate inversion of §5: the three `P_g = (W_gᵀW_g + rI)⁻¹W_gᵀ` of the
    /// gate blocks of W formed once (by CG, or on the CPU by Cholesky), then a sweep that
    /// applies them.
    PerGate {
        /// Cholesky instead of CG (the CPU reference only).
        cholesky: bool,
    },
}

/// What one iteration computes its gradient with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Backpropagation through time (§3).
    Bptt,
    /// TP-RI (§2) with these targets.
    Tp(TargetSolve),
    /// Difference target propagation with a learned reverse layer (§14).
    Dtp,
}

/// The sizes the choice of `--solver auto` depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Hidden size d.
    pub hidden: usize,
    /// Sequence length T.
    pub steps: usize,
    /// Sequences per batch B.
    pub batch: usize,
}

/// How many times more a flop of a per-step solve costs than a flop of forming P on the
/// CPU, measured by `tpri bench --crossover` (docs/PERFORMANCE.md).
pub const PER_STEP_PENALTY: usize = 2;

/// One refused combination: when `refuses` holds, `message` says why and what to use.
struct Refusal {
    refuses: fn(&Request) -> bool,
    /// The field of `Hyper` (or the choice) to change.
    field: &'static str,
    message: fn(&Request) -> String,
}

/// What was asked, with `auto` still unresolved.
struct Request {
    cell: CellKind,
    method: Method,
    inversion: Inversion,
    solver: Solver,
    target_mode: TargetMode,
    device: Device,
    loss: Loss,
}

impl Request {
    fn tp(&self) -> bool {
        self.method == Method::Tp
    }

    fn on_gpu(&self) -> bool {
        matches!(self.device, Device::Gpu { .. })
    }

    /// TP-RI that solves at every step (the jacobian inversion, or `--solver per-step`).
    fn per_step(&self) -> bool {
        self.tp() && (self.inversion == Inversion::Jacobian || self.solver == Solver::PerStep)
    }
}

/// Every combination of cell, method, inversion, solver, target mode, loss and device
/// that no backend runs (checked in this order; the first that applies is the error).
const REFUSED: &[Refusal] = &[
    Refusal {
        refuses: |r| r.method == Method::Dtp && r.cell != CellKind::Tanh,
        field: "Hyper::method",
        message: |_| {
            "DTP's learned reverse layer g(h, x) = tanh(V h + c + U x) inverts the tanh RNN's \
             step: train the GRU with Method::Tp or Method::Bp"
                .into()
        },
    },
    // DTP's kernels read and write f32 histories only.
    Refusal {
        refuses: |r| {
            r.method == Method::Dtp
                && r.device
                    == (Device::Gpu {
                        f16_histories: true,
                    })
        },
        field: "Storage",
        message: |_| "f16 storage is not implemented for DTP; use Storage::F32".into(),
    },
    Refusal {
        refuses: |r| r.tp() && r.cell == CellKind::Gru && r.inversion == Inversion::Analytic,
        field: "Hyper::tp.inversion",
        message: |_| {
            "the GRU has no closed-form inverse: TP-RI needs the jacobian inversion, \
             Inversion::Jacobian (which Hyper::for_cell(CellKind::Gru) picks), or the \
             published per-gate one, Inversion::PerGate"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.tp() && r.cell != CellKind::Gru && r.inversion == Inversion::PerGate,
        field: "Hyper::tp.inversion",
        message: |_| {
            "the per-gate inversion inverts the GRU's gate blocks r, z, n of W; the tanh RNN \
             has one W, whose inversion is Inversion::Analytic (or Inversion::Jacobian)"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.tp() && r.inversion == Inversion::PerGate && r.solver == Solver::PerStep,
        field: "Hyper::tp.solver",
        message: |_| {
            "the per-gate inversion forms its three P_g once per iteration: use Solver::Cg, \
             Solver::Cholesky (CPU) or Solver::Auto, not Solver::PerStep"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.tp() && r.on_gpu() && r.solver == Solver::Cholesky,
        field: "Hyper::tp.solver",
        message: |_| {
            "the GPU backend has no Cholesky solve (CPU-only): use Solver::Cg, Solver::PerStep \
             or Solver::Auto"
                .into()
        },
    },
    Refusal {
        refuses: |r| {
            r.on_gpu()
                && r.per_step()
                && r.inversion == Inversion::Analytic
                && r.target_mode != TargetMode::Linearized
        },
        field: "Hyper::tp.target_mode",
        message: |r| {
            format!(
                "the GPU's per-step solves give linearized targets only, not target mode {:?}: \
                 use Solver::Cg or Solver::Auto",
                r.target_mode
            )
        },
    },
    // Outputs at every step (docs/ALGORITHM.md §13): the tanh RNN's analytic inversion,
    // and BP; on the GPU with P formed and f32 histories.
    Refusal {
        refuses: |r| r.loss.every_step() && r.cell != CellKind::Tanh,
        field: "Hyper::loss",
        message: |_| {
            "outputs at every step (Loss::CrossEntropySeq) are implemented for the tanh RNN \
             only, not the GRU"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.loss.every_step() && r.method == Method::Dtp,
        field: "Hyper::method",
        message: |_| {
            "DTP (docs/ALGORITHM.md §14) propagates one target from the last step: outputs \
             at every step (Loss::CrossEntropySeq) take Method::Tp or Method::Bp"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.loss.every_step() && r.tp() && r.inversion == Inversion::Jacobian,
        field: "Hyper::tp.inversion",
        message: |_| {
            "outputs at every step (Loss::CrossEntropySeq) take the analytic inversion, \
             Inversion::Analytic, not the jacobian one"
                .into()
        },
    },
    Refusal {
        refuses: |r| r.loss.every_step() && r.on_gpu() && r.per_step(),
        field: "Hyper::tp.solver",
        message: |_| {
            "the GPU's per-step solves have no local targets for outputs at every step \
             (Loss::CrossEntropySeq): use Solver::Cg or Solver::Auto"
                .into()
        },
    },
    Refusal {
        refuses: |r| {
            r.loss.every_step()
                && r.device
                    == (Device::Gpu {
                        f16_histories: true,
                    })
        },
        field: "Storage",
        message: |_| {
            "outputs at every step (Loss::CrossEntropySeq) read the hidden states as f32 in \
             their matrix products: use Storage::F32"
                .into()
        },
    },
    // The GRU's kernels and the per-step sweep read and write f32 histories only.
    Refusal {
        refuses: |r| {
            r.device
                == (Device::Gpu {
                    f16_histories: true,
                })
                && (r.cell != CellKind::Tanh || r.per_step())
        },
        field: "Storage",
        message: |r| {
            let asked = match (r.cell, r.tp().then_some(r.inversion)) {
                (CellKind::Gru, Some(Inversion::Jacobian)) => {
                    "the GRU cell with Inversion::Jacobian"
                }
                (CellKind::Gru, Some(Inversion::PerGate)) => "the GRU cell with Inversion::PerGate",
                (CellKind::Gru, _) => "the GRU cell",
                (CellKind::Tanh, Some(Inversion::Jacobian)) => "Inversion::Jacobian",
                (CellKind::Tanh, _) => "Solver::PerStep",
            };
            format!(
                "f16 storage is implemented for the tanh RNN's analytic inversion only, not \
                 for {asked}; use Storage::F32"
            )
        },
    },
];

impl Plan {
    /// Checks that `hyper` can run for a model of `cell` on `device` at all (before any
    /// batch is seen): the table of refused combinations.
    pub fn check(cell: CellKind, hyper: &Hyper, device: Device) -> Result<()> {
        hyper.validate()?;
        let request = Request {
            cell,
            method: hyper.method,
            inversion: hyper.tp.inversion,
            solver: hyper.tp.solver,
            target_mode: hyper.tp.target_mode,
            device,
            loss: hyper.loss,
        };
        match REFUSED.iter().find(|r| (r.refuses)(&request)) {
            Some(refusal) => Err(Error::setting(refusal.field, (refusal.message)(&request)).into()),
            None => Ok(()),
        }
    }

    /// What runs for a model of `cell` with `hyper` on `device` at `sizes`.
    ///
    /// `--solver auto` means the same on both backends: the cheaper of forming P and
    /// per-step solves by the device's cost model, and P whenever there is no step to
    /// solve (T = 1), so that a trace always holds P. Forming P costs about k·4d³ flops
    /// (k CG iterations) and per-step solves about k·4d² per step and sequence, equal at
    /// (T − 1)·B ≈ d; on the CPU a per-step flop costs `PER_STEP_PENALTY` times more
    /// (measured), so per-step solves win when `PER_STEP_PENALTY·(T − 1)·B < d`. On the GPU
    /// both run the same CG code, P's k iterations once in d workgroups side by side, the
    /// per-step solves' k at each of the T − 1 steps in sequence: per-step solves never
    /// win, and `auto` forms P.
    pub fn new(cell: CellKind, hyper: &Hyper, device: Device, sizes: Sizes) -> Result<Self> {
        Self::check(cell, hyper, device)?;
        match hyper.method {
            Method::Bp => return Ok(Plan::Bptt),
            Method::Dtp => return Ok(Plan::Dtp),
            Method::Tp => {}
        }
        let tp = &hyper.tp;
        Ok(Plan::Tp(match (tp.inversion, tp.solver) {
            (Inversion::Jacobian, _) => TargetSolve::Jacobian,
            // `Solver::PerStep` is refused above; `Auto` forms the P_g by CG on both backends.
            (Inversion::PerGate, solver) => TargetSolve::PerGate {
                cholesky: solver == Solver::Cholesky,
            },
            (Inversion::Analytic, Solver::Cg) => TargetSolve::FormP { cholesky: false },
            (Inversion::Analytic, Solver::Cholesky) => TargetSolve::FormP { cholesky: true },
            (Inversion::Analytic, Solver::PerStep) => TargetSolve::PerStep,
            (Inversion::Analytic, Solver::Auto) => {
                let per_step_wins = device == Device::Cpu
                    && sizes.steps > 1
                    && PER_STEP_PENALTY
                        .saturating_mul(sizes.steps - 1)
                        .saturating_mul(sizes.batch)
                        < sizes.hidden;
                if per_step_wins {
                    TargetSolve::PerStep
                } else {
                    TargetSolve::FormP { cholesky: false }
                }
            }
        }))
    }

    /// The target solve of a TP-RI plan; `None` for BPTT and DTP.
    pub fn targets(self) -> Option<TargetSolve> {
        match self {
            Plan::Bptt | Plan::Dtp => None,
            Plan::Tp(solve) => Some(solve),
        }
    }

    /// Whether this plan forms P.
    pub fn forms_p(self) -> bool {
        matches!(self, Plan::Tp(TargetSolve::FormP { .. }))
    }

    /// Whether this plan forms regularized inverses once per iteration (P, or the GRU's
    /// three P_g): what the GPU keeps between steps to start the next solves from.
    pub fn forms_inverses(self) -> bool {
        matches!(
            self,
            Plan::Tp(TargetSolve::FormP { .. } | TargetSolve::PerGate { .. })
        )
    }
}
