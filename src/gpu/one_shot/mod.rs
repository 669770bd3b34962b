//! One-shot twins of the kernels, for the tests: each takes and returns what its CPU
//! reference does (plus the context), uploads, runs its kernel once and reads back, so a
//! test compares `gpu::one_shot::X` with `cpu::X` directly. Outputs are poisoned (NaN)
//! before the run, so an element a kernel fails to write cannot pass a comparison.
//!
//! The training path never calls these: `iteration` records the same dispatches into one
//! command buffer per step.

mod cells;
mod targets;
mod updates;

pub use cells::{
    bptt, bptt_with, forward, forward_with, gru_bptt, gru_bptt_with, gru_forward,
    gru_forward_gates, gru_forward_gates_with, head, head_steps,
};
pub use targets::{
    gru_per_gate_sweep, inverse_cg, jacobian_sweep, jvp, target_sweep, target_sweep_with, vjp,
};
pub use updates::{matmul, matmul_split, optimizer_step};

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::Hyper;
use crate::gpu::buffers::{poison, ModelBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{Head, Workspace};
use crate::gpu::layout::{unstack, Shape};
use crate::gpu::options::GpuOptions;
use crate::model::{CellKind, Params};
use crate::plan::{Plan, TargetSolve};
use crate::tasks::{Batch, Targets};
use crate::validate::{check_batch, check_param_shapes};

/// The buffers and launches of a whole iteration on `batch` at `params`, for a single run
/// of some of its kernels: the parameters' shapes and the batch checked, inputs uploaded,
/// outputs poisoned (also what `GpuBackend::trace` runs in).
pub(crate) fn workspace(
    ctx: &GpuContext,
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    options: GpuOptions,
) -> Result<(ModelBuffers, Workspace)> {
    check_param_shapes(params)?;
    check_batch(params, batch)?;
    let model = ModelBuffers::for_params(ctx, params)?;
    model.write_params(ctx, params)?;
    let ws = Workspace::new(ctx, &model, Shape::of(batch), hyper, options)?;
    ws.seq.write_batch(ctx, batch)?;
    poison_outputs(ctx, &model, &ws)?;
    Ok((model, ws))
}

/// Whether an iteration of `hyper` on `batch` with `options` runs TP-RI's backward pass in
/// one loop (sweep_bptt.wgsl): what the tests of that loop check before comparing it
/// with the two loops it replaces.
pub fn fused_backward(
    ctx: &GpuContext,
    params: &Params,
    batch: &Batch,
    hyper: &Hyper,
    options: GpuOptions,
) -> Result<bool> {
    let (_, ws) = workspace(ctx, params, batch, hyper, options)?;
    Ok(ws.fused_backward)
}

/// `workspace` on the inputs `x` (labels all 0), with the forward pass of the cell run:
/// where the twins of the kernels after it start.
fn after_forward(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    hyper: &Hyper,
    options: GpuOptions,
) -> Result<(ModelBuffers, Workspace)> {
    let b = x.first().map_or(0, |m| m.nrows());
    let batch = Batch {
        tokens: None,
        x: x.to_vec(),
        y: Targets::Labels(vec![0; b]),
    };
    let (model, ws) = workspace(ctx, params, &batch, hyper, options)?;
    ctx.submit(|pass| ws.forward.iter().for_each(|l| l.record(pass)))?;
    Ok((model, ws))
}

/// Reads `count` matrices `rows`×`cols` stacked in the f32 `buffer` from element `start`
/// on (the histories h and dv are read with `History::read`).
fn read_stack(
    ctx: &GpuContext,
    buffer: &wgpu::Buffer,
    start: usize,
    count: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<DMatrix<f64>>> {
    Ok(unstack(
        &ctx.read(buffer, start, count * rows * cols)?,
        rows,
        cols,
    ))
}

/// Poisons every output of an iteration (see `buffers::poison`).
fn poison_outputs(ctx: &GpuContext, model: &ModelBuffers, ws: &Workspace) -> Result<()> {
    let Shape { batch: b, steps: t } = ws.shape;
    let d = model.layout.dims.hidden;
    let g = model.layout.cell.gates();
    let seq = &ws.seq;
    seq.h.poison(ctx);
    seq.dv.poison(ctx);
    poison(ctx, &seq.delta, t * b * g * d);
    poison(ctx, &seq.cg_steps, t * b * 2);
    if model.layout.cell == CellKind::Gru {
        poison(ctx, &seq.dgi, t * b * 3 * d);
        poison(ctx, &seq.gates, t * b * 4 * d);
    }
    poison(ctx, &seq.err, t * b * d);
    // What a segment hands the next: a launch that read it unwritten would fail loudly.
    poison(ctx, &seq.carry, b * d);
    // g_T, or g at every step.
    poison(ctx, &seq.g_top, (seq.g_top.size() / 4) as usize);
    if let Head::EveryStep(h) = &ws.head {
        for buffer in [&h.logits, &h.row_stats, &h.step_stats] {
            poison(ctx, buffer, (buffer.size() / 4) as usize);
        }
    }
    poison(ctx, &seq.stats, 2);
    // A trained embedding table: the gathered inputs and the per-token sums of δ.
    if let Some(e) = &seq.embedding {
        let p = model.layout.dims.input;
        poison(ctx, &seq.x, t * b * p);
        poison(ctx, &e.sums, e.vocabulary * d);
    }
    for slot in model.layout.slots() {
        ctx.write(
            &model.grad,
            4 * slot.start as u64,
            &vec![f32::NAN; slot.len],
        );
    }
    poison(ctx, &model.cg.x, d * d);
    poison(ctx, &model.cg.columns, 3 * d);
    poison(ctx, &model.wt, g * d * d);
    if matches!(ws.plan, Plan::Tp(TargetSolve::PerGate { .. })) {
        let gates = model.gates(ctx)?;
        for ((w, wt), cg) in gates.w.iter().zip(&gates.wt).zip(&gates.cg) {
            for square in [w, wt, &cg.x] {
                poison(ctx, square, d * d);
            }
            poison(ctx, &cg.columns, 3 * d);
        }
        poison(ctx, &gates.pt, 3 * d * d);
    }
    if let Some((reverse, _)) = &ws.dtp {
        reverse.poison(ctx);
    }
    Ok(())
}
