//! Timing GPU iterations: one configuration at a time (`measure_gpu`), or several side by
//! side, one repetition of each in turn (`measure_gpu_side_by_side`), so that a machine
//! whose load changes during the run slows them alike.

use std::sync::Arc;

use anyhow::{Context, Result};

use super::{check_reps, gpu_label, median, problem, Case, Measurement, Size};
use crate::config::Method;
use crate::gpu::{GpuContext, GpuOptions, Phase, Profiler, GPU_CG_TOL};

/// One GPU configuration of a case being timed: its buffers and the samples so far.
struct Timing {
    ctx: Arc<GpuContext>,
    options: GpuOptions,
    size: Size,
    case: Case,
    prof: Profiler,
    phases: Vec<Phase>,
    samples: Vec<f64>,
    cpu_samples: Vec<f64>,
    per_phase: Vec<Vec<f64>>,
}

impl Timing {
    /// Builds the case's buffers with `options` and runs the warm-up iteration.
    fn new(ctx: &Arc<GpuContext>, size: Size, case: Case, options: GpuOptions) -> Result<Self> {
        size.workload(case)
            .check_gpu(&crate::gpu::gpu_limits(ctx, options.storage))?;
        let (params, batch, hyper) = problem(size, case, 1)?;
        let prof = Profiler::new(Arc::clone(ctx), &params, &batch, &hyper, options)?;
        let phases = Phase::of(case.method);
        prof.run(&phases, false)?; // warm-up: pipelines, caches, and the first P
        Ok(Self {
            ctx: Arc::clone(ctx),
            options,
            size,
            case,
            prof,
            per_phase: vec![Vec::new(); phases.len()],
            phases,
            samples: Vec::new(),
            cpu_samples: Vec::new(),
        })
    }

    /// One timed repetition: the whole iteration, then each phase alone.
    fn rep(&mut self) -> Result<()> {
        let cpu = process_cpu_s();
        self.samples.push(self.prof.run(&self.phases, true)?);
        if let (Some(before), Some(after)) = (cpu, process_cpu_s()) {
            self.cpu_samples.push(after - before);
        }
        for (phase, times) in self.phases.iter().zip(&mut self.per_phase) {
            times.push(self.prof.run(&[*phase], true)?);
        }
        Ok(())
    }

    fn finish(self) -> Result<Measurement> {
        let cg = match self.case.method {
            Method::Tp => self.prof.cg_report()?,
            Method::Bp | Method::Dtp => None,
        };
        Ok(Measurement {
            backend: gpu_label(self.options, self.ctx.f16_conversions()),
            storage: Some(self.options.storage),
            steps_per_dispatch: Some(self.options.steps_per_dispatch.to_string()),
            sequences_per_workgroup: Some(self.options.sequences_per_workgroup.to_string()),
            lanes_per_unit: Some(self.options.lanes_per_unit.to_string()),
            steps_per_block: Some(self.options.steps_per_block.to_string()),
            backward: Some(self.options.backward),
            cell: self.case.cell,
            method: self.case.method,
            inversion: self.case.inversion,
            precondition: self.case.precondition(),
            reg: self.case.tp_solve().map(|s| s.reg),
            cg_tol: self.case.tp_solve().map(|s| s.tol_or(GPU_CG_TOL)),
            cg_max_iter: self.case.tp_solve().map(|s| s.cg_max_iter),
            size: self.size,
            iteration_s: median(&self.samples),
            samples_s: self.samples,
            process_cpu_s: (!self.cpu_samples.is_empty()).then(|| median(&self.cpu_samples)),
            cpu_samples_s: self.cpu_samples,
            phases_s: self
                .phases
                .iter()
                .zip(&self.per_phase)
                .map(|(p, t)| (*p, median(t)))
                .collect(),
            cg_iterations: cg.map(|c| c.iterations),
            cg_solves: cg.map(|c| c.solves),
            cg_iterations_total: cg.map(|c| c.total_iterations),
            clock: if self.prof.device_timed() {
                "device timestamps"
            } else {
                "wall clock (submit to wait)"
            }
            .into(),
        })
    }
}

/// CPU seconds this process has used so far, all threads together, where Linux's
/// /proc/self/stat tells (utime + stime, in the 1/100 s ticks Linux reports there). A
/// software adapter's work is CPU time, which other jobs on a shared machine do not
/// inflate as they do the wall clock.
fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which may hold spaces, inside parentheses:
    // state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

/// Times `reps` iterations of `case` at `size` on the GPU, whole and phase by phase, with
/// the histories stored and the long loops split as `options` say.
pub fn measure_gpu(
    ctx: &Arc<GpuContext>,
    size: Size,
    case: Case,
    reps: usize,
    options: GpuOptions,
) -> Result<Measurement> {
    measure_gpu_side_by_side(&[(Arc::clone(ctx), options)], size, case, reps)?
        .pop()
        .context("one run gives one measurement")
}

/// `measure_gpu` for each of `runs` (a device and its options), side by side: each
/// repetition times every run once, in turn, so that the runs see the same machine.
/// Measurements come back in the order of `runs`.
pub fn measure_gpu_side_by_side(
    runs: &[(Arc<GpuContext>, GpuOptions)],
    size: Size,
    case: Case,
    reps: usize,
) -> Result<Vec<Measurement>> {
    check_reps(reps)?;
    let mut timings = runs
        .iter()
        .map(|(ctx, options)| Timing::new(ctx, size, case, *options))
        .collect::<Result<Vec<_>>>()?;
    for _ in 0..reps {
        for t in &mut timings {
            t.rep()?;
        }
    }
    timings.into_iter().map(Timing::finish).collect()
}
