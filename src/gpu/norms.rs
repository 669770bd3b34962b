//! Per-step Frobenius norms of a [T, B, d] history (`shaders/sum_sq.wgsl`): the diagnostics
//! ‖v_t − h_t‖ (TP) and ‖e_t‖ (BP, and every trace). Recorded on demand only, after the
//! step whose buffers it reads; its CPU twin is `DMatrix::norm` over each step.

use anyhow::Result;

use crate::gpu::context::GpuContext;
use crate::gpu::iteration::per_item_groups;
use crate::gpu::kernel::{Dispatch, Groups};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    rows: u32,
    len: u32,
    start: u32,
    _pad: u32,
}

/// The norms of `rows` consecutive blocks of `len` values of `src`, from element `start`
/// on, squared into `out` [rows].
pub(crate) struct StepNorms {
    launch: Dispatch,
    out: wgpu::Buffer,
    rows: usize,
}

impl StepNorms {
    pub fn new(
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        start: usize,
        rows: usize,
        len: usize,
        out: &wgpu::Buffer,
    ) -> Result<Self> {
        let dims = Dims {
            rows: rows as u32,
            len: len as u32,
            start: start as u32,
            _pad: 0,
        };
        let launch = Dispatch::new(
            ctx,
            &ctx.kernels.sum_sq,
            &dims,
            &[(1, src.as_entire_binding()), (2, out.as_entire_binding())],
            Groups::Direct(per_item_groups(ctx, rows, "sequence length T")?),
        )?;
        Ok(Self {
            launch,
            out: out.clone(),
            rows,
        })
    }

    /// Runs the reduction after everything already submitted and reads the norms back.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
        ctx.submit(|pass| self.launch.record(pass))?;
        Ok(ctx
            .read::<f32>(&self.out, 0, self.rows)?
            .into_iter()
            .map(|sq| f64::from(sq).sqrt())
            .collect())
    }
}
