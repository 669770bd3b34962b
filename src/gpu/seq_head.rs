//! The heads at every step and their loss (`shaders/seq_head.wgsl` between products of
//! `matmul.wgsl`; twin of `src/cpu/seq_head.rs`): batched products over all T·B rows of
//! h, in blocks of whole steps so that a block's outputs fit `LOGIT_BLOCK_BYTES`
//! (docs/ALGORITHM.md §13). No kernel loops over time: the products walk their reductions
//! (over a block's rows, d or q) in bounded segments like the gradients' reductions, and
//! the per-step losses are summed a bounded number of steps per launch.

use anyhow::Result;

use crate::gpu::buffers::{grid_1d, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::Shape;
use crate::gpu::loops;
use crate::gpu::matmul::{product_placed, Operands, Placement};
use crate::gpu::segments::{split, Segmenting};
use crate::gpu::transpose;

/// The uniform block of seq_head.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    outputs: u32,
    first_row: u32,
    rows: u32,
    groups_x: u32,
    first_step: u32,
    step_count: u32,
}

/// The launches of the heads at every step and the buffers only they use.
pub(crate) struct SeqHead {
    /// Vᵀ, then per block: outputs, softmax, g, ∇V, ∇c; then the statistics.
    launches: Vec<Dispatch>,
    /// Per step (ℓ_t, hits) [T, 2].
    pub step_stats: wgpu::Buffer,
    /// The outputs of a block of steps [k·B, q], then ∂ℓ/∂z in their place.
    pub logits: wgpu::Buffer,
    /// Per row (loss, hit) [T·B, 2].
    pub row_stats: wgpu::Buffer,
    /// Vᵀ [d, q], rewritten each step.
    _vt: wgpu::Buffer,
}

impl SeqHead {
    /// The launches for a batch of `shape` on `seq` (its h in f32: `Plan::check` refuses
    /// f16 storage with outputs at every step), `block_steps` steps at a time (at least
    /// 1; `limits::logit_block_steps` says how many fit), writing g [T, B, d] into
    /// `seq.g_top`, ∇V and ∇c into the model's gradients, ℓ and the accuracy into
    /// `seq.stats`, every launch bounded as `segmenting` says.
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        seq: &SeqBuffers,
        shape: Shape,
        block_steps: usize,
        segmenting: &Segmenting,
    ) -> Result<Self> {
        let l = &model.layout;
        let (d, q) = (l.dims.hidden, l.dims.output);
        let Shape { batch: b, steps: t } = shape;
        let k = block_steps.clamp(1, t.max(1));
        let none = wgpu::BufferUsages::empty();
        let f = |n: usize| 4 * n as u64;
        let vt = ctx.storage(&format!("Vᵀ [d={d}, q={q}]"), f(d * q), none)?;
        let logits = ctx.storage(
            &format!("outputs of a block of steps [k·B={}, q={q}]", k * b),
            f(k * b * q),
            none,
        )?;
        let row_stats = ctx.storage("per-row loss and hit [T·B, 2]", f(2 * t * b), none)?;
        let step_stats = ctx.storage("per-step loss and hits [T, 2]", f(2 * t), none)?;
        let mut launches = vec![transpose::dispatch(
            ctx,
            l.v.bind(&model.theta),
            vt.as_entire_binding(),
            q,
            d,
        )?];
        let dims = |first_row: usize, rows: usize, groups_x: u32| Dims {
            batch: b as u32,
            steps: t as u32,
            outputs: q as u32,
            first_row: first_row as u32,
            rows: rows as u32,
            groups_x,
            first_step: 0,
            step_count: 0,
        };
        // A product's reduction in launches of bounded stages.
        let product = |ops: Operands<'_>, at: Placement| {
            let stages = ops.stages(segmenting)?;
            product_placed(ctx, ops, at, stages)
        };
        for t0 in (0..t).step_by(k) {
            let rows = (k.min(t - t0)) * b;
            let (first, first_h) = (t0 * b, (t0 + 1) * b);
            let block = || logits.as_entire_binding();
            // Z = H_block Vᵀ: rows of h_{t0+1} … at their place in h [T+1, B, d].
            let z = Operands {
                a: seq.h.binding(),
                trans_a: false,
                b: vt.as_entire_binding(),
                c: block(),
                m: rows,
                n: q,
                k: d,
            };
            let at_h = Placement {
                a: first_h * d,
                ..Placement::default()
            };
            launches.push(product(z, at_h)?);
            let (grid, _) = grid_1d(ctx, rows, 1);
            launches.push(Dispatch::new(
                ctx,
                &ctx.kernels.softmax_rows,
                &dims(first, rows, grid[0]),
                &[
                    (1, l.c.bind(&model.theta)),
                    (2, seq.y.as_entire_binding()),
                    (3, block()),
                    (4, row_stats.as_entire_binding()),
                ],
                grid,
            )?);
            // g = (∂ℓ/∂Z) V into the block's rows of g [T, B, d].
            let g = Operands {
                a: block(),
                trans_a: false,
                b: l.v.bind(&model.theta),
                c: seq.g_top.as_entire_binding(),
                m: rows,
                n: d,
                k: q,
            };
            let at_g = Placement {
                c: first * d,
                ..Placement::default()
            };
            launches.push(product(g, at_g)?);
            // ∇V (+)= (∂ℓ/∂Z)ᵀ H_block, ∇c (+)= (∂ℓ/∂Z)ᵀ 1.
            let accumulate = t0 > 0;
            let grad_v = Operands {
                a: block(),
                trans_a: true,
                b: seq.h.binding(),
                c: l.v.bind(&model.grad),
                m: q,
                n: d,
                k: rows,
            };
            let at_v = Placement {
                b: first_h * d,
                accumulate,
                ..Placement::default()
            };
            launches.push(product(grad_v, at_v)?);
            let grad_c = Operands {
                a: block(),
                trans_a: true,
                b: seq.ones.as_entire_binding(),
                c: l.c.bind(&model.grad),
                m: q,
                n: 1,
                k: rows,
            };
            let at_c = Placement {
                accumulate,
                ..Placement::default()
            };
            launches.push(product(grad_c, at_c)?);
        }
        // The per-step losses and their means, a bounded number of steps per launch.
        let steps = segmenting.quota(&loops::step_stats(shape))?;
        let blocks: Vec<Dims> = split(t, steps)
            .into_iter()
            .map(|seg| Dims {
                first_step: seg.first,
                step_count: seg.count,
                ..dims(0, t * b, 1)
            })
            .collect();
        launches.push(Dispatch::segments(
            ctx,
            &ctx.kernels.step_stats,
            &blocks,
            &[
                (4, row_stats.as_entire_binding()),
                (5, step_stats.as_entire_binding()),
                (6, seq.stats.as_entire_binding()),
            ],
            [1, 1, 1],
        )?);
        Ok(Self {
            launches,
            step_stats,
            logits,
            row_stats,
            _vt: vt,
        })
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.launches.iter().for_each(|d| d.record(pass));
    }
}
