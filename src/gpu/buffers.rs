//! The device buffers of a model and of a batch shape, allocated once and reused step
//! after step, and the small helpers every kernel wrapper shares (poisoning, grids).

use std::sync::OnceLock;

use anyhow::{bail, Result};

use crate::config::Loss;
use crate::error::Error;
use crate::gpu::context::GpuContext;
use crate::gpu::history::History;
use crate::gpu::layout::{cg_steps_len, rows_f32, stack, ParamLayout, Shape, MAX_HIDDEN};
use crate::gpu::packing::Packing;
use crate::gpu::storage::Storage;
use crate::gpu::tokens::{check_embedding_sizes, EmbeddingBuffers};
use crate::model::{CellKind, Dims, Params};
use crate::tasks::{Batch, Targets};

mod solver;
pub(crate) use solver::{CgBuffers, GateBuffers};

/// Parameters, gradients and optimizer slots (flat, `ParamLayout`), the CG state whose P
/// persists between steps to warm-start the next solve (and the per-gate inversion's,
/// made when a workspace first needs them), and the sticky record of failed per-step
/// solves of the jacobian sweep. Independent of B and T.
pub(crate) struct ModelBuffers {
    pub layout: ParamLayout,
    pub theta: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pub cg: CgBuffers,
    /// Wᵀ [d, g·d] and Pᵀ [d, d], rewritten each step for the kernels that read them
    /// column-wise.
    pub wt: wgpu::Buffer,
    pub pt: wgpu::Buffer,
    /// jacobian.wgsl's failure record: count, worst iterations, worst residual (f32 bits).
    pub sweep_failures: wgpu::Buffer,
    /// The GRU's per-gate inversion: allocated by `gates` on first use only, since no
    /// other plan reads them.
    gates: OnceLock<GateBuffers>,
}

impl ModelBuffers {
    /// Buffers for a model of `cell` with sizes `dims`.
    pub fn new(ctx: &GpuContext, cell: CellKind, dims: Dims) -> Result<Self> {
        Self::with_extras(ctx, cell, dims, None, false)
    }

    /// Buffers for the model `params` belong to: its cell, its sizes and, where it has
    /// them, a trained embedding table and DTP's reverse layer.
    pub fn for_params(ctx: &GpuContext, params: &Params) -> Result<Self> {
        let (cell, dims) = (params.cell, params.dims());
        Self::with_extras(ctx, cell, dims, params.vocabulary(), params.dtp.is_some())
    }

    fn with_extras(
        ctx: &GpuContext,
        cell: CellKind,
        dims: Dims,
        vocabulary: Option<usize>,
        reverse: bool,
    ) -> Result<Self> {
        if dims.hidden > MAX_HIDDEN {
            return Err(Error::DeviceLimit {
                limit: "MAX_HIDDEN".into(),
                needed: Some(dims.hidden as u64),
                allowed: MAX_HIDDEN as u64,
                message: format!(
                    "hidden size d = {} exceeds the GPU kernels' limit of {MAX_HIDDEN} \
                     (they keep one d-vector in workgroup memory)",
                    dims.hidden
                ),
            }
            .into());
        }
        let align = ctx.limits.min_storage_buffer_offset_alignment;
        if let Some(rows) = vocabulary {
            check_embedding_sizes(ctx, rows, dims)?;
        }
        let layout = ParamLayout::new(cell, dims, align, vocabulary, reverse);
        let g = cell.gates();
        let bytes = 4 * layout.len as u64;
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            theta: ctx.storage("parameters", bytes, none)?,
            grad: ctx.storage("gradients", bytes, none)?,
            m: ctx.storage("optimizer first slot", bytes, none)?,
            v: ctx.storage("optimizer second slot", bytes, none)?,
            cg: CgBuffers::new(ctx, dims.hidden)?,
            wt: ctx.storage(
                "Wᵀ [d, g·d]",
                4 * (g * dims.hidden * dims.hidden) as u64,
                none,
            )?,
            pt: ctx.storage("Pᵀ [d, d]", 4 * (dims.hidden * dims.hidden) as u64, none)?,
            sweep_failures: ctx.storage("per-step CG failure record", 12, none)?,
            gates: OnceLock::new(),
            layout,
        })
    }

    /// The per-gate inversion's buffers, allocated on the first call.
    pub fn gates(&self, ctx: &GpuContext) -> Result<&GateBuffers> {
        if let Some(gates) = self.gates.get() {
            return Ok(gates);
        }
        let made = GateBuffers::new(ctx, self.layout.dims.hidden)?;
        Ok(self.gates.get_or_init(|| made))
    }

    pub fn write_params(&self, ctx: &GpuContext, params: &Params) -> Result<()> {
        if params.cell != self.layout.cell {
            bail!(
                "parameters of a {:?} cell given to buffers of a {:?} cell",
                params.cell,
                self.layout.cell
            );
        }
        if params.dtp.is_some() != self.layout.rev.is_some() {
            bail!(
                "parameters with and buffers without DTP's reverse layer, or the other way round"
            );
        }
        if params.vocabulary() != self.layout.embed.map(|(_, rows)| rows) {
            bail!(
                "parameters with an embedding table of {:?} rows given to buffers for {:?}",
                params.vocabulary(),
                self.layout.embed.map(|(_, rows)| rows)
            );
        }
        params.check_dims(self.layout.dims)?;
        ctx.write(&self.theta, 0, &self.layout.pack(params));
        Ok(())
    }

    pub fn read_params(&self, ctx: &GpuContext, buffer: &wgpu::Buffer) -> Result<Params> {
        Ok(self.layout.unpack(&ctx.read(buffer, 0, self.layout.len)?))
    }
}

/// Everything sized by the batch: inputs, targets, histories, head scratch.
pub(crate) struct SeqBuffers {
    pub x: wgpu::Buffer,
    /// Labels as u32 (\[B\], or per step \[T, B\]), or real targets as their f32 bits.
    pub y: wgpu::Buffer,
    pub h: History,
    /// Target offsets v_t − h_t.
    pub dv: History,
    /// δ [T, B, d] of the tanh RNN; the GRU's dgh [T, B, 3d] (∂/∂(W h_{t−1} + b_hh)).
    pub delta: wgpu::Buffer,
    /// The GRU's dgi [T, B, 3d] (∂/∂(U x_t + b_ih)); one unused element for the tanh RNN.
    pub dgi: wgpu::Buffer,
    /// The GRU's r | z | n | hn per step [T, B, 4d]; one unused element for the tanh RNN.
    pub gates: wgpu::Buffer,
    /// The jacobian sweep's per-step, per-sequence CG (iterations, residual) [T, B, 2],
    /// then the state of the B solves between launches (`jacobian::cg_steps_len`).
    pub cg_steps: wgpu::Buffer,
    /// The state one segment of the forward pass or of the target sweep hands to the next
    /// [B, d], in f32 whatever the histories' storage.
    pub carry: wgpu::Buffer,
    /// g_T = ∇_{h_T} ℓ [B, d]; with outputs at every step g_t for t = 1 … T [T, B, d].
    pub g_top: wgpu::Buffer,
    /// z [B, q] | dℓ/dz [B, q] | per-sequence (loss, hits) [B, 2].
    pub scratch: wgpu::Buffer,
    /// The backward errors e [T, B, d] (δ before the tanh derivative), for diagnostics.
    pub err: wgpu::Buffer,
    /// Squared per-step norms \[T\] that the diagnostics reduce into.
    pub norms_sq: wgpu::Buffer,
    /// T·B ones: ∇b = Δᵀ 1 reuses the matmul kernel.
    pub ones: wgpu::Buffer,
    /// [loss, accuracy] of the batch.
    pub stats: wgpu::Buffer,
    /// With a trained embedding table: the token ids and their CSR index, and the
    /// per-token sums of δ.
    pub embedding: Option<EmbeddingBuffers>,
}

impl SeqBuffers {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: &GpuContext,
        cell: CellKind,
        dims: Dims,
        shape: Shape,
        storage: Storage,
        dv_scale: f32,
        loss: Loss,
        vocabulary: Option<usize>,
    ) -> Result<Self> {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let Shape { batch: b, steps: t } = shape;
        // Outputs at every step: a label and a loss gradient per step.
        let (labels, grad_rows) = if loss.every_step() {
            (t * b, t * b)
        } else {
            (b * q.max(1), b)
        };
        let g = cell.gates();
        // The GRU's gates are the widest per-step tensor (4d).
        let width = if cell == CellKind::Gru {
            4 * d
        } else {
            storage.row_len(d)
        };
        let largest = (t + 1) * b * width.max(p);
        if u32::try_from(largest).is_err() {
            bail!("a batch of B = {b} sequences of T = {t} steps with d = {d}, p = {p} has {largest} elements per tensor, more than 32-bit indices reach");
        }
        let f = |n: usize| 4 * n as u64;
        let none = wgpu::BufferUsages::empty();
        let ones = ctx.storage("ones [T·B]", f(t * b), none)?;
        ctx.write(&ones, 0, &vec![1.0f32; t * b]);
        Ok(Self {
            x: ctx.storage(
                &format!("inputs x [T={t}, B={b}, p={p}]"),
                f(t * b * p),
                none,
            )?,
            y: ctx.storage("targets y", f(labels), none)?,
            h: History::new(ctx, "hidden states h", storage, [t + 1, b, d], 1.0)?,
            dv: History::new(
                ctx,
                "target offsets v − h",
                storage,
                [t + 1, b, d],
                dv_scale,
            )?,
            delta: ctx.storage(
                &format!("errors δ [T={t}, B={b}, g·d={}]", g * d),
                f(t * b * g * d),
                none,
            )?,
            dgi: match cell {
                CellKind::Gru => ctx.storage(
                    &format!("GRU input-side errors dgi [T={t}, B={b}, 3d={}]", 3 * d),
                    f(t * b * 3 * d),
                    none,
                )?,
                CellKind::Tanh => ctx.storage("unused dgi", 4, none)?,
            },
            gates: match cell {
                CellKind::Gru => ctx.storage(
                    &format!("GRU gates r|z|n|hn [T={t}, B={b}, 4d={}]", 4 * d),
                    f(t * b * 4 * d),
                    none,
                )?,
                CellKind::Tanh => ctx.storage("unused gates", 4, none)?,
            },
            cg_steps: ctx.storage(
                &format!("per-step CG statistics [T={t}, B={b}, 2] and solve state"),
                f(cg_steps_len(t, b, d)),
                none,
            )?,
            carry: ctx.storage(&format!("segment state [B={b}, d={d}]"), f(b * d), none)?,
            err: ctx.storage(
                &format!("errors e [T={t}, B={b}, d={d}]"),
                f(t * b * d),
                none,
            )?,
            norms_sq: ctx.storage("per-step squared norms [T]", f(t), none)?,
            g_top: ctx.storage(
                "loss gradient g_T [B, d], or g [T, B, d] at every step",
                f(grad_rows * d),
                none,
            )?,
            scratch: ctx.storage("head scratch", f(2 * b * q + 2 * b), none)?,
            ones,
            stats: ctx.storage("batch statistics", f(2), none)?,
            embedding: vocabulary
                .map(|v| EmbeddingBuffers::new(ctx, v, d, shape))
                .transpose()?,
        })
    }

    /// Uploads the inputs and targets of `batch`: with a trained embedding table its token
    /// ids and their index (embedding_gather.wgsl then fills x from the table), else x.
    /// A trained table and a batch without token ids is an error
    /// (`validate::check_tokens` refuses those first).
    pub fn write_batch(&self, ctx: &GpuContext, batch: &Batch) -> anyhow::Result<()> {
        match (&self.embedding, &batch.tokens) {
            (Some(e), Some(ids)) => e.write(ctx, ids),
            (Some(_), None) => {
                anyhow::bail!("a trained embedding table needs the batch's token ids")
            }
            (None, _) => ctx.write(&self.x, 0, &stack(&batch.x)),
        }
        let y: Vec<u32> = match &batch.y {
            Targets::Labels(l) => l.iter().map(|&c| c as u32).collect(),
            Targets::Values(v) => rows_f32(v).iter().map(|v| v.to_bits()).collect(),
            // Step-major [T, B], as the rows of h_1 … h_T: l (B×T) column by column.
            Targets::StepLabels(l) => l.iter().map(|&c| c as u32).collect(),
        };
        ctx.write(&self.y, 0, &y);
        Ok(())
    }
}

/// Fills `count` elements of `buffer` with NaN so that a kernel that fails to write an
/// element cannot pass a check.
pub(crate) fn poison(ctx: &GpuContext, buffer: &wgpu::Buffer, count: usize) {
    ctx.write(buffer, 0, &vec![f32::NAN; count]);
}

/// A workgroup grid covering `invocations` in workgroups of `wg`, folded into 2-D when it
/// exceeds the per-dimension limit; also returns the invocations per grid row.
pub(crate) fn grid_1d(ctx: &GpuContext, invocations: usize, wg: usize) -> ([u32; 3], u32) {
    let groups = invocations.div_ceil(wg).max(1) as u64;
    let max = u64::from(ctx.limits.max_compute_workgroups_per_dimension);
    let x = groups.min(max);
    let y = groups.div_ceil(x);
    ([x as u32, y as u32, 1], (x * wg as u64) as u32)
}

/// Checks that one workgroup per item fits in a single grid dimension.
pub(crate) fn per_item_groups(ctx: &GpuContext, items: usize, what: &str) -> Result<[u32; 3]> {
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    if items > max {
        bail!("{what} = {items} exceeds this device's max_compute_workgroups_per_dimension ({max}), the most workgroups one kernel launch can have");
    }
    Ok([items as u32, 1, 1])
}

/// The launch grid of a tanh RNN time loop over `batch` sequences packed as `packing`
/// says, checked against the device's workgroups per dimension.
pub(crate) fn time_loop_groups(
    ctx: &GpuContext,
    packing: Packing,
    batch: usize,
) -> Result<[u32; 3]> {
    per_item_groups(
        ctx,
        packing.workgroups(batch),
        "batch size B / sequences per workgroup",
    )
}
