//! Benchmarks of whole iterations and of their phases, and the cost model beside them
//! (what `tpri bench` prints and the criterion benchmarks reuse).
//!
//! A *case* is one problem size (T, d, B, p, q), cell and method (for TP-RI, with its
//! inversion: [`Case`]). Its problem is synthetic and
//! seeded: an orthogonal W pulled off orthogonality so that CG has real work to do (an
//! orthogonal W makes WᵀW + rI a multiple of I, and CG converge in one iteration), inputs
//! uniform in [−1, 1], class labels. Timings are medians over repetitions after one
//! warm-up iteration; every repetition includes the optimizer step, so W moves a little
//! between iterations and the solves see what they see in training: on the GPU the solve
//! for P starts from the last P, as in training; the CPU reference starts every solve from
//! zero (docs/ALGORITHM.md §4), and the per-step solves start from zero on both.

use std::time::Instant;

use anyhow::Result;
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::Backend;
use crate::config::{
    Hyper, Inversion, Method, OptimizerConfig, Preconditioner, Solver, TpConfig, CPU_CG_TOL,
};
use crate::cpu::CpuBackend;
use crate::error::Error;
use crate::gpu::{
    Backward, F16Conversions, GpuOptions, LanesPerUnit, Phase, SequencesPerWorkgroup,
    StepsPerBlock, StepsPerDispatch, Storage,
};
use crate::limits::{FieldNames, Workload};
use crate::model::{CellKind, Dims, Params};
use crate::tasks::{Batch, Targets};

mod case;
mod cost_model;
mod gpu;

pub use case::{Case, Solve, BENCH_REG};
pub use cost_model::{
    cost_model, cost_model_per_step, fused_backward, sequences_per_workgroup, Bound, Machine,
    PhaseCost,
};
pub use gpu::{measure_gpu, measure_gpu_side_by_side};

/// One problem size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Size {
    /// Sequence length T.
    pub steps: usize,
    /// Hidden size d.
    pub hidden: usize,
    /// Batch size B.
    pub batch: usize,
    /// Input size p.
    pub input: usize,
    /// Classes q.
    pub output: usize,
}

impl Size {
    /// The published pixel-MNIST setting: T = 784, d = 100, B = 16, p = 1, q = 10.
    pub const PAPER: Size = Size {
        steps: 784,
        hidden: 100,
        batch: 16,
        input: 1,
        output: 10,
    };

    fn dims(&self) -> Dims {
        Dims {
            input: self.input,
            hidden: self.hidden,
            output: self.output,
        }
    }

    /// The sizes of `case`'s problem at this size (settings as [`problem`]'s), named as
    /// `Size`'s fields in messages.
    pub fn workload(&self, case: Case) -> Workload {
        Workload {
            names: &SIZE_NAMES,
            ..Workload::new(
                case.cell,
                self.dims(),
                self.steps,
                self.batch,
                &settings(case),
            )
        }
    }
}

/// `Size`'s fields, as messages name them.
const SIZE_NAMES: FieldNames = FieldNames {
    input: "Size::input",
    hidden: "Size::hidden",
    output: "Size::output",
    steps: "Size::steps",
    batch: "Size::batch",
    eval_size: "held-out sequences",
};

/// Refuses 0 repetitions.
pub(crate) fn check_reps(reps: usize) -> Result<()> {
    if reps == 0 {
        return Err(
            Error::setting("reps", "at least one timed repetition is needed, got 0").into(),
        );
    }
    Ok(())
}

/// The settings of a case's problem: γ_h = 0.01, the case's r, the case's inversion (for BPTT,
/// unused: the cell's bench inversion), and SGD steps small enough not to diverge but large
/// enough that W keeps moving, so that the GPU's warm-started CG does the work it does in
/// training (two iterations at the paper's size): 1e-3 for the tanh RNN, the published 0.1
/// for the GRU, whose TP-RI inverts gate by gate as the published code does by default
/// here (at 1e-3 its W_g moved too little for a warm solve to take a single iteration).
fn settings(case: Case) -> Hyper {
    let lr = match case.cell {
        CellKind::Tanh => 1e-3,
        CellKind::Gru => 1e-1,
    };
    let inversion = case
        .inversion
        .unwrap_or_else(|| Case::bench_inversion(case.cell));
    Hyper {
        method: case.method,
        tp: TpConfig {
            lr_target: 1e-2,
            reg: case.solve.reg,
            cg_tol: case.solve.cg_tol,
            cg_max_iter: case.solve.cg_max_iter,
            precondition: case.solve.precondition,
            inversion,
            ..TpConfig::default()
        },
        opt: OptimizerConfig {
            lr,
            ..OptimizerConfig::default()
        },
        ..Hyper::default()
    }
}

/// The seeded synthetic problem of a case: parameters, one batch, settings. The sizes
/// are checked as `Size::workload(cell, method).check_cpu()` checks them (0, or too large
/// to allocate), before anything is allocated. The GRU starts from PyTorch's
/// initialisation, whose W_g are far from orthogonal already.
pub fn problem(size: Size, case: Case, seed: u64) -> Result<(Params, Batch, Hyper)> {
    size.workload(case).check_cpu()?;
    let cell = case.cell;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut uniform = |rows: usize, cols: usize, scale: f64| {
        DMatrix::from_fn(rows, cols, |_, _| rng.random_range(-scale..=scale))
    };
    let d = size.hidden;
    let mut params = Params::init_of(cell, size.dims(), seed)?;
    if cell == CellKind::Tanh {
        params.w_hh = &params.w_hh * 0.9 + uniform(d, d, 0.5 / (d as f64).sqrt());
    }
    let x = (0..size.steps)
        .map(|_| uniform(size.batch, size.input, 1.0))
        .collect();
    let y = Targets::Labels((0..size.batch).map(|s| s % size.output.max(1)).collect());
    Ok((params, Batch { x, y, tokens: None }, settings(case)))
}

/// The median of `samples` (the mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Timings of one case on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// `gpu`, `gpu-f16` (histories stored in f16, native conversions), `gpu-f16-int`
    /// (integer conversions) or `cpu`.
    pub backend: String,
    /// GPU only: how the histories h and v − h were stored.
    pub storage: Option<Storage>,
    /// GPU only: how long loops were split into launches (`auto`, or K).
    pub steps_per_dispatch: Option<String>,
    /// GPU only: sequences per workgroup of the tanh time loops asked for (`auto`, or
    /// a count).
    pub sequences_per_workgroup: Option<String>,
    /// GPU only: lanes per unit of the tanh time loops asked for (`auto`, or a count).
    pub lanes_per_unit: Option<String>,
    /// GPU only: most steps per block of the tanh time loops asked for (`auto`, or a
    /// count).
    pub steps_per_block: Option<String>,
    /// GPU only: TP-RI's backward pass asked for (`fused` runs one loop where it applies).
    pub backward: Option<Backward>,
    /// The recurrent cell.
    pub cell: CellKind,
    /// TP-RI or BPTT.
    pub method: Method,
    /// TP-RI's inversion (`None` for BPTT).
    pub inversion: Option<Inversion>,
    /// The jacobian inversion's preconditioner (`None` for the other inversions and BPTT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Preconditioner>,
    /// TP-RI's regularization r (`None` for BPTT).
    pub reg: Option<f64>,
    /// TP-RI's CG tolerance, as the backend applied it (`None` for BPTT).
    pub cg_tol: Option<f64>,
    /// TP-RI's cap on CG iterations (`None` for BPTT).
    pub cg_max_iter: Option<usize>,
    /// The sizes timed.
    pub size: Size,
    /// Median seconds of one whole iteration (optimizer step included).
    pub iteration_s: f64,
    /// Every sample behind `iteration_s`.
    pub samples_s: Vec<f64>,
    /// GPU on Linux: median CPU seconds the whole process (a software adapter's threads
    /// included) used per iteration — on a software adapter, robust to a shared machine.
    pub process_cpu_s: Option<f64>,
    /// Every sample behind `process_cpu_s`, in the order of `samples_s`.
    pub cpu_samples_s: Vec<f64>,
    /// GPU only: median seconds of each phase submitted alone.
    pub phases_s: Vec<(Phase, f64)>,
    /// TP: CG iterations of the last timed iteration's solve (the most of any solve, where the
    /// iteration runs several: the per-step sweep's steps, the GRU's three P_g).
    pub cg_iterations: Option<usize>,
    /// TP: the solves of that iteration that ran at least one CG iteration (the jacobian
    /// inversion's solved steps; docs/ALGORITHM.md §5, "The report").
    pub cg_solves: Option<usize>,
    /// TP: their CG iterations summed (what the per-step sweep's time follows).
    pub cg_iterations_total: Option<usize>,
    /// How times were taken: `device timestamps`, `wall clock (submit to wait)` or
    /// `wall clock`.
    pub clock: String,
}

/// The `backend` label of GPU measurements with `options` on a device whose f16 storage
/// converts as `conversions` says: `gpu`, `gpu-f16` (native conversions) or `gpu-f16-int`,
/// followed by `-kK` when the long loops ran at most K steps per launch and `-sS` when the
/// tanh time loops carried S sequences per workgroup, `-lL` with L lanes per unit, `-bK`
/// with blocks of at most K steps and `-separate` with TP-RI's backward pass in two loops
/// (no suffix for the defaults).
pub fn gpu_label(options: GpuOptions, conversions: F16Conversions) -> String {
    let storage = match (options.storage, conversions) {
        (Storage::F32, _) => "gpu",
        (Storage::F16, F16Conversions::Native) => "gpu-f16",
        (Storage::F16, F16Conversions::Integer) => "gpu-f16-int",
    };
    let steps = match options.steps_per_dispatch {
        StepsPerDispatch::Auto => String::new(),
        StepsPerDispatch::Fixed(k) => format!("-k{k}"),
    };
    let seqs = match options.sequences_per_workgroup {
        SequencesPerWorkgroup::Auto => String::new(),
        SequencesPerWorkgroup::Fixed(b) => format!("-s{b}"),
    };
    let lanes = match options.lanes_per_unit {
        LanesPerUnit::Auto => String::new(),
        LanesPerUnit::Fixed(l) => format!("-l{l}"),
    };
    let blocks = match options.steps_per_block {
        StepsPerBlock::Auto => String::new(),
        StepsPerBlock::Fixed(k) => format!("-b{k}"),
    };
    let backward = match options.backward {
        Backward::Fused => "",
        Backward::Separate => "-separate",
    };
    format!("{storage}{steps}{seqs}{lanes}{blocks}{backward}")
}

/// Times `reps` training steps of `case` at `size` on the f64 CPU reference.
pub fn measure_cpu(size: Size, case: Case, reps: usize) -> Result<Measurement> {
    time_cpu(size, case, reps, None)
}

/// `measure_cpu` of the tanh RNN's TP-RI with P applied as `solver` says: how `tpri bench
/// --crossover` times forming P against per-step solves.
pub fn measure_cpu_solver(
    size: Size,
    reps: usize,
    solver: Solver,
    solve: Solve,
) -> Result<Measurement> {
    let case = Case::of(CellKind::Tanh, Method::Tp).with_solve(solve);
    time_cpu(size, case, reps, Some(solver))
}

/// `measure_cpu` with P applied as `solver` says (the problem's, `auto`, when `None`).
fn time_cpu(size: Size, case: Case, reps: usize, solver: Option<Solver>) -> Result<Measurement> {
    check_reps(reps)?;
    let (params, batch, mut hyper) = problem(size, case, 1)?;
    if let Some(solver) = solver {
        hyper.tp.solver = solver;
    }
    let mut cpu = CpuBackend::new();
    cpu.load(&params, None, &hyper)?;
    cpu.step(&batch)?; // warm-up
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        cpu.step(&batch)?;
        samples.push(start.elapsed().as_secs_f64());
    }
    let cg = cpu.last_stats()?.cg;
    Ok(Measurement {
        backend: "cpu".into(),
        storage: None,
        steps_per_dispatch: None,
        sequences_per_workgroup: None,
        lanes_per_unit: None,
        steps_per_block: None,
        backward: None,
        cell: case.cell,
        method: case.method,
        inversion: case.inversion,
        precondition: case.precondition(),
        reg: case.tp_solve().map(|s| s.reg),
        cg_tol: case.tp_solve().map(|s| s.tol_or(CPU_CG_TOL)),
        cg_max_iter: case.tp_solve().map(|s| s.cg_max_iter),
        size,
        iteration_s: median(&samples),
        samples_s: samples,
        process_cpu_s: None,
        cpu_samples_s: Vec::new(),
        phases_s: Vec::new(),
        cg_iterations: cg.map(|c| c.iterations),
        cg_solves: cg.map(|c| c.solves),
        cg_iterations_total: cg.map(|c| c.total_iterations),
        clock: "wall clock".into(),
    })
}

/// Least-squares line y ≈ a + b x and its coefficient of determination R².
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Fit {
    /// a, the value at x = 0.
    pub intercept: f64,
    /// b, the increase per unit of x.
    pub slope: f64,
    /// R², the share of the variance of y the line explains.
    pub r2: f64,
}

/// Fits `points` (x, y) by least squares; `None` with fewer than two distinct x.
pub fn fit_line(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_res: f64 = points
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    Some(Fit {
        intercept,
        slope,
        r2: if syy > 0.0 { 1.0 - ss_res / syy } else { 1.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_fit() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let f = fit_line(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]).unwrap();
        assert!((f.slope - 2.0).abs() < 1e-12 && (f.intercept - 1.0).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        assert!(fit_line(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
