//! Twins of the target computations: `cpu::inverse::inverse_cg`, `cpu::target_sweep`,
//! `cpu::jacobian` (its products and its sweep) and `cpu::gru_per_gate`'s sweep.

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use super::{after_forward, workspace};
use crate::arguments::{matrix as matrix_arg, steps};
use crate::cg::CgReport;
use crate::config::{Hyper, Inversion, Method, Preconditioner, TargetMode, TpConfig};
use crate::gpu::buffers::{poison, ModelBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::inverse::Cg;
use crate::gpu::jacobian::{self, report, step_reports};
use crate::gpu::layout::{matrix, rows_f32};
use crate::gpu::loops;
use crate::gpu::options::GpuOptions;
use crate::gpu::segments::{Segmenting, StepsPerDispatch};
use crate::gpu::transpose;
use crate::model::{CellKind, Dims, Params, GRU_GATES};
use crate::tasks::{Batch, Targets};

/// P by CG on the GPU, as `cpu::inverse::inverse_cg` returns it (`warm` seeds the solve).
pub fn inverse_cg(
    ctx: &GpuContext,
    w: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    warm: Option<&DMatrix<f64>>,
) -> Result<(DMatrix<f64>, CgReport)> {
    anyhow::ensure!(
        reg > 0.0,
        "regularization r must be positive for CG, got {reg}"
    );
    let d = w.nrows();
    anyhow::ensure!(w.ncols() == d, "W must be square, got {:?}", w.shape());
    let dims = Dims {
        input: 1,
        hidden: d,
        output: 1,
    };
    let model = ModelBuffers::new(ctx, CellKind::Tanh, dims)?;
    model.write_params(
        ctx,
        &Params {
            w_hh: w.clone(),
            ..Params::zeros(dims)?
        },
    )?;
    if let Some(p) = warm {
        matrix_arg("warm", p, d, d)?;
    }
    match warm {
        Some(p) => ctx.write(&model.cg.x, 0, &rows_f32(p)),
        None => poison(ctx, &model.cg.x, d * d),
    }
    poison(ctx, &model.cg.columns, 3 * d);
    let tp = TpConfig {
        reg,
        cg_tol: Some(tol),
        cg_max_iter: max_iter,
        ..TpConfig::default()
    };
    let wt = transpose::dispatch(
        ctx,
        model.layout.w.bind(&model.theta),
        model.wt.as_entire_binding(),
        d,
        d,
    )?;
    let segmenting = Segmenting::new(ctx, StepsPerDispatch::Auto, d);
    let cg = Cg::new(
        ctx,
        &model,
        &tp,
        segmenting.quota(&loops::inverse(d, max_iter))?,
    )?;
    ctx.submit(|pass| {
        wt.record(pass);
        cg.record(pass, warm.is_some());
    })?;
    let report = model.cg.report(ctx, tol, max_iter)?;
    let p = matrix(&ctx.read(&model.cg.x, 0, d * d)?, d, d);
    Ok((p, report))
}

/// Targets v_0 … v_T by the analytic sweep from a given P on the GPU, as
/// `cpu::target_sweep::target_sweep` returns them.
#[allow(clippy::too_many_arguments)]
pub fn target_sweep(
    ctx: &GpuContext,
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    grad_h: &DMatrix<f64>,
    lr_target: f64,
    mode: TargetMode,
) -> Result<Vec<DMatrix<f64>>> {
    let options = GpuOptions::default();
    target_sweep_with(ctx, params, p_inv, x, h, grad_h, (lr_target, mode), options)
}

/// `target_sweep` with the histories stored, the sweep split and the sequences grouped
/// into workgroups as `options` say (v read back from the stored offsets).
#[allow(clippy::too_many_arguments)]
pub fn target_sweep_with(
    ctx: &GpuContext,
    params: &Params,
    p_inv: &DMatrix<f64>,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    grad_h: &DMatrix<f64>,
    (lr_target, mode): (f64, TargetMode),
    options: GpuOptions,
) -> Result<Vec<DMatrix<f64>>> {
    let (b, d) = (grad_h.nrows(), params.dims().hidden);
    steps("h", h, x.len() + 1, (b, d))?;
    matrix_arg("grad_h", grad_h, b, d)?;
    matrix_arg("p_inv", p_inv, d, d)?;
    let batch = Batch {
        tokens: None,
        x: x.to_vec(),
        y: Targets::Labels(vec![0; b]),
    };
    let hyper = Hyper {
        method: Method::Tp,
        tp: TpConfig {
            lr_target,
            target_mode: mode,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let (model, ws) = workspace(ctx, params, &batch, &hyper, options)?;
    ws.seq.h.write(ctx, 0, h);
    ctx.write(&ws.seq.g_top, 0, &rows_f32(grad_h));
    ctx.write(&model.cg.x, 0, &rows_f32(p_inv));
    let sweep = ws
        .sweep
        .as_ref()
        .expect("a TP workspace has a target sweep");
    ctx.submit(|pass| sweep.iter().for_each(|l| l.record(pass)))?;
    let dv = ws.seq.dv.read(ctx, 0, x.len() + 1)?;
    Ok(h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect())
}

/// `J_t u` (`transpose` false) or `J_tᵀ u` for every row of `u` [B, d] at the states of
/// the cell's forward pass on `x` (the one-shot behind `jvp` and `vjp`).
fn product(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    t: usize,
    u: &DMatrix<f64>,
    transpose: bool,
) -> Result<DMatrix<f64>> {
    ensure!(
        (1..=x.len()).contains(&t),
        "step {t} is outside 1 … {}",
        x.len()
    );
    let (b, d) = u.shape();
    ensure!(
        x[0].nrows() == b && d == params.dims().hidden,
        "the vector is {b}×{d}, expected {}×{} (B × d)",
        x[0].nrows(),
        params.dims().hidden
    );
    let forward_only = Hyper {
        method: Method::Bp,
        ..Hyper::default()
    };
    let (model, ws) = after_forward(ctx, params, x, &forward_only, GpuOptions::default())?;
    let none = wgpu::BufferUsages::empty();
    let input = ctx.storage("product input [B, d]", 4 * (b * d) as u64, none)?;
    let output = ctx.storage("product output [B, d]", 4 * (b * d) as u64, none)?;
    ctx.write(&input, 0, &rows_f32(u));
    poison(ctx, &output, b * d);
    let launch = jacobian::product_dispatch(
        ctx,
        &model,
        &ws.seq,
        ws.shape,
        t,
        transpose,
        [&input, &output],
    )?;
    ctx.submit(|pass| launch.record(pass))?;
    Ok(matrix(&ctx.read(&output, 0, b * d)?, b, d))
}

/// `J_t u` for each row of `u` on the GPU, as `cpu::jacobian::Cell::jvp` gives it, for the
/// cell of `params` linearized at its forward pass on `x` (T matrices B×p).
pub fn jvp(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    t: usize,
    u: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    product(ctx, params, x, t, u, false)
}

/// `J_tᵀ w` for each row of `w` on the GPU, as `cpu::jacobian::Cell::vjp` gives it.
pub fn vjp(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    t: usize,
    w: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    product(ctx, params, x, t, w, true)
}

/// Targets v_0 … v_T of the jacobian inversion from `v_top` on the GPU, with the per-step
/// CG reports for t = T … 2, as `cpu::jacobian::jacobian_sweep` returns them.
#[allow(clippy::too_many_arguments)]
pub fn jacobian_sweep(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
    reg: f64,
    tol: f64,
    max_iter: usize,
    precondition: Preconditioner,
) -> Result<(Vec<DMatrix<f64>>, Vec<CgReport>)> {
    let t_len = x.len();
    let states = (v_top.nrows(), params.dims().hidden);
    steps("h", h, t_len + 1, states)?;
    matrix_arg("v_top", v_top, states.0, states.1)?;
    let tp = TpConfig {
        inversion: Inversion::Jacobian,
        // With γ_h = 1 the kernel's dv_T = −γ_h g_T is v_top − h_T for g_T = h_T − v_top.
        lr_target: 1.0,
        reg,
        cg_tol: Some(tol),
        cg_max_iter: max_iter,
        precondition,
        ..TpConfig::default()
    };
    let hyper = Hyper {
        method: Method::Tp,
        tp: tp.clone(),
        ..Hyper::default()
    };
    let (model, ws) = after_forward(ctx, params, x, &hyper, GpuOptions::default())?;
    ctx.write(&ws.seq.g_top, 0, &rows_f32(&(&h[t_len] - v_top)));
    let sweep = ws
        .sweep
        .as_ref()
        .expect("a TP workspace has a target sweep");
    ctx.submit(|pass| sweep.iter().for_each(|l| l.record(pass)))?;
    let dv = ws.seq.dv.read(ctx, 0, t_len + 1)?;
    let reports = step_reports(ctx, &ws.seq, ws.shape)?;
    report(ctx, &model, &ws.seq, ws.shape, &tp)?;
    Ok((
        h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect(),
        reports,
    ))
}

/// Targets v_0 … v_T of the GRU's per-gate inversion from `v_top` and the given
/// `p_gates` = [P_r, P_z, P_n] on the GPU, as `cpu::gru_per_gate::gru_per_gate_sweep`
/// returns them. The kernel reads the states and gates of its own forward pass on `x`:
/// `h` must be those states (the reference's).
pub fn gru_per_gate_sweep(
    ctx: &GpuContext,
    params: &Params,
    p_gates: &[DMatrix<f64>; 3],
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    v_top: &DMatrix<f64>,
) -> Result<Vec<DMatrix<f64>>> {
    let t_len = x.len();
    let d = params.dims().hidden;
    steps("h", h, t_len + 1, (v_top.nrows(), d))?;
    matrix_arg("v_top", v_top, v_top.nrows(), d)?;
    for (p, gate) in p_gates.iter().zip(GRU_GATES) {
        matrix_arg(&format!("P_{gate}"), p, d, d)?;
    }
    let hyper = Hyper {
        method: Method::Tp,
        tp: TpConfig {
            inversion: Inversion::PerGate,
            // With γ_h = 1 the kernel's dv_T = −γ_h g_T is v_top − h_T for g_T = h_T − v_top.
            lr_target: 1.0,
            ..TpConfig::default()
        },
        ..Hyper::default()
    };
    let (model, ws) = after_forward(ctx, params, x, &hyper, GpuOptions::default())?;
    ctx.write(&ws.seq.g_top, 0, &rows_f32(&(&h[t_len] - v_top)));
    let stacked: Vec<f32> = p_gates
        .iter()
        .flat_map(|p| rows_f32(&p.transpose()))
        .collect();
    ctx.write(&model.gates(ctx)?.pt, 0, &stacked);
    let sweep = ws
        .sweep
        .as_ref()
        .expect("a TP workspace has a target sweep");
    ctx.submit(|pass| sweep.iter().for_each(|l| l.record(pass)))?;
    let dv = ws.seq.dv.read(ctx, 0, t_len + 1)?;
    Ok(h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect())
}
