//! What a benchmark times (`Case`: a cell, a method and, for TP-RI, its inversion) and how
//! its TP-RI solves (`Solve`).

use anyhow::Result;

use super::settings;
use crate::config::{Inversion, Method, Preconditioner, TpConfig};
use crate::model::CellKind;

/// TP-RI's regularization r in a case unless asked otherwise: the presets' r.
pub const BENCH_REG: f64 = 1.0;

/// How a case's TP-RI solves: r, and the CG solves' tolerance and cap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Solve {
    /// The regularization r. What the jacobian inversion costs depends on it: the smaller
    /// r, the further back the targets move h, and every step they move takes a full
    /// per-step CG (docs/PERFORMANCE.md, "What the jacobian inversion costs in training").
    pub reg: f64,
    /// CG's relative-residual tolerance; `None`: each backend's default, 1e-12 on the f64
    /// CPU reference and 1e-5 on the GPU (docs/ALGORITHM.md §4).
    pub cg_tol: Option<f64>,
    /// CG's cap on iterations, as in training.
    pub cg_max_iter: usize,
    /// The jacobian inversion's preconditioner, as in training (the other inversions
    /// ignore it).
    pub precondition: Preconditioner,
}

impl Default for Solve {
    /// [`BENCH_REG`], each backend's tolerance, training's cap.
    fn default() -> Self {
        Solve {
            reg: BENCH_REG,
            cg_tol: None,
            cg_max_iter: TpConfig::default().cg_max_iter,
            precondition: TpConfig::default().precondition,
        }
    }
}

impl Solve {
    /// Refuses what training refuses: r not positive and finite, a tolerance not positive
    /// and finite, a cap of 0 (the errors name `Hyper::tp.reg`, `cg_tol`, `cg_max_iter`).
    pub fn check(&self) -> Result<()> {
        settings(Case::of(CellKind::Tanh, Method::Tp).with_solve(*self)).validate()
    }

    /// The tolerance a backend whose own is `default` solves to.
    pub fn tol_or(&self, default: f64) -> f64 {
        self.cg_tol.unwrap_or(default)
    }
}

/// What a measurement times: a cell, a method and, for TP-RI, its inversion and solve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Case {
    /// The recurrent cell.
    pub cell: CellKind,
    /// TP-RI or BPTT.
    pub method: Method,
    /// TP-RI's inversion; `None` for BPTT.
    pub inversion: Option<Inversion>,
    /// How TP-RI solves (`Solve::default()` unless set with [`Case::with_solve`]).
    pub solve: Solve,
}

impl Case {
    /// `method` with `cell`, TP-RI with the cell's bench inversion (`Case::bench_inversion`).
    pub fn of(cell: CellKind, method: Method) -> Case {
        let inversion = (method == Method::Tp).then(|| Case::bench_inversion(cell));
        Case {
            cell,
            method,
            inversion,
            solve: Solve::default(),
        }
    }

    /// TP-RI of `cell` with `inversion`.
    pub fn tp(cell: CellKind, inversion: Inversion) -> Case {
        Case {
            cell,
            method: Method::Tp,
            inversion: Some(inversion),
            solve: Solve::default(),
        }
    }

    /// The same case with TP-RI solving as `solve` says.
    pub fn with_solve(self, solve: Solve) -> Case {
        Case { solve, ..self }
    }

    /// How the case solves where that applies: TP-RI's, `None` for BPTT.
    pub fn tp_solve(&self) -> Option<Solve> {
        self.inversion.map(|_| self.solve)
    }

    /// The preconditioner the case's per-step CG runs with (`Jacobi` or `None`, `Auto`
    /// resolved for the cell): the jacobian inversion's, `None` for the others and BPTT.
    pub fn precondition(&self) -> Option<Preconditioner> {
        (self.inversion == Some(Inversion::Jacobian))
            .then(|| self.solve.precondition.resolve(self.cell))
    }

    /// The inversion `tpri bench` times TP-RI with unless asked for another: the tanh
    /// RNN's closed form, and the GRU's published per-gate inversion (`--inversion`
    /// times the jacobian one, either cell's default elsewhere, too).
    pub fn bench_inversion(cell: CellKind) -> Inversion {
        match cell {
            CellKind::Tanh => Inversion::Analytic,
            CellKind::Gru => Inversion::PerGate,
        }
    }

    /// Whether `inversion` applies to `cell`: the analytic one to the tanh RNN, the
    /// per-gate one to the GRU, the jacobian one to both.
    pub fn applies(cell: CellKind, inversion: Inversion) -> bool {
        !matches!(
            (cell, inversion),
            (CellKind::Gru, Inversion::Analytic) | (CellKind::Tanh, Inversion::PerGate)
        )
    }
}
