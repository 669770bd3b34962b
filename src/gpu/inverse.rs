//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ by batched, matrix-free CG on the device
//! (`shaders/cg_init.wgsl`, `cg_update.wgsl`, `cg_check.wgsl` with `matmul.wgsl`; twin of
//! `src/cpu/inverse.rs::inverse_cg`).
//!
//! The host records `cg_max_iter` iterations into the step's command buffer and never
//! waits: cg_check decides convergence on the device and zeroes the grids of the
//! remaining iterations' (indirect) launches. A solve that missed its tolerance is counted
//! in a sticky device-side record and surfaces as `CgError` when the statistics are read.

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::TpConfig;
use crate::cpu::inverse::{CgError, CgReport};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{matrix, per_item_groups, rows_f32, ModelBuffers};
use crate::gpu::kernel::{Dispatch, Groups};
use crate::gpu::matmul::{self, Operands};
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
    converged: u32,
    residual: f32,
    rhs_norm: f32,
    /// Solves that missed the tolerance since the last read (sticky).
    failures: u32,
    worst_residual: f32,
    worst_iterations: u32,
}

/// Buffers of the solve; `x` holds P between steps (the warm start).
pub(crate) struct CgBuffers {
    pub x: wgpu::Buffer,
    wx: wgpu::Buffer,
    awx: wgpu::Buffer,
    r: wgpu::Buffer,
    p: wgpu::Buffer,
    /// Per column: ‖R_{:,j}‖² then ‖(Wᵀ)_{:,j}‖².
    col: wgpu::Buffer,
    state: wgpu::Buffer,
    /// Indirect grids written by cg_check: matmul, then cg_update.
    grids: wgpu::Buffer,
}

impl CgBuffers {
    pub fn new(ctx: &GpuContext, d: usize) -> Result<Self> {
        let sq = 4 * (d * d) as u64;
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            x: ctx.storage("CG solution P [d, d]", sq, none)?,
            wx: ctx.storage("CG product W X [d, d]", sq, none)?,
            awx: ctx.storage("CG product WᵀW X [d, d]", sq, none)?,
            r: ctx.storage("CG residual [d, d]", sq, none)?,
            p: ctx.storage("CG direction [d, d]", sq, none)?,
            col: ctx.storage("CG column norms [2, d]", 8 * d as u64, none)?,
            state: ctx.storage("CG state", std::mem::size_of::<CgState>() as u64, none)?,
            grids: ctx.storage("CG grids", 24, wgpu::BufferUsages::INDIRECT)?,
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
struct InitDims {
    n: u32,
    warm: u32,
    reg: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct UpdateDims {
    n: u32,
    reg: f32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CheckDims {
    n: u32,
    mode: u32,
    tol: f32,
    matmul_groups: u32,
}

/// The launches of one solve.
pub(crate) struct Cg {
    /// Warm start: W X, Wᵀ(W X), then cg_init.
    warm: [Dispatch; 3],
    cold: Dispatch,
    /// cg_check in its three modes: START, ITERATION, FINISH.
    check: [Dispatch; 3],
    /// One iteration: W P, Wᵀ(W P), cg_update — all indirect.
    iteration: [Dispatch; 3],
    max_iter: usize,
}

impl Cg {
    pub fn new(ctx: &GpuContext, model: &ModelBuffers, tp: &TpConfig) -> Result<Self> {
        let n = model.layout.dims.hidden;
        let w = model.layout.w;
        let b = &model.cg;
        let tol = tp.cg_tol.unwrap_or(GPU_CG_TOL) as f32;
        let reg = tp.reg as f32;
        // W·src → wx, then Wᵀ·wx → awx.
        let products = |src: &wgpu::Buffer, indirect: bool| -> Result<[Dispatch; 2]> {
            let grid = indirect.then_some((&b.grids, 0));
            let product = |a, trans_a, b_in: &wgpu::Buffer, c: &wgpu::Buffer| {
                matmul::product(
                    ctx,
                    Operands {
                        a,
                        trans_a,
                        b: b_in.as_entire_binding(),
                        c: c.as_entire_binding(),
                        m: n,
                        n,
                        k: n,
                    },
                    grid,
                )
            };
            Ok([
                product(w.bind(&model.theta), false, src, &b.wx)?,
                product(w.bind(&model.theta), true, &b.wx, &b.awx)?,
            ])
        };
        let columns = per_item_groups(ctx, n, "hidden size d (one CG workgroup per column)")?;
        let init = |warm: bool| {
            Dispatch::new(
                ctx,
                &ctx.kernels.cg_init,
                &InitDims {
                    n: n as u32,
                    warm: u32::from(warm),
                    reg,
                    _pad: 0,
                },
                &[
                    (1, w.bind(&model.theta)),
                    (2, b.awx.as_entire_binding()),
                    (3, b.x.as_entire_binding()),
                    (4, b.r.as_entire_binding()),
                    (5, b.p.as_entire_binding()),
                    (6, b.col.as_entire_binding()),
                ],
                Groups::Direct(columns),
            )
        };
        let check = |mode: u32| {
            Dispatch::new(
                ctx,
                &ctx.kernels.cg_check,
                &CheckDims {
                    n: n as u32,
                    mode,
                    tol,
                    matmul_groups: matmul::groups(n, n)[0],
                },
                &[
                    (1, b.col.as_entire_binding()),
                    (2, b.state.as_entire_binding()),
                    (3, b.grids.as_entire_binding()),
                ],
                Groups::Direct([1, 1, 1]),
            )
        };
        let [warm_wx, warm_awx] = products(&b.x, false)?;
        let [iter_wp, iter_awp] = products(&b.p, true)?;
        let update = Dispatch::new(
            ctx,
            &ctx.kernels.cg_update,
            &UpdateDims {
                n: n as u32,
                reg,
                _pad: [0; 2],
            },
            &[
                (1, b.awx.as_entire_binding()),
                (2, b.x.as_entire_binding()),
                (3, b.r.as_entire_binding()),
                (4, b.p.as_entire_binding()),
                (5, b.col.as_entire_binding()),
            ],
            Groups::Indirect(b.grids.clone(), 12),
        )?;
        Ok(Self {
            warm: [warm_wx, warm_awx, init(true)?],
            cold: init(false)?,
            check: [check(0)?, check(1)?, check(2)?],
            iteration: [iter_wp, iter_awp, update],
            max_iter: tp.cg_max_iter,
        })
    }

    /// Records the whole solve; `warm` starts from the P already in the buffer.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        if warm {
            self.warm.iter().for_each(|d| d.record(pass));
        } else {
            self.cold.record(pass);
        }
        let [start, iteration, finish] = &self.check;
        start.record(pass);
        for _ in 0..self.max_iter {
            self.iteration.iter().for_each(|d| d.record(pass));
            iteration.record(pass);
        }
        finish.record(pass);
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
        None => crate::gpu::iteration::poison(ctx, &model.cg.x, d * d),
    }
    let tp = TpConfig {
        reg,
        cg_tol: Some(tol),
        cg_max_iter: max_iter,
        ..TpConfig::default()
    };
    let cg = Cg::new(ctx, &model, &tp)?;
    ctx.submit(|pass| cg.record(pass, warm.is_some()))?;
    let report = model.cg.report(ctx, tol, max_iter)?;
    let p = matrix(&ctx.read(&model.cg.x, 0, d * d)?, d, d);
    Ok((p, report))
}
