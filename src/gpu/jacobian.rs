//! Generalized regularized inversion on the device (`shaders/jacobian.wgsl`; twin of
//! `src/cpu/jacobian.rs`): the Jacobian products `J_t u` and `J_tᵀ w` of either cell at the
//! states of the forward pass, and the docs/ALGORITHM.md §5 target sweep with a batched CG per step
//! inside it, fused over time.
//!
//! Stopping rule: each sequence's CG stops on its own relative residual
//! ‖R_s‖ / ‖J_tᵀ(v_t − h_t)_s‖ ≤ tol, where the reference stops the whole batch on
//! ‖R‖_F / ‖rhs‖_F ≤ tol (workgroups cannot wait for each other within a launch). The
//! per-sequence rule implies the batch rule, so every accepted GPU solve also meets the
//! reference's criterion; a sequence may stop after fewer iterations than the batch would
//! have run, which moves its target by at most about tol·cond(J_tᵀJ_t + rI) relative — far
//! below the 1e-4 of the comparisons at the default f32 tolerance and a sensible r.
//! Reports are per step the worst sequence (most iterations, largest residual), summed
//! over the steps as `CgReport::successive` does; a solve
//! that misses its tolerance is a `CgError` with those numbers, as on the CPU.
//!
//! Bounded segments: the sweep, up to (T − 1)·(cg_max_iter + 1) CG units per sequence, and
//! the solve for P, up to cg_max_iter + 1 per column, each run as a sequence of launches of
//! at most a quota of units (`segments`); a solve split between launches keeps its r, p and
//! scalars in the scratch part of `cg_steps` (see jacobian.wgsl).

use anyhow::Result;

use crate::cg::{CgError, CgReport};
use crate::config::{Preconditioner, TpConfig};
use crate::error::Error;
use crate::gpu::buffers::{per_item_groups, CgBuffers, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::readback::Region;
use crate::model::CellKind;
use crate::plan::TargetSolve;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    hidden: u32,
    cell: u32,
    step: u32,
    max_iter: u32,
    lr_target: f32,
    reg: f32,
    tol: f32,
    /// inverse_columns: start each column's CG from the P in the buffer.
    warm: u32,
    /// 1 in the first launch of a sweep or solve.
    first: u32,
    /// CG units one launch may spend.
    budget: u32,
    /// Where the solves' state starts in `cg_steps` (after the records).
    scratch: u32,
    /// 1: the sweep's CG is preconditioned by 1 / (diag(J_tᵀJ_t) + r).
    precondition: u32,
}

/// jacobian.wgsl's sticky record of failed solves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Failures {
    count: u32,
    worst_iterations: u32,
    /// f32 bits of the largest relative residual (NaN above +∞).
    worst_residual: u32,
}

/// jacobian.wgsl's `dims.cell`: which operator its CG solves with, the cell's Jacobian
/// J_t (the jacobian inversion, §5) or W alone on the linearized offsets
/// (v_t − h_t) ⊘ (1 − clamp(h_t)²) (the analytic inversion solved per step, or P).
pub(crate) fn operator_code(cell: CellKind, solve: TargetSolve) -> u32 {
    match (solve, cell) {
        (TargetSolve::Jacobian, CellKind::Tanh) => 0,
        (TargetSolve::Jacobian, CellKind::Gru) => 1,
        // The per-gate inversion solves for each P_g with W_g as the operator.
        (TargetSolve::PerStep | TargetSolve::FormP { .. } | TargetSolve::PerGate { .. }, _) => 2,
    }
}

/// The f32 CG tolerance of the per-step solves and of P (`GPU_CG_TOL` when `tp.cg_tol`
/// is `None`).
pub(crate) fn tolerance(tp: &TpConfig) -> f64 {
    tp.cg_tol.unwrap_or(crate::gpu::GPU_CG_TOL)
}

/// Whether the sweep's CG is preconditioned: the jacobian inversion's of `cell`, where
/// `tp.precondition` resolves to `Jacobi` for it (the per-step solves of the analytic
/// inversion are plain CG).
pub(crate) fn preconditioned(tp: &TpConfig, cell: CellKind, solve: TargetSolve) -> bool {
    matches!(solve, TargetSolve::Jacobian)
        && tp.precondition.resolve(cell) == Preconditioner::Jacobi
}

/// The uniform blocks of a segmented solve and their launches: `units` CG units in the
/// worst case, `quota` per launch; the first launch sets up, the others resume.
fn segment_blocks(base: Dims, units: usize, quota: usize) -> [(Dims, usize); 2] {
    let launches = units.div_ceil(quota.max(1)).max(1);
    let block = |first| Dims {
        first,
        budget: quota as u32,
        ..base
    };
    [(block(1), 1), (block(0), launches - 1)]
}

/// The sweep's launches: one workgroup per sequence, each launch spending at most `quota`
/// CG units, as many launches as (T − 1)·(cg_max_iter + 1) units need; reading W, Wᵀ
/// (written by the forward phase), h, the gates and g_T; writing dv [T+1, B, d], the
/// per-step CG statistics and the failure record.
pub(crate) fn sweep_dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, quota): (Shape, usize),
    tp: &TpConfig,
    solve: TargetSolve,
) -> Result<Dispatch> {
    let l = &model.layout;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        hidden: l.dims.hidden as u32,
        cell: operator_code(l.cell, solve),
        step: 0,
        max_iter: u32::try_from(tp.cg_max_iter).unwrap_or(u32::MAX),
        lr_target: tp.lr_target as f32,
        reg: tp.reg as f32,
        tol: tolerance(tp) as f32,
        warm: 0,
        first: 0,
        budget: 0,
        scratch: (shape.steps * shape.batch * 2) as u32,
        precondition: u32::from(preconditioned(tp, l.cell, solve)),
    };
    let units = (shape.steps - 1).saturating_mul(tp.cg_max_iter.saturating_add(1));
    Dispatch::repeated(
        ctx,
        &ctx.jacobian_kernels(l.dims.hidden)?.jacobian_sweep,
        &segment_blocks(dims, units, quota),
        &[
            (1, l.w.bind(&model.theta)),
            (2, model.wt.as_entire_binding()),
            // f32 histories only (`plan::Plan::check`).
            (3, seq.h.binding()),
            (4, seq.gates.as_entire_binding()),
            (5, seq.g_top.as_entire_binding()),
            (6, seq.dv.binding()),
            (7, seq.cg_steps.as_entire_binding()),
            (8, model.sweep_failures.as_entire_binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}

/// The solve for P = (WᵀW + rI)⁻¹Wᵀ of a d×d W (the analytic inversion's, or one gate
/// block's of the per-gate inversion): one workgroup per column of `cg.x`, from zero or
/// (`warm`) from the P in it, reading W and its transpose `wt`; per-column records go to
/// `cg.columns` for cg_check. Each launch spends at most `quota` CG units, as many
/// launches as cg_max_iter + 1 units need.
pub(crate) fn inverse_dispatch(
    ctx: &GpuContext,
    d: usize,
    [w, wt]: [wgpu::BindingResource<'_>; 2],
    cg: &CgBuffers,
    tp: &TpConfig,
    warm: bool,
    quota: usize,
) -> Result<Dispatch> {
    let dims = Dims {
        batch: d as u32,
        steps: 0,
        hidden: d as u32,
        cell: operator_code(CellKind::Tanh, TargetSolve::PerStep),
        step: 0,
        max_iter: u32::try_from(tp.cg_max_iter).unwrap_or(u32::MAX),
        lr_target: 0.0,
        reg: tp.reg as f32,
        tol: tolerance(tp) as f32,
        warm: u32::from(warm),
        first: 0,
        budget: 0,
        scratch: (3 * d) as u32,
        precondition: 0,
    };
    Dispatch::repeated(
        ctx,
        &ctx.jacobian_kernels(d)?.inverse_columns,
        &segment_blocks(dims, tp.cg_max_iter.saturating_add(1), quota),
        &[
            (1, w.clone()),
            (2, wt),
            // The linear cell reads neither states nor gates: any read-only buffer will do.
            (3, w.clone()),
            (4, w),
            (6, cg.x.as_entire_binding()),
            (7, cg.columns.as_entire_binding()),
        ],
        per_item_groups(ctx, d, "hidden size d (one CG workgroup per column of P)")?,
    )
}

/// Per solved step t = T … 2 (in that order, as `cpu::jacobian::jacobian_sweep` returns
/// them) the worst sequence's iterations and relative residual of the last sweep.
pub(crate) fn step_reports(
    ctx: &GpuContext,
    seq: &SeqBuffers,
    shape: Shape,
) -> Result<Vec<CgReport>> {
    let words = ctx.read::<u32>(&seq.cg_steps, 0, shape.steps * shape.batch * 2)?;
    Ok(step_reports_from(&words, shape))
}

/// `step_reports` from the words of the per-step statistics [T, B, 2].
fn step_reports_from(words: &[u32], shape: Shape) -> Vec<CgReport> {
    let Shape { batch: b, steps: t } = shape;
    let stats: Vec<f32> = words.iter().map(|&w| f32::from_bits(w)).collect();
    (2..=t)
        .rev()
        .map(|step| {
            let rows = &stats[(step - 1) * b * 2..step * b * 2];
            CgReport::worst(
                rows.chunks_exact(2)
                    .map(|s| CgReport::one(s[0] as usize, f64::from(s[1]))),
            )
        })
        .collect()
}

/// Where the sweep's failure record and per-step statistics are, for a `Readback`.
pub(crate) fn report_regions<'a>(
    model: &'a ModelBuffers,
    seq: &'a SeqBuffers,
    shape: Shape,
) -> [Region<'a>; 2] {
    [
        Region::new(&model.sweep_failures, 0, 3),
        Region::new(&seq.cg_steps, 0, shape.steps * shape.batch * 2),
    ]
}

/// The last sweep's steps (`CgReport::successive`), or the worst failed solve since the last call as a
/// `CgError` (the failure record is then cleared). Waits for the device.
pub(crate) fn report(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    tp: &TpConfig,
) -> Result<CgReport> {
    let [failures, steps] = report_regions(model, seq, shape);
    let failures = ctx.read::<u32>(failures.buffer, 0, failures.words)?;
    let steps = ctx.read::<u32>(steps.buffer, 0, steps.words)?;
    report_from(ctx, model, [&failures, &steps], shape, tp)
}

/// `report` from the words of `report_regions`, read back already.
pub(crate) fn report_from(
    ctx: &GpuContext,
    model: &ModelBuffers,
    [failures, steps]: [&[u32]; 2],
    shape: Shape,
    tp: &TpConfig,
) -> Result<CgReport> {
    let f: Failures = bytemuck::pod_read_unaligned(bytemuck::cast_slice(failures));
    if f.count > 0 {
        ctx.write(&model.sweep_failures, 0, &[Failures::default()]);
        return Err(Error::from(CgError {
            report: CgReport::one(
                f.worst_iterations as usize,
                f64::from(f32::from_bits(f.worst_residual)),
            ),
            tol: tolerance(tp),
            max_iter: tp.cg_max_iter,
        })
        .into());
    }
    Ok(CgReport::successive(step_reports_from(steps, shape)))
}

/// `J_t u` (`transpose` false) or `J_tᵀ u` for every row of `input` [B, d] into `output`,
/// at the states (and gates) of the forward pass in `seq`: jacobian.wgsl's `jvp` and `vjp`
/// entry points, each binding only what it reads (Wᵀ for J u, W for Jᵀ w).
pub(crate) fn product_dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    step: usize,
    transpose: bool,
    [input, output]: [&wgpu::Buffer; 2],
) -> Result<Dispatch> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let dims = Dims {
        batch: shape.batch as u32,
        steps: shape.steps as u32,
        hidden: d as u32,
        cell: operator_code(l.cell, TargetSolve::Jacobian),
        step: step as u32,
        max_iter: 0,
        lr_target: 0.0,
        reg: 0.0,
        tol: 0.0,
        warm: 0,
        first: 0,
        budget: 0,
        scratch: 0,
        precondition: 0,
    };
    let kernels = ctx.jacobian_kernels(d)?;
    let (pipeline, weights) = if transpose {
        (&kernels.vjp, (1, l.w.bind(&model.theta)))
    } else {
        (&kernels.jvp, (2, model.wt.as_entire_binding()))
    };
    Dispatch::new(
        ctx,
        pipeline,
        &dims,
        &[
            weights,
            (3, seq.h.binding()),
            (4, seq.gates.as_entire_binding()),
            (9, input.as_entire_binding()),
            (10, output.as_entire_binding()),
        ],
        per_item_groups(ctx, shape.batch, "batch size B")?,
    )
}
