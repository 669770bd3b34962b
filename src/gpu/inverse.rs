//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ by CG on the device (`shaders/jacobian.wgsl`'s
//! `inverse_columns`, then `shaders/cg_check.wgsl`; twin of `src/cpu/inverse.rs::inverse_cg`).
//!
//! Two launches, whatever the iteration count: one workgroup per column j solves
//! (WᵀW + rI) x_j = (Wᵀ)_{:,j} with the per-step CG of the jacobian sweep (J = W), stopping
//! on its own relative residual; cg_check then forms the reference's report (the most
//! iterations of any column, ‖R‖_F / ‖Wᵀ‖_F) on the device, so the host never waits inside
//! an iteration. Per-column stopping implies the reference's Frobenius rule. A solve that
//! missed its tolerance is counted in a sticky device-side record and surfaces as
//! `CgError` when the statistics are read.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::cg::{CgError, CgReport};
use crate::config::TpConfig;
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{matrix, poison, rows_f32, ModelBuffers};
use crate::gpu::jacobian;
use crate::gpu::kernel::Dispatch;
use crate::gpu::transpose;
use crate::model::{CellKind, Dims, Params};

/// Default relative-residual tolerance of the f32 CG (`cg_tol = None`). f32 round-off
/// leaves the true residual near 1e-7·cond(A); 1e-5 stays clear of that floor for the
/// well-conditioned A = WᵀW + rI that a sensible r gives, and makes P accurate to about
/// 1e-5·cond(A) — below the f32 noise of the targets it feeds.
pub const GPU_CG_TOL: f64 = 1e-5;

/// Device-side record of the solve (cg_check.wgsl's `CgState`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct CgState {
    iterations: u32,
    residual: f32,
    /// Solves that missed the tolerance since the last read (sticky).
    failures: u32,
    worst_residual: f32,
    worst_iterations: u32,
}

/// Buffers of the solve; `x` holds P between steps (the warm start).
pub(crate) struct CgBuffers {
    pub x: wgpu::Buffer,
    /// Per column: iterations, ‖R_{:,j}‖², ‖(Wᵀ)_{:,j}‖² [d, 3].
    pub columns: wgpu::Buffer,
    state: wgpu::Buffer,
}

impl CgBuffers {
    pub fn new(ctx: &GpuContext, d: usize) -> Result<Self> {
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            x: ctx.storage("CG solution P [d, d]", 4 * (d * d) as u64, none)?,
            columns: ctx.storage("CG per-column record [d, 3]", 12 * d as u64, none)?,
            state: ctx.storage("CG state", std::mem::size_of::<CgState>() as u64, none)?,
        })
    }

    /// Iterations of the last solve, converged or not (what the benchmarks report).
    pub fn iterations(&self, ctx: &GpuContext) -> Result<usize> {
        let s: CgState = ctx.read(&self.state, 0, 1)?[0];
        Ok(s.iterations as usize)
    }

    /// The last solve's report, or the worst failure since the last call as a `CgError`
    /// (the failure record is then cleared). Waits for the device.
    pub fn report(&self, ctx: &GpuContext, tol: f64, max_iter: usize) -> Result<CgReport> {
        let s: CgState = ctx.read(&self.state, 0, 1)?[0];
        if s.failures > 0 {
            let cleared = CgState {
                failures: 0,
                worst_residual: 0.0,
                worst_iterations: 0,
                ..s
            };
            ctx.write(&self.state, 0, &[cleared]);
            return Err(CgError {
                report: CgReport {
                    iterations: s.worst_iterations as usize,
                    residual: f64::from(s.worst_residual),
                },
                tol,
                max_iter,
            }
            .into());
        }
        Ok(CgReport {
            iterations: s.iterations as usize,
            residual: f64::from(s.residual),
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CheckDims {
    n: u32,
    tol: f32,
}

/// The launches of one solve: the columns' CG (from zero, or warm from the P in the
/// buffer), then the report.
pub(crate) struct Cg {
    cold: Dispatch,
    warm: Dispatch,
    check: Dispatch,
}

impl Cg {
    /// The solve for the W in `model`'s parameters; it reads Wᵀ from `model.wt`, which the
    /// forward phase writes.
    pub fn new(ctx: &GpuContext, model: &ModelBuffers, tp: &TpConfig) -> Result<Self> {
        let check = Dispatch::new(
            ctx,
            &ctx.kernels.cg_check,
            &CheckDims {
                n: model.layout.dims.hidden as u32,
                tol: jacobian::tolerance(tp) as f32,
            },
            &[
                (1, model.cg.columns.as_entire_binding()),
                (2, model.cg.state.as_entire_binding()),
            ],
            [1, 1, 1],
        )?;
        Ok(Self {
            cold: jacobian::inverse_dispatch(ctx, model, tp, false)?,
            warm: jacobian::inverse_dispatch(ctx, model, tp, true)?,
            check,
        })
    }

    /// Records the whole solve; `warm` starts from the P already in the buffer.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        if warm { &self.warm } else { &self.cold }.record(pass);
        self.check.record(pass);
    }
}

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
            ..Params::zeros(dims)
        },
    )?;
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
    let cg = Cg::new(ctx, &model, &tp)?;
    ctx.submit(|pass| {
        wt.record(pass);
        cg.record(pass, warm.is_some());
    })?;
    let report = model.cg.report(ctx, tol, max_iter)?;
    let p = matrix(&ctx.read(&model.cg.x, 0, d * d)?, d, d);
    Ok((p, report))
}
