//! What a conjugate-gradient solve reports, on either backend: the numbers of a solve
//! (`CgReport`) and the error a solve that missed its tolerance becomes (`CgError`).
//! The solves themselves are `cpu::batched_cg` (for `cpu::inverse`, `cpu::target_sweep`
//! and `cpu::jacobian`) and `shaders/jacobian.wgsl`
//! (docs/ALGORITHM.md §4, §5).

/// How a CG solve went.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgReport {
    /// Iterations run.
    pub iterations: usize,
    /// Final relative residual: ‖R‖_F / ‖B‖_F of the whole solve (forming P: B = Wᵀ), or
    /// for solves stopped sequence by sequence (the per-step ones), the largest sequence's
    /// ‖r_s‖ / ‖b_s‖.
    pub residual: f64,
}

impl CgReport {
    /// The larger of two reports in each field (most iterations, largest residual; a NaN
    /// residual is the worst of all).
    pub fn worse(self, other: CgReport) -> CgReport {
        let residual = if self.residual.is_nan() || other.residual.is_nan() {
            f64::NAN
        } else {
            self.residual.max(other.residual)
        };
        CgReport {
            iterations: self.iterations.max(other.iterations),
            residual,
        }
    }

    /// `worse` over all `reports`; zeros when there are none.
    pub fn worst(reports: impl IntoIterator<Item = CgReport>) -> CgReport {
        let none = CgReport {
            iterations: 0,
            residual: 0.0,
        };
        reports.into_iter().fold(none, CgReport::worse)
    }
}

/// A CG solve that missed its tolerance: the caller sees the numbers, never a bad P.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgError {
    /// Where the solve stopped (for a batch of solves, the worst of them).
    pub report: CgReport,
    /// The relative-residual tolerance it missed.
    pub tol: f64,
    /// The cap on iterations it ran into.
    pub max_iter: usize,
}

impl std::fmt::Display for CgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CG for the regularized inverse did not converge: relative residual {:.3e} after {} \
             iterations (tolerance {:.1e}, cap {}); raise Hyper::tp.cg_max_iter or Hyper::tp.reg, or \
             loosen Hyper::tp.cg_tol",
            self.report.residual, self.report.iterations, self.tol, self.max_iter
        )
    }
}

impl std::error::Error for CgError {}

/// The report of a CG solve that met `tol`, or the `CgError` carrying its numbers (which
/// the library raises as [`crate::Error::NotConverged`]). A residual that turned NaN on
/// the way (a NaN warm start) is a failure too.
pub fn check_converged(report: CgReport, tol: f64, max_iter: usize) -> Result<CgReport, CgError> {
    if report.residual.is_nan() || report.residual > tol {
        return Err(CgError {
            report,
            tol,
            max_iter,
        });
    }
    Ok(report)
}
