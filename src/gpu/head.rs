//! The linear head and its loss (`shaders/head.wgsl`; twin of `src/cpu/head.rs`).

use anyhow::Result;
use nalgebra::DMatrix;

use crate::config::{Hyper, Loss};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{
    grid_1d, loss_code, matrix, per_item_groups, ModelBuffers, SeqBuffers, Shape, Workspace,
};
use crate::gpu::kernel::Dispatch;
use crate::gpu::storage::Storage;
use crate::kernel_io::HeadOut;
use crate::model::Params;
use crate::tasks::{Batch, Targets};
use crate::validate::check_targets;

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

/// The head's loss and gradients at `h_last` on the GPU, as `cpu::head::head` returns them.
pub fn head(
    ctx: &GpuContext,
    params: &Params,
    h_last: &DMatrix<f64>,
    y: &Targets,
    loss: Loss,
) -> Result<HeadOut> {
    let (b, d) = h_last.shape();
    let q = params.dims().output;
    check_targets(y, loss, b, q)?;
    // A one-step batch whose h_1 is set to h_last.
    let batch = Batch {
        x: vec![DMatrix::zeros(b, params.dims().input)],
        y: y.clone(),
    };
    let hyper = Hyper {
        loss,
        ..Hyper::default()
    };
    let (model, ws) = Workspace::one_shot(ctx, params, &batch, &hyper, Storage::F32)?;
    ws.seq.h.write(ctx, 1, std::slice::from_ref(h_last));
    ctx.submit(|pass| ws.head.record(pass))?;
    let grads = model.read_params(ctx, &model.grad)?;
    let stats = ctx.read::<f32>(&ws.seq.stats, 0, 2)?;
    Ok(HeadOut {
        loss: f64::from(stats[0]),
        accuracy: f64::from(stats[1]),
        z: matrix(&ctx.read(&ws.seq.scratch, 0, b * q)?, b, q),
        grad_h: matrix(&ctx.read(&ws.seq.g_top, 0, b * d)?, b, d),
        grad_w: grads.head_w,
        grad_b: grads.head_b,
    })
}
