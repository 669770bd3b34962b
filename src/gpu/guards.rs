//! Refusals of shapes an adapter would run wrongly: llvmpipe's silent cap on loop
//! iterations per invocation, and the loop-count model of every kernel behind it (the one
//! place that models them).

use anyhow::Result;

use crate::config::Hyper;
use crate::error::Error;
use crate::gpu::context::GpuContext;
use crate::gpu::layout::{ParamLayout, Shape};
use crate::model::CellKind;
use crate::plan::{Plan, TargetSolve};

/// Loop iterations llvmpipe (Mesa's software Vulkan driver) lets one invocation run in
/// total, over all its loops, before it silently cuts them short (gallivm's loop limiter,
/// present at least up to Mesa 22.3).
const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// Upper estimates of the loop iterations one invocation of each kernel of an iteration
/// runs, by kernel: what llvmpipe's loop limiter counts.
/// - the time loops of forward, gru_forward, target_sweep and bptt: T steps of an
///   eight-term dot product over d, the inputs, and the copies;
/// - gru_bptt: T steps of three such dot products (Wᵀ dgh, one gate block at a time);
/// - the jacobian sweep: T − 1 steps of up to `cg_max_iter` CG iterations, each two
///   Jacobian products and two workgroup sums (`jacobian::sweep_loops`);
/// - the solve for P: one such solve per column (`jacobian::inverse_loops`), and the same
///   for each gate's P_g of the per-gate inversion;
/// - the per-gate sweep: T − 1 steps of the direct term, three brackets with their
///   eight-term dot products over d, and the copy of dv_{t−1};
/// - the reductions over T·B rows (16 rows per stage, about 24 loop iterations each);
/// - DTP: dtp_reverse (one column, two dot products) and dtp_targets (T − 1 steps of two
///   dot products over d, the inputs, and the copies).
pub(crate) fn loop_counts(
    layout: &ParamLayout,
    shape: Shape,
    plan: Plan,
    cg_max_iter: usize,
) -> Vec<(&'static str, usize)> {
    let (d, p) = (layout.dims.hidden, layout.dims.input);
    let units = d.div_ceil(256);
    let dot = d / 8 + 8;
    // + 3: the inputs' and the copies' loops, and the storing of a history row.
    let time_loop = shape.steps * (units * (dot + p) + 3);
    let gru = layout.cell == CellKind::Gru;
    let mut counts = vec![
        ("forward pass", time_loop),
        ("reductions", (shape.steps * shape.batch).div_ceil(16) * 24),
        if gru {
            (
                "GRU backward recursion",
                shape.steps * (units * (3 * dot + 7) + 2),
            )
        } else {
            ("backward recursion", time_loop)
        },
    ];
    if plan == Plan::Dtp {
        counts.extend([
            // One column per workgroup: two products and the inputs' loops, no time loop.
            ("DTP reverse layer", units * (2 * dot + 2 * p + 3)),
            (
                "DTP target sweep",
                shape.steps * (units * (2 * dot + p + 2) + 2),
            ),
        ]);
    }
    match plan.targets() {
        None => {}
        Some(TargetSolve::FormP { .. }) => counts.extend([
            (
                "solve for P (counting cg_max_iter CG iterations)",
                inverse_loops(d, cg_max_iter),
            ),
            ("target sweep", time_loop),
        ]),
        Some(TargetSolve::PerStep) => counts.push((
            "per-step target sweep (counting cg_max_iter CG iterations at every step)",
            sweep_loops(false, d, shape.steps, cg_max_iter),
        )),
        Some(TargetSolve::Jacobian) => counts.push((
            "jacobian target sweep (counting cg_max_iter CG iterations at every step)",
            sweep_loops(gru, d, shape.steps, cg_max_iter),
        )),
        Some(TargetSolve::PerGate { .. }) => counts.extend([
            (
                "solve for each gate's P_g (counting cg_max_iter CG iterations)",
                inverse_loops(d, cg_max_iter),
            ),
            (
                "per-gate target sweep",
                units + shape.steps * (units * (3 * (dot + 1) + 2) + 6),
            ),
        ]),
    }
    counts
}

/// Loop iterations of one invocation of seq_head.wgsl's kernels (the heads at every step)
/// at most: `softmax_rows` walks its row three times in strides of 256 and reduces it
/// twice (eight tree levels each); `step_stats` sums B rows for each of its steps, then
/// the T steps. The products around them are the reductions' matmul, over at most T·B
/// rows.
pub(crate) fn every_step_loops(layout: &ParamLayout, shape: Shape) -> [(&'static str, usize); 2] {
    let q = layout.dims.output;
    [
        ("heads at every step (softmax)", 3 * q.div_ceil(256) + 16),
        (
            "heads at every step (per-step losses)",
            shape.steps.div_ceil(256) * shape.batch + shape.steps,
        ),
    ]
}

/// Loop iterations of one invocation of jacobian.wgsl's sweep at most: `units` owned
/// units, `dot` iterations per dot product over d, T − 1 solved steps of `max_iter` CG
/// iterations each. Derived from jacobian.wgsl's loops: per CG iteration two products
/// (with `gru`, the GRU's three gate blocks in the transposed one), two workgroup sums
/// (eight tree levels each) and the vector updates; per step the right-hand side.
pub(crate) fn sweep_loops(gru: bool, d: usize, steps: usize, max_iter: usize) -> usize {
    // jacobian.wgsl's workgroup size gives each unit its own invocation up to d = 256 and
    // takes 256 beyond; smaller workgroups only shorten the workgroup sums counted below.
    let units = d.div_ceil(256);
    let dot = units * (d / 8 + d % 8);
    let (iteration, step) = if gru {
        (4 * dot + 17 * units + 20, 3 * dot + 13 * units + 12)
    } else {
        (2 * dot + 10 * units + 17, dot + 6 * units + 9)
    };
    units + steps.saturating_sub(1) * (step + max_iter * iteration)
}

/// Loop iterations of one invocation of `inverse_columns` at most: one solve, with the
/// warm start's extra product (see `sweep_loops`).
pub(crate) fn inverse_loops(d: usize, max_iter: usize) -> usize {
    sweep_loops(false, d, 2, max_iter + 1)
}

/// On llvmpipe, refuses shapes whose kernels would run into its loop limiter: the results
/// would be wrong without any error. The counts are `loop_counts`.
pub(crate) fn check_llvmpipe_loops(
    ctx: &GpuContext,
    layout: &ParamLayout,
    shape: Shape,
    plan: Plan,
    hyper: &Hyper,
) -> Result<()> {
    if !ctx.info.name.contains("llvmpipe") {
        return Ok(());
    }
    let mut counts = loop_counts(layout, shape, plan, hyper.tp.cg_max_iter);
    if hyper.loss.every_step() {
        counts.extend(every_step_loops(layout, shape));
    }
    let (kernel, worst) = counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .expect("every iteration has kernels");
    if worst > LLVMPIPE_LOOP_LIMIT {
        let (d, p) = (layout.dims.hidden, layout.dims.input);
        return Err(Error::DeviceLimit {
            limit: "llvmpipe loop limit".into(),
            needed: Some(worst as u64),
            allowed: LLVMPIPE_LOOP_LIMIT as u64,
            message: format!(
                "T = {}, B = {}, d = {d}, p = {p} needs about {worst} loop iterations in one GPU \
                 invocation of the {kernel}; llvmpipe (software Vulkan) stops every invocation \
                 after {LLVMPIPE_LOOP_LIMIT} without an error, so its results would be wrong. Use \
                 a real GPU or the CPU backend, or shorter sequences, smaller batches, or (for \
                 the CG solves) a lower Hyper::tp.cg_max_iter",
                shape.steps, shape.batch
            ),
        }
        .into());
    }
    Ok(())
}
