//! What a conjugate-gradient solve reports, on either backend: the numbers of a solve
//! (`CgReport`) and the error a solve that missed its tolerance becomes (`CgError`).
//! The solves themselves are `cpu::batched_cg` (for `cpu::inverse`, `cpu::target_sweep`
//! and `cpu::jacobian`) and `shaders/jacobian.wgsl`
//! (docs/ALGORITHM.md §4, §5).

/// How a CG solve went, or a run of solves (the per-step sweep's steps, the per-gate
/// inversion's three P_g): the worst solve's iterations and residual, and how much work
/// they took together.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgReport {
    /// Iterations run (the most of any solve).
    pub iterations: usize,
    /// Final relative residual: ‖R‖_F / ‖B‖_F of the whole solve (forming P: B = Wᵀ), or
    /// for solves stopped sequence by sequence (the per-step ones), the largest sequence's
    /// ‖r_s‖ / ‖b_s‖.
    pub residual: f64,
    /// Solves that ran at least one iteration. A per-step sweep's step whose right-hand
    /// side is exactly zero (the displacement carried back has rounded away) costs nothing
    /// and is not counted: this count, not `iterations`, is what the sweep's cost follows
    /// (docs/ALGORITHM.md §5).
    #[serde(default)]
    pub solves: usize,
    /// Iterations summed over the solves (`iterations` for one solve); for the per-step
    /// sweep, each step's count is its slowest sequence's.
    #[serde(default)]
    pub total_iterations: usize,
}

impl CgReport {
    /// The report of one solve that ran `iterations` and stopped at `residual`.
    pub fn one(iterations: usize, residual: f64) -> CgReport {
        CgReport {
            iterations,
            residual,
            solves: usize::from(iterations > 0),
            total_iterations: iterations,
        }
    }

    /// The same solves seen from two sets of columns (two groups of sequences of a step,
    /// two sequences): the larger of each field (a NaN residual is the worst of all).
    pub fn worse(self, other: CgReport) -> CgReport {
        CgReport {
            iterations: self.iterations.max(other.iterations),
            residual: larger_residual(self.residual, other.residual),
            solves: self.solves.max(other.solves),
            total_iterations: self.total_iterations.max(other.total_iterations),
        }
    }

    /// `worse` over all `reports`; zeros when there are none.
    pub fn worst(reports: impl IntoIterator<Item = CgReport>) -> CgReport {
        reports
            .into_iter()
            .fold(CgReport::one(0, 0.0), CgReport::worse)
    }

    /// The reports of groups of sequences that ran the same solves in the same order (the
    /// CPU's core groups of a sweep), solve by solve: each solve's worst over the groups,
    /// which is what it reports over all the sequences, whatever the split.
    pub fn worst_by_solve(groups: impl IntoIterator<Item = Vec<CgReport>>) -> Vec<CgReport> {
        let mut groups = groups.into_iter();
        let mut solves = groups.next().unwrap_or_default();
        for group in groups {
            for (all, r) in solves.iter_mut().zip(group) {
                *all = all.worse(r);
            }
        }
        solves
    }

    /// Solves run one after another (the steps of a sweep, the three P_g): the most
    /// iterations and the largest residual of any, their solves and iterations summed.
    pub fn successive(reports: impl IntoIterator<Item = CgReport>) -> CgReport {
        reports
            .into_iter()
            .fold(CgReport::one(0, 0.0), |a, b| CgReport {
                iterations: a.iterations.max(b.iterations),
                residual: larger_residual(a.residual, b.residual),
                solves: a.solves.saturating_add(b.solves),
                total_iterations: a.total_iterations.saturating_add(b.total_iterations),
            })
    }
}

/// The larger residual, NaN if either is (`f64::max` would pass over it).
fn larger_residual(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
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

#[cfg(test)]
mod tests {
    use super::CgReport;

    #[test]
    fn reports_combine_as_their_solves_ran() {
        let (a, b, idle) = (
            CgReport::one(4, 1e-6),
            CgReport::one(7, 1e-8),
            CgReport::one(0, 0.0),
        );
        assert_eq!((a.solves, a.total_iterations), (1, 4));
        assert_eq!((idle.solves, idle.total_iterations), (0, 0));
        // One after another: the work adds up, the worst solve's numbers stay.
        let steps = CgReport::successive([a, idle, b]);
        assert_eq!(
            (
                steps.iterations,
                steps.residual,
                steps.solves,
                steps.total_iterations
            ),
            (7, 1e-6, 2, 11)
        );
        // The same steps seen from two groups of sequences: nothing adds up.
        let both = steps.worse(CgReport::successive([b, b]));
        assert_eq!((both.solves, both.total_iterations), (2, 14));
        assert!(CgReport::successive([a, CgReport::one(1, f64::NAN)])
            .residual
            .is_nan());
        assert_eq!(CgReport::successive([]), idle);
        assert_eq!(CgReport::worst([]), idle);
    }
}
