//! The gradient of DTP's reconstruction loss in the reverse layer, and the reverse
//! layer's own optimizer step (`shaders/dtp_reverse.wgsl`, then `matmul.wgsl` for the
//! reductions and `optimizer.wgsl` over the reverse layer's slots; twin of
//! `src/cpu/dtp_reverse.rs`; docs/ALGORITHM.md §14).

use anyhow::{Context, Result};

use crate::config::{Hyper, OptimizerConfig};
use crate::dtp::NoiseKey;
use crate::gpu::buffers::{per_item_groups, poison, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::{Shape, Slot};
use crate::gpu::optimizer::OptimizerStep;
use crate::gpu::segments::{split, Segmenting};
use crate::gpu::{loops, matmul, transpose};

/// dtp_reverse.wgsl's uniform block.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    vt_offset: u32,
    k0: u32,
    k1: u32,
    sigma: f32,
    first: u32,
    count: u32,
}

/// DTP's launches before its targets, and their buffers: Wᵀ and Vᵀ into one matrix
/// buffer, the kernel writing δ and y over all T·B columns (in launches of a bounded
/// number of steps), the reductions
/// `∇V = Δᵀ Y`, `∇c = Δᵀ 1` into the gradient's reverse-layer slots, and (in training) the
/// reverse layer's optimizer step followed by Vᵀ again for the target sweep.
pub(crate) struct DtpReverse {
    /// Wᵀ [d, d] from element 0, Vᵀ [d, d] from `vt`'s start (aligned for binding).
    pub mats: wgpu::Buffer,
    /// Where Vᵀ sits in `mats`.
    pub vt: Slot,
    /// The reduced operands δ and y [T·B, d].
    delta: wgpu::Buffer,
    y: wgpu::Buffer,
    transposes: [Dispatch; 2],
    kernel: Dispatch,
    reductions: [Dispatch; 2],
    step: OptimizerStep,
    /// The kernel's uniform blocks, one per launch (their noise key set per iteration).
    blocks: Vec<Dims>,
    /// The run's seed of the noise stream.
    seed: u64,
}

impl DtpReverse {
    /// The launches for a model with a reverse layer (`model.layout.rev`) on batches of
    /// `shape`, split into launches as `segmenting` says; their noise is iteration 1's
    /// until `set_iteration`.
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        seq: &SeqBuffers,
        shape: Shape,
        segmenting: &Segmenting,
        hyper: &Hyper,
    ) -> Result<Self> {
        let l = &model.layout;
        let [rev_w, rev_b] = l.rev.context("DTP needs buffers with a reverse layer")?;
        let d = l.dims.hidden;
        let align = (ctx.limits.min_storage_buffer_offset_alignment as usize / 4).max(1);
        let vt = Slot {
            start: (d * d).next_multiple_of(align),
            len: d * d,
        };
        let none = wgpu::BufferUsages::empty();
        let mats = ctx.storage("Wᵀ and Vᵀ [2, d, d]", 4 * (vt.start + vt.len) as u64, none)?;
        let rows = shape.steps * shape.batch;
        let per_column = |what: &str| {
            let label = format!("{what} [T={}, B={}, d={d}]", shape.steps, shape.batch);
            ctx.storage(&label, 4 * (rows * d) as u64, none)
        };
        let (delta, y) = (
            per_column("DTP's reverse-layer δ")?,
            per_column("DTP's F(h~)")?,
        );
        let whole = Slot {
            start: 0,
            len: d * d,
        };
        let transposes = [
            transpose::dispatch(ctx, l.w.bind(&model.theta), whole.bind(&mats), d, d)?,
            transpose::dispatch(ctx, rev_w.bind(&model.theta), vt.bind(&mats), d, d)?,
        ];
        // At most as many steps per launch as a grid dimension holds.
        let steps = segmenting
            .quota(&loops::dtp_reverse(d, l.dims.input, shape))?
            .min(ctx.limits.max_compute_workgroups_per_dimension as usize);
        let blocks: Vec<Dims> = split(shape.steps, steps)
            .into_iter()
            .map(|seg| Dims {
                batch: shape.batch as u32,
                steps: shape.steps as u32,
                input: l.dims.input as u32,
                hidden: d as u32,
                vt_offset: vt.start as u32,
                k0: 0,
                k1: 0,
                sigma: hyper.dtp.noise as f32,
                first: seg.first,
                count: seg.count,
            })
            .collect();
        let mut groups = per_item_groups(ctx, shape.batch, "batch size B")?;
        groups[1] = steps.min(shape.steps) as u32;
        let kernel = Dispatch::segments(
            ctx,
            &ctx.kernels.dtp_reverse,
            &blocks,
            &[
                (1, mats.as_entire_binding()),
                (2, l.u.bind(&model.theta)),
                (3, l.b.bind(&model.theta)),
                (4, l.b_hh.bind(&model.theta)),
                (5, rev_b.bind(&model.theta)),
                (6, seq.x.as_entire_binding()),
                (7, seq.h.binding()),
                (8, delta.as_entire_binding()),
                (9, y.as_entire_binding()),
            ],
            groups,
        )?;
        let reduce = |b: wgpu::BindingResource<'_>, n: usize, slot: Slot| {
            let ops = matmul::Operands {
                a: delta.as_entire_binding(),
                trans_a: true,
                b,
                c: slot.bind(&model.grad),
                m: d,
                n,
                k: rows,
            };
            let stages = ops.stages(segmenting)?;
            matmul::product(ctx, ops, stages)
        };
        let reductions = [
            reduce(y.as_entire_binding(), d, rev_w)?,
            reduce(seq.ones.as_entire_binding(), 1, rev_b)?,
        ];
        let cfg = OptimizerConfig {
            lr: hyper.dtp.lr_reverse,
            ..hyper.opt.clone()
        };
        let range = Slot {
            start: rev_w.start,
            len: l.len - rev_w.start,
        };
        let reverse = Self {
            mats,
            vt,
            delta,
            y,
            transposes,
            kernel,
            reductions,
            // The reverse layer holds none of the head.
            step: OptimizerStep::over(ctx, model, &cfg, range, 0..0)?,
            blocks,
            seed: hyper.dtp.noise_seed,
        };
        reverse.set_iteration(ctx, 1);
        Ok(reverse)
    }

    /// Draws the noise of iteration `iteration` (1 for a run's first) and steps the
    /// optimizer as its step number: call before each submit of a training step.
    pub fn set_iteration(&self, ctx: &GpuContext, iteration: u64) {
        let key = NoiseKey::new(self.seed, iteration);
        let blocks: Vec<Dims> = self
            .blocks
            .iter()
            .map(|&b| Dims {
                k0: key.k0,
                k1: key.k1,
                ..b
            })
            .collect();
        self.kernel.rewrite(ctx, &blocks);
        self.step.set_step(ctx, iteration);
    }

    /// Fills every buffer it writes with NaN (`one_shot`'s poisoning of outputs).
    pub fn poison(&self, ctx: &GpuContext) {
        for buffer in [&self.mats, &self.delta, &self.y] {
            poison(ctx, buffer, buffer.size() as usize / 4);
        }
    }

    /// The reverse layer's gradient into its slots of the gradient buffer.
    pub fn record_gradient(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.transposes.iter().for_each(|t| t.record(pass));
        self.kernel.record(pass);
        self.reductions.iter().for_each(|r| r.record(pass));
    }

    /// The reverse layer's optimizer step, then Vᵀ of the stepped layer for the targets.
    pub fn record_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.step.record(pass);
        self.transposes[1].record(pass);
    }
}
