//! The regularized inverse P = (WᵀW + rI)⁻¹Wᵀ by CG on the device (`shaders/jacobian.wgsl`'s
//! `inverse_columns`, then `shaders/cg_check.wgsl`; twin of `src/cpu/inverse.rs::inverse_cg`),
//! and the same solve for each gate block of the GRU's W (`GateCg`, the per-gate inversion;
//! twin of `src/cpu/gru_per_gate.rs::gate_inverses`).
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
use crate::gpu::buffers::{CgBuffers, ModelBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::{jacobian, transpose};

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
        let l = &model.layout;
        let operands = || [l.w.bind(&model.theta), model.wt.as_entire_binding()];
        Self::of(ctx, l.dims.hidden, operands, &model.cg, tp, quota)
    }

    /// The solve for a d×d W, with `operands` binding [W, Wᵀ], into `cg`, `quota` CG units
    /// per launch.
    fn of<'a>(
        ctx: &GpuContext,
        d: usize,
        operands: impl Fn() -> [wgpu::BindingResource<'a>; 2],
        cg: &CgBuffers,
        tp: &TpConfig,
        quota: usize,
    ) -> Result<Self> {
        let check = Dispatch::new(
            ctx,
            &ctx.kernels.cg_check,
            &CheckDims {
                n: d as u32,
                tol: jacobian::tolerance(tp) as f32,
            },
            &[
                (1, cg.columns.as_entire_binding()),
                (2, cg.state.as_entire_binding()),
            ],
            [1, 1, 1],
        )?;
        Ok(Self {
            cold: jacobian::inverse_dispatch(ctx, d, operands(), cg, tp, false, quota)?,
            warm: jacobian::inverse_dispatch(ctx, d, operands(), cg, tp, true, quota)?,
            check,
        })
    }

    /// Records the whole solve; `warm` starts from the P already in the buffer.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        if warm { &self.warm } else { &self.cold }.record(pass);
        self.check.record(pass);
    }
}

/// The per-gate inversion's three solves (docs/ALGORITHM.md §5), for each gate g = r, z, n
/// of W [3d, d]: W_gᵀ and W_g copied out of the parameters (two transposes), P_g by `Cg`
/// into its own CG buffers (warm from the last step's P_g), and P_gᵀ into block g of the
/// stacked [P_rᵀ; P_zᵀ; P_nᵀ] the per-gate sweep reads. Nothing returns to the host.
pub(crate) struct GateCg {
    gates: Vec<GateSolve>,
}

/// One gate's launches, in order.
struct GateSolve {
    copy_out: [Dispatch; 2],
    cg: Cg,
    stack: Dispatch,
}

impl GateCg {
    /// The solves for the gate blocks of the W in `model`'s parameters, in the buffers of
    /// `model.gates`, `quota` CG units per launch (the same solve as P's, split alike).
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        tp: &TpConfig,
        quota: usize,
    ) -> Result<Self> {
        let l = &model.layout;
        let d = l.dims.hidden;
        let gates = model.gates(ctx)?;
        let block = d * d;
        let gates = (0..3)
            .map(|g| {
                let (w, wt, cg) = (&gates.w[g], &gates.wt[g], &gates.cg[g]);
                let w_slot = (l.w.bind(&model.theta), g * block);
                let wt_all = (wt.as_entire_binding(), 0);
                Ok(GateSolve {
                    copy_out: [
                        transpose::dispatch_at(ctx, w_slot, wt_all, d, d)?,
                        transpose::dispatch(
                            ctx,
                            wt.as_entire_binding(),
                            w.as_entire_binding(),
                            d,
                            d,
                        )?,
                    ],
                    cg: Cg::of(
                        ctx,
                        d,
                        || [w.as_entire_binding(), wt.as_entire_binding()],
                        cg,
                        tp,
                        quota,
                    )?,
                    stack: transpose::dispatch_at(
                        ctx,
                        (cg.x.as_entire_binding(), 0),
                        (gates.pt.as_entire_binding(), g * block),
                        d,
                        d,
                    )?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { gates })
    }

    /// Records the three solves; `warm` starts each from the P_g already in its buffer.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        for gate in &self.gates {
            gate.copy_out.iter().for_each(|d| d.record(pass));
            gate.cg.record(pass, warm);
            gate.stack.record(pass);
        }
    }
}
