//! The buffers of the CG solves for P (and the per-gate inversion's P_g): the solution,
//! which persists between steps to warm-start the next solve, the per-column state and
//! the device-side record the host reads a report from.

use anyhow::Result;

use crate::cg::{CgError, CgReport};
use crate::error::{cg_error, Error};
use crate::gpu::context::GpuContext;
use crate::gpu::layout::solve_state_len;
use crate::gpu::readback::Region;

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

/// Words of `CgState`.
const CG_STATE_WORDS: usize = std::mem::size_of::<CgState>() / 4;

/// Buffers of the solve; `x` holds P between steps (the warm start).
pub(crate) struct CgBuffers {
    pub x: wgpu::Buffer,
    /// Per column: iterations, ‖R_{:,j}‖², ‖(Wᵀ)_{:,j}‖² [d, 3], then the state of the d
    /// solves between launches (`jacobian::solve_state_len`).
    pub columns: wgpu::Buffer,
    pub state: wgpu::Buffer,
}

impl CgBuffers {
    pub fn new(ctx: &GpuContext, d: usize) -> Result<Self> {
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            x: ctx.storage("CG solution P [d, d]", 4 * (d * d) as u64, none)?,
            columns: ctx.storage(
                "CG per-column record [d, 3] and solve state",
                4 * (3 * d + solve_state_len(d, d)) as u64,
                none,
            )?,
            state: ctx.storage("CG state", std::mem::size_of::<CgState>() as u64, none)?,
        })
    }

    /// The last solve's report, or the worst failure since the last call as a `CgError`
    /// (the failure record is then cleared). Waits for the device.
    pub fn report(&self, ctx: &GpuContext, tol: f64, max_iter: usize) -> Result<CgReport> {
        let words: Vec<u32> = ctx.read(&self.state, 0, CG_STATE_WORDS)?;
        self.report_from(ctx, &words, tol, max_iter)
    }

    /// Where the solve's record is, for a `Readback`.
    pub fn state_region(&self) -> Region<'_> {
        Region::new(&self.state, 0, CG_STATE_WORDS)
    }

    /// `report` from the words of `state_region`, read back already.
    pub fn report_from(
        &self,
        ctx: &GpuContext,
        words: &[u32],
        tol: f64,
        max_iter: usize,
    ) -> Result<CgReport> {
        let s: CgState = bytemuck::pod_read_unaligned(bytemuck::cast_slice(words));
        if s.failures > 0 {
            let cleared = CgState {
                failures: 0,
                worst_residual: 0.0,
                worst_iterations: 0,
                ..s
            };
            ctx.write(&self.state, 0, &[cleared]);
            return Err(Error::from(CgError {
                report: CgReport::one(s.worst_iterations as usize, f64::from(s.worst_residual)),
                tol,
                max_iter,
            })
            .into());
        }
        Ok(CgReport::one(s.iterations as usize, f64::from(s.residual)))
    }
}

/// The GRU's per-gate inversion (docs/ALGORITHM.md §5): for each gate g = r, z, n its block
/// W_g of W and W_gᵀ (each [d, d], copied out of the parameters every step, since a
/// binding cannot start at an arbitrary element) and the CG buffers whose `x` holds P_g
/// between steps (the warm start); and [P_rᵀ; P_zᵀ; P_nᵀ; W] [6d, d], what the sweeps read
/// (the per-gate sweep its first 3d rows; the fused loop, gru_sweep_bptt, all: it copies W).
pub(crate) struct GateBuffers {
    pub w: [wgpu::Buffer; 3],
    pub wt: [wgpu::Buffer; 3],
    pub cg: [CgBuffers; 3],
    pub pt: wgpu::Buffer,
}

impl GateBuffers {
    pub(super) fn new(ctx: &GpuContext, d: usize) -> Result<Self> {
        let none = wgpu::BufferUsages::empty();
        let square = |what: &str| ctx.storage(what, 4 * (d * d) as u64, none);
        Ok(Self {
            w: [square("W_r")?, square("W_z")?, square("W_n")?],
            wt: [square("W_rᵀ")?, square("W_zᵀ")?, square("W_nᵀ")?],
            cg: [
                CgBuffers::new(ctx, d)?,
                CgBuffers::new(ctx, d)?,
                CgBuffers::new(ctx, d)?,
            ],
            pt: ctx.storage(
                "[P_rᵀ; P_zᵀ; P_nᵀ; W] [6d, d]",
                4 * (6 * d * d) as u64,
                none,
            )?,
        })
    }

    /// Where the three solves' records are, for a `Readback`.
    pub fn state_regions(&self) -> [Region<'_>; 3] {
        self.cg.each_ref().map(CgBuffers::state_region)
    }

    /// The three solves' report (`CgReport::successive`) from the words of `state_regions`, or the
    /// worst failure among them as a `CgError` (every failure record is cleared).
    pub fn report_from(
        &self,
        ctx: &GpuContext,
        words: &[Vec<u32>],
        tol: f64,
        max_iter: usize,
    ) -> Result<CgReport> {
        let mut reports = Vec::with_capacity(3);
        let mut failed: Option<anyhow::Error> = None;
        for (cg, words) in self.cg.iter().zip(words) {
            match cg.report_from(ctx, words, tol, max_iter) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    let residual = |e: &anyhow::Error| cg_error(e).map(|c| c.report.residual);
                    // Keep the largest residual (a NaN one above all).
                    let replace = failed.as_ref().is_none_or(|f| {
                        let (new, old) = (residual(&e), residual(f));
                        new.is_some_and(|n| old.is_some_and(|o| n.is_nan() || n > o))
                    });
                    if replace {
                        failed = Some(e);
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(CgReport::successive(reports)),
        }
    }
}
