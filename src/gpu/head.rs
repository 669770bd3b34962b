//! The linear head and its loss (`shaders/head.wgsl`; twin of `src/cpu/head.rs`).

use anyhow::Result;

use crate::config::Loss;
use crate::gpu::buffers::{grid_1d, per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::{loss_code, Shape};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    hidden: u32,
    outputs: u32,
    loss: u32,
    last: u32,
    row_stride: u32,
}

/// Workgroup size of `head_params` (head.wgsl's WG).
const WG: usize = 64;

/// The two launches: per-sequence rows, then the parameter gradients and the loss.
pub(crate) struct HeadDispatches {
    rows: Dispatch,
    params: Dispatch,
}

impl HeadDispatches {
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        seq: &SeqBuffers,
        shape: Shape,
        loss: Loss,
    ) -> Result<Self> {
        let l = &model.layout;
        let (d, q) = (l.dims.hidden, l.dims.output);
        let (grid, row_stride) = grid_1d(ctx, q * d + q + 1, WG);
        let dims = Dims {
            batch: shape.batch as u32,
            hidden: d as u32,
            outputs: q as u32,
            loss: loss_code(loss),
            last: (shape.steps * seq.h.step_len()) as u32,
            row_stride,
        };
        let kernels = ctx.history_kernels(seq.h.storage)?;
        let rows = Dispatch::new(
            ctx,
            &kernels.head_rows,
            &dims,
            &[
                (1, l.v.bind(&model.theta)),
                (2, l.c.bind(&model.theta)),
                (3, seq.h.binding()),
                (4, seq.y.as_entire_binding()),
                (5, seq.scratch.as_entire_binding()),
                (6, seq.g_top.as_entire_binding()),
            ],
            per_item_groups(ctx, shape.batch, "batch size B")?,
        )?;
        let params = Dispatch::new(
            ctx,
            &kernels.head_params,
            &dims,
            &[
                (3, seq.h.binding()),
                (5, seq.scratch.as_entire_binding()),
                (7, l.v.bind(&model.grad)),
                (8, l.c.bind(&model.grad)),
                (9, seq.stats.as_entire_binding()),
            ],
            grid,
        )?;
        Ok(Self { rows, params })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.rows.record(pass);
        self.params.record(pass);
    }
}
