//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ by CG on the device (`shaders/jacobian.wgsl`'s
//! `inverse_columns`, then `shaders/cg_check.wgsl`; twin of `src/cpu/inverse.rs::inverse_cg`).
//!
//! Two kernels, whatever the iteration count: one workgroup per column j solves
//! (WᵀW + rI) x_j = (Wᵀ)_{:,j} with the per-step CG of the jacobian sweep (J = W), stopping
//! on its own relative residual, in as many bounded launches as the worst case needs
//! (`jacobian::inverse_dispatch`); cg_check then forms the reference's report (the most
//! iterations of any column, ‖R‖_F / ‖Wᵀ‖_F) on the device, so the host never waits inside
//! an iteration. Per-column stopping implies the reference's Frobenius rule. A solve that
//! missed its tolerance is counted in a sticky device-side record and surfaces as
//! `CgError` when the statistics are read.

use anyhow::Result;

use crate::config::TpConfig;
use crate::gpu::buffers::ModelBuffers;
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::jacobian;

/// Default relative-residual tolerance of the f32 CG (`cg_tol = None`). f32 round-off
/// leaves the true residual near 1e-7·cond(A); 1e-5 stays clear of that floor for the
/// well-conditioned A = WᵀW + rI that a sensible r gives, and makes P accurate to about
/// 1e-5·cond(A) — below the f32 noise of the targets it feeds.
pub const GPU_CG_TOL: f64 = 1e-5;

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
    /// The solve for the W in `model`'s parameters, `quota` CG units per launch; it reads
    /// Wᵀ from `model.wt`, which the forward phase writes.
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        tp: &TpConfig,
        quota: usize,
    ) -> Result<Self> {
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
            cold: jacobian::inverse_dispatch(ctx, model, tp, false, quota)?,
            warm: jacobian::inverse_dispatch(ctx, model, tp, true, quota)?,
            check,
        })
    }

    /// Records the whole solve; `warm` starts from the P already in the buffer.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        if warm { &self.warm } else { &self.cold }.record(pass);
        self.check.record(pass);
    }
}
