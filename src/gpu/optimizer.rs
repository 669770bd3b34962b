//! SGD, Nesterov and Adam on all parameters in one launch (`shaders/optimizer.wgsl`; twin
//! of `src/cpu/optimizer.rs`), after the two launches of the gradient's norm where
//! `--clip-norm` is set.

use std::ops::Range;

use anyhow::Result;

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::gpu::buffers::{grid_1d, ModelBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Slot;
use crate::gpu::norms::RangeNorm;

/// optimizer.wgsl's workgroup size.
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Settings {
    len: u32,
    kind: u32,
    row_stride: u32,
    lr: f32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    c1: f32,
    c2: f32,
    lr_head: f32,
    head_start: u32,
    head_end: u32,
    clip: f32,
}

/// The launch's settings at step `step`, the elements `head` of its range (the head's V
/// and c, or none) at the head's learning rate.
fn settings(
    len: usize,
    row_stride: u32,
    cfg: &OptimizerConfig,
    head: Range<usize>,
    step: u64,
) -> Settings {
    // Adam's bias corrections 1 − β^step, in f64 on the host where step is known.
    let t = i32::try_from(step).unwrap_or(i32::MAX);
    Settings {
        len: len as u32,
        kind: match cfg.kind {
            OptimizerKind::Sgd => 0,
            OptimizerKind::Nesterov => 1,
            OptimizerKind::Adam => 2,
        },
        row_stride,
        lr: cfg.lr as f32,
        momentum: cfg.momentum as f32,
        beta1: cfg.beta1 as f32,
        beta2: cfg.beta2 as f32,
        eps: cfg.eps as f32,
        c1: (1.0 - cfg.beta1.powi(t)) as f32,
        c2: (1.0 - cfg.beta2.powi(t)) as f32,
        lr_head: cfg.head_lr() as f32,
        head_start: head.start as u32,
        head_end: head.end as u32,
        clip: cfg.clip_norm.unwrap_or(0.0) as f32,
    }
}

/// The optimizer launch over the flat parameter buffer, or a range of it. Its settings
/// depend on the step number: call `set_step` before each submit.
pub(crate) struct OptimizerStep {
    launch: Dispatch,
    cfg: OptimizerConfig,
    len: usize,
    row_stride: u32,
    head: Range<usize>,
    /// The gradient's norm over the range, where `cfg.clip_norm` is set.
    norm: Option<RangeNorm>,
}

impl OptimizerStep {
    /// The step of every parameter but DTP's reverse layer (which `over` steps on its
    /// own): all of them in the other methods, the head's at its own learning rate.
    pub fn new(ctx: &GpuContext, model: &ModelBuffers, cfg: &OptimizerConfig) -> Result<Self> {
        let range = Slot {
            start: 0,
            len: model.layout.forward_len(),
        };
        let l = &model.layout;
        Self::over(ctx, model, cfg, range, l.v.start..l.c.start + l.c.len)
    }

    /// The step of the parameters in `range` of the flat buffers (its start aligned for
    /// binding, as every slot's is), the elements `head` of the range at the head's
    /// learning rate.
    pub fn over(
        ctx: &GpuContext,
        model: &ModelBuffers,
        cfg: &OptimizerConfig,
        range: Slot,
        head: Range<usize>,
    ) -> Result<Self> {
        let len = range.len;
        let (grid, row_stride) = grid_1d(ctx, len, WG);
        let norm_out = ctx.storage("gradient norm", 4, wgpu::BufferUsages::empty())?;
        let norm = cfg
            .clip_norm
            .map(|_| RangeNorm::new(ctx, &model.grad, range.start..range.start + len, &norm_out))
            .transpose()?;
        let launch = Dispatch::new(
            ctx,
            &ctx.kernels.optimizer,
            &settings(len, row_stride, cfg, head.clone(), 1),
            &[
                (1, range.bind(&model.grad)),
                (2, range.bind(&model.theta)),
                (3, range.bind(&model.m)),
                (4, range.bind(&model.v)),
                (5, norm_out.as_entire_binding()),
            ],
            grid,
        )?;
        Ok(Self {
            launch,
            cfg: cfg.clone(),
            len,
            row_stride,
            head,
            norm,
        })
    }

    /// Sets the step number (1 for the first step) the next recorded launch applies.
    pub fn set_step(&self, ctx: &GpuContext, step: u64) {
        let s = settings(
            self.len,
            self.row_stride,
            &self.cfg,
            self.head.clone(),
            step,
        );
        ctx.write(&self.launch.uniform, 0, &[s]);
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if let Some(norm) = &self.norm {
            norm.record(pass);
        }
        self.launch.record(pass);
    }
}
