//! Per-step Frobenius norms of a [T, B, d] history (`shaders/sum_sq.wgsl`): the diagnostics
//! ‖v_t − h_t‖ (TP) and ‖e_t‖ (BP, and every trace), recorded on demand only, after the
//! step whose buffers it reads; its CPU twin is `DMatrix::norm` over each step. And the
//! gradient's norm that `--clip-norm` scales by, recorded before each optimizer step (CPU
//! twin: `cpu::optimizer`'s sum of `norm_squared`, then its root).

use std::ops::Range;

use anyhow::Result;

use crate::gpu::buffers::grid_1d;
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::history::History;
use crate::gpu::readback::{Readback, Region};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    rows: u32,
    len: u32,
    start: u32,
    /// Workgroups per row of the grid (2-D past the device's per-dimension limit).
    groups_x: u32,
    /// One past the last element summed.
    end: u32,
    /// 1: the norms themselves, not their squares.
    root: u32,
}

/// The norms of `rows` consecutive blocks of `len` values of `src`, from element `start`
/// on, squared into `out` \[rows\].
pub(crate) struct StepNorms {
    launch: Dispatch,
    out: wgpu::Buffer,
    rows: usize,
    /// What the stored values are multiplied by (a history's scale).
    scale: f64,
}

impl StepNorms {
    /// Over an f32 buffer.
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
            groups_x: 0,
            end: (start + rows * len) as u32,
            root: 0,
        };
        Self::build(ctx, &ctx.kernels.sum_sq, src, dims, out, 1.0)
    }

    /// Over the steps of a history from step `first` on, one norm per step. The padding of
    /// f16 rows holds zeros, so whole padded steps are summed.
    pub fn of_history(
        ctx: &GpuContext,
        src: &History,
        first: usize,
        out: &wgpu::Buffer,
    ) -> Result<Self> {
        let len = src.step_len();
        let dims = Dims {
            rows: (src.steps - first) as u32,
            len: len as u32,
            start: (first * len) as u32,
            groups_x: 0,
            end: (src.steps * len) as u32,
            root: 0,
        };
        let kernel = &ctx.history_kernels(src.storage)?.sum_sq;
        Self::build(ctx, kernel, &src.buffer, dims, out, f64::from(src.scale))
    }

    fn build(
        ctx: &GpuContext,
        kernel: &wgpu::ComputePipeline,
        src: &wgpu::Buffer,
        dims: Dims,
        out: &wgpu::Buffer,
        scale: f64,
    ) -> Result<Self> {
        let rows = dims.rows as usize;
        // One workgroup per step: T may pass a grid dimension's limit.
        let (grid, groups_x) = grid_1d(ctx, rows, 1);
        let launch = Dispatch::new(
            ctx,
            kernel,
            &Dims { groups_x, ..dims },
            &[(1, src.as_entire_binding()), (2, out.as_entire_binding())],
            grid,
        )?;
        Ok(Self {
            launch,
            out: out.clone(),
            rows,
            scale,
        })
    }

    /// Records the reduction (after everything recorded before it).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.launch.record(pass);
    }

    /// Where the squared norms land.
    pub fn region(&self) -> Region<'_> {
        Region::new(&self.out, 0, self.rows)
    }

    /// The norms from the words of `region`.
    pub fn decode(&self, words: &[u32]) -> Vec<f64> {
        words
            .iter()
            .map(|&sq| f64::from(f32::from_bits(sq)).sqrt() / self.scale)
            .collect()
    }

    /// Runs the reduction after everything already submitted and reads the norms back.
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<f64>> {
        let words = Readback::default().read(ctx, |pass| self.record(pass), &[self.region()])?;
        Ok(self.decode(&words[0]))
    }
}

/// Elements each workgroup of [`RangeNorm`]'s first pass sums: 256 an invocation, so
/// that neither pass loops more than 256 times an invocation below 2³² elements (Mesa's
/// llvmpipe caps a loop at 65 535 iterations).
const NORM_BLOCK: usize = 256 * 256;

/// The Euclidean norm of a range of an f32 buffer, into element 0 of `out`: the norms of
/// blocks of [`NORM_BLOCK`] elements, then the norm of those, two launches of
/// `sum_sq.wgsl` recorded back to back.
pub(crate) struct RangeNorm {
    blocks: StepNorms,
    total: StepNorms,
}

impl RangeNorm {
    pub fn new(
        ctx: &GpuContext,
        src: &wgpu::Buffer,
        range: Range<usize>,
        out: &wgpu::Buffer,
    ) -> Result<Self> {
        let rows = range.len().div_ceil(NORM_BLOCK).max(1);
        let norms = ctx.storage(
            "gradient norm: the blocks' norms",
            4 * rows as u64,
            wgpu::BufferUsages::empty(),
        )?;
        let kernel = &ctx.kernels.sum_sq;
        let blocks = Dims {
            rows: rows as u32,
            len: NORM_BLOCK as u32,
            start: range.start as u32,
            groups_x: 0,
            end: range.end as u32,
            root: 1,
        };
        let total = Dims {
            rows: 1,
            len: rows as u32,
            start: 0,
            groups_x: 0,
            end: rows as u32,
            root: 1,
        };
        Ok(Self {
            blocks: StepNorms::build(ctx, kernel, src, blocks, &norms, 1.0)?,
            total: StepNorms::build(ctx, kernel, &norms, total, out, 1.0)?,
        })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.blocks.record(pass);
        self.total.record(pass);
    }
}
