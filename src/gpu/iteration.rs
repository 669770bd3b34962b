//! One whole TP-RI or BP iteration on the GPU (twin of `src/cpu/iteration.rs`): the
//! buffers it needs, allocated once per shape, and the kernels' launches recorded in order
//! into a single compute pass.
//!
//! Layout conventions (row-major, sequences as rows like the CPU reference; f32 unless
//! said otherwise): x [T, B, p]; h [T+1, B, d] (h_0 = 0 included) and the target offsets
//! dv = v − h [T+1, B, d] (see target_sweep.wgsl for why offsets), both `History`s in
//! the backend's `Storage` (f16 pads rows to even d); δ [T, B, d]; g_T [B, d];
//! parameters, gradients and optimizer slots each one flat buffer holding W, U, b, V, c at
//! offsets aligned for binding (`ParamLayout`).

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::config::{Hyper, Loss, Method, TpGrad};
use crate::cpu::iteration::check_batch;
use crate::gpu::context::GpuContext;
use crate::gpu::inverse::{Cg, CgBuffers};
use crate::gpu::kernel::Dispatch;
use crate::gpu::norms::StepNorms;
use crate::gpu::profile::Phase;
use crate::gpu::storage::{History, Storage};
use crate::gpu::{bptt, forward, head, matmul, optimizer, target_sweep, MAX_HIDDEN};
use crate::model::{Dims, Params};
use crate::tasks::{Batch, Targets};

/// Number of sequences and steps of a batch: what the per-batch buffers are sized by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub steps: usize,
}

impl Shape {
    pub fn of(batch: &Batch) -> Self {
        Self {
            batch: batch.batch_size(),
            steps: batch.seq_len(),
        }
    }
}

/// Where one tensor sits in a flat parameter buffer, in elements.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub start: usize,
    pub len: usize,
}

impl Slot {
    /// This slot of `buffer` as a binding.
    pub fn bind<'a>(&self, buffer: &'a wgpu::Buffer) -> wgpu::BindingResource<'a> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: 4 * self.start as u64,
            size: std::num::NonZeroU64::new(4 * self.len.max(1) as u64),
        })
    }
}

/// Offsets of W, U, b, V, c in the flat parameter buffers; each starts at a multiple of
/// the device's storage-binding alignment so kernels can bind it alone.
#[derive(Clone, Debug)]
pub(crate) struct ParamLayout {
    pub dims: Dims,
    pub w: Slot,
    pub u: Slot,
    pub b: Slot,
    pub v: Slot,
    pub c: Slot,
    pub len: usize,
}

impl ParamLayout {
    pub fn new(dims: Dims, align_bytes: u32) -> Self {
        let align = (align_bytes as usize / 4).max(1);
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let mut end = 0;
        let mut slot = |len: usize| {
            let s = Slot { start: end, len };
            end = (end + len.max(1)).next_multiple_of(align);
            s
        };
        let (w, u, b, v, c) = (slot(d * d), slot(d * p), slot(d), slot(q * d), slot(q));
        Self {
            dims,
            w,
            u,
            b,
            v,
            c,
            len: end,
        }
    }

    pub fn slots(&self) -> [Slot; 5] {
        [self.w, self.u, self.b, self.v, self.c]
    }

    /// `params` flattened into this layout (padding zero).
    pub fn pack(&self, params: &Params) -> Vec<f32> {
        let mut out = vec![0.0; self.len];
        for (slot, (_, m)) in self.slots().iter().zip(params.tensors()) {
            out[slot.start..slot.start + slot.len].copy_from_slice(&rows_f32(m));
        }
        out
    }

    /// The tensors back out of a flat buffer.
    pub fn unpack(&self, data: &[f32]) -> Params {
        let mut params = Params::zeros(self.dims);
        for (slot, m) in self.slots().iter().zip(params.tensors_mut()) {
            *m = matrix(
                &data[slot.start..slot.start + slot.len],
                m.nrows(),
                m.ncols(),
            );
        }
        params
    }
}

/// `m` in row-major f32.
pub(crate) fn rows_f32(m: &DMatrix<f64>) -> Vec<f32> {
    m.transpose().iter().map(|&v| v as f32).collect()
}

/// A `rows`×`cols` matrix from row-major f32.
pub(crate) fn matrix(data: &[f32], rows: usize, cols: usize) -> DMatrix<f64> {
    DMatrix::from_row_iterator(rows, cols, data.iter().map(|&v| f64::from(v)))
}

/// Matrices of equal shape, stacked row-major (e.g. the T steps of x).
pub(crate) fn stack(ms: &[DMatrix<f64>]) -> Vec<f32> {
    ms.iter().flat_map(rows_f32).collect()
}

/// Parameters, gradients and optimizer slots (flat, `ParamLayout`), and the CG state
/// whose P persists between steps to warm-start the next solve. Independent of B and T.
pub(crate) struct ModelBuffers {
    pub layout: ParamLayout,
    pub theta: wgpu::Buffer,
    pub grad: wgpu::Buffer,
    pub m: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pub cg: CgBuffers,
    /// Wᵀ and Pᵀ [d, d], rewritten each step for the kernels that read them column-wise.
    pub wt: wgpu::Buffer,
    pub pt: wgpu::Buffer,
}

impl ModelBuffers {
    pub fn new(ctx: &GpuContext, dims: Dims) -> Result<Self> {
        if dims.hidden > MAX_HIDDEN {
            bail!(
                "hidden size d = {} exceeds the GPU kernels' limit of {MAX_HIDDEN} \
                 (they keep one d-vector in workgroup memory)",
                dims.hidden
            );
        }
        let layout = ParamLayout::new(dims, ctx.limits.min_storage_buffer_offset_alignment);
        let bytes = 4 * layout.len as u64;
        let none = wgpu::BufferUsages::empty();
        Ok(Self {
            theta: ctx.storage("parameters", bytes, none)?,
            grad: ctx.storage("gradients", bytes, none)?,
            m: ctx.storage("optimizer first slot", bytes, none)?,
            v: ctx.storage("optimizer second slot", bytes, none)?,
            cg: CgBuffers::new(ctx, dims.hidden)?,
            wt: ctx.storage("Wᵀ [d, d]", 4 * (dims.hidden * dims.hidden) as u64, none)?,
            pt: ctx.storage("Pᵀ [d, d]", 4 * (dims.hidden * dims.hidden) as u64, none)?,
            layout,
        })
    }

    pub fn write_params(&self, ctx: &GpuContext, params: &Params) -> Result<()> {
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
    /// Labels as u32, or real targets as their f32 bits.
    pub y: wgpu::Buffer,
    pub h: History,
    /// Target offsets v_t − h_t.
    pub dv: History,
    pub delta: wgpu::Buffer,
    pub g_top: wgpu::Buffer,
    /// z [B, q] | dℓ/dz [B, q] | per-sequence (loss, hits) [B, 2].
    pub scratch: wgpu::Buffer,
    /// The backward errors e [T, B, d] (δ before the tanh derivative), for diagnostics.
    pub err: wgpu::Buffer,
    /// Squared per-step norms [T] that the diagnostics reduce into.
    pub norms_sq: wgpu::Buffer,
    /// T·B ones: ∇b = Δᵀ 1 reuses the matmul kernel.
    pub ones: wgpu::Buffer,
    /// [loss, accuracy] of the batch.
    pub stats: wgpu::Buffer,
}

impl SeqBuffers {
    fn new(
        ctx: &GpuContext,
        dims: Dims,
        shape: Shape,
        storage: Storage,
        dv_scale: f32,
    ) -> Result<Self> {
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let Shape { batch: b, steps: t } = shape;
        let largest = (t + 1) * b * storage.row_len(d).max(p);
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
            y: ctx.storage("targets y", f(b * q.max(1)), none)?,
            h: History::new(ctx, "hidden states h", storage, [t + 1, b, d], 1.0)?,
            dv: History::new(
                ctx,
                "target offsets v − h",
                storage,
                [t + 1, b, d],
                dv_scale,
            )?,
            delta: ctx.storage(
                &format!("errors δ [T={t}, B={b}, d={d}]"),
                f(t * b * d),
                none,
            )?,
            err: ctx.storage(
                &format!("errors e [T={t}, B={b}, d={d}]"),
                f(t * b * d),
                none,
            )?,
            norms_sq: ctx.storage("per-step squared norms [T]", f(t), none)?,
            g_top: ctx.storage("loss gradient g_T [B, d]", f(b * d), none)?,
            scratch: ctx.storage("head scratch", f(2 * b * q + 2 * b), none)?,
            ones,
            stats: ctx.storage("batch statistics", f(2), none)?,
        })
    }

    /// Uploads the inputs and targets of `batch`.
    pub fn write_batch(&self, ctx: &GpuContext, batch: &Batch) {
        ctx.write(&self.x, 0, &stack(&batch.x));
        let y: Vec<u32> = match &batch.y {
            Targets::Labels(l) => l.iter().map(|&c| c as u32).collect(),
            Targets::Values(v) => rows_f32(v).iter().map(|v| v.to_bits()).collect(),
        };
        ctx.write(&self.y, 0, &y);
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

/// Loop iterations llvmpipe (Mesa's software Vulkan driver) lets one invocation run in
/// total, over all its loops, before it silently cuts them short (gallivm's loop limiter,
/// present at least up to Mesa 22.3).
const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// On llvmpipe, refuses shapes whose kernels would run into its loop limiter: the results
/// would be wrong without any error. The counts are upper estimates of the loop iterations
/// of one invocation: the time loops (forward, sweep, BPTT: T steps of an eight-term dot
/// product over d, the inputs, and the copies) and the reductions over T·B rows (16 rows
/// per stage, about 24 loop iterations each).
fn check_llvmpipe_loops(ctx: &GpuContext, dims: Dims, shape: Shape) -> Result<()> {
    if !ctx.info.name.contains("llvmpipe") {
        return Ok(());
    }
    let (d, p) = (dims.hidden, dims.input);
    let time_loops = shape.steps * (d.div_ceil(256) * (d / 8 + 8 + p) + 3);
    let reductions = (shape.steps * shape.batch).div_ceil(16) * 24;
    let worst = time_loops.max(reductions);
    if worst > LLVMPIPE_LOOP_LIMIT {
        bail!(
            "T = {}, B = {}, d = {d}, p = {p} needs about {worst} loop iterations in one GPU              invocation; llvmpipe (software Vulkan) stops every invocation after              {LLVMPIPE_LOOP_LIMIT} without an error, so its results would be wrong. Use a real              GPU or the CPU backend, or shorter sequences and smaller batches",
            shape.steps,
            shape.batch
        );
    }
    Ok(())
}

/// All buffers and kernel launches of an iteration for one batch shape and one set of
/// hyperparameters. Built once and reused step after step.
pub(crate) struct Workspace {
    pub shape: Shape,
    pub seq: SeqBuffers,
    /// Wᵀ, then the time loop.
    pub forward: [Dispatch; 2],
    pub head: head::HeadDispatches,
    pub cg: Option<Cg>,
    /// Pᵀ, then the time loop.
    pub sweep: Option<[Dispatch; 2]>,
    pub bptt: Dispatch,
    /// ∇W, ∇U, ∇b by matmul over the T·B rows of δ.
    pub reductions: [Dispatch; 3],
    /// ‖e_t‖ for t = 1 … T, run on demand after a step.
    pub error_norms: StepNorms,
    /// TP: ‖v_t − h_t‖ for t = 1 … T, run on demand after a step.
    pub target_norms: Option<StepNorms>,
    pub optimizer: optimizer::OptimizerStep,
}

impl Workspace {
    pub fn new(
        ctx: &GpuContext,
        model: &ModelBuffers,
        shape: Shape,
        hyper: &Hyper,
        storage: Storage,
    ) -> Result<Self> {
        let dims = model.layout.dims;
        check_llvmpipe_loops(ctx, dims, shape)?;
        let tp = (hyper.method == Method::Tp).then_some(&hyper.tp);
        let dv_scale = tp.map_or(1.0, |tp| storage.dv_scale(tp));
        let seq = SeqBuffers::new(ctx, dims, shape, storage, dv_scale)?;
        let through_time = tp.is_none_or(|tp| tp.tp_grad == TpGrad::ThroughTime);
        let l = &model.layout;
        let rows = shape.steps * shape.batch;
        let step_len = shape.batch * dims.hidden;
        // b: the B operand and its storage (h is a history; x and the ones are f32).
        let reduce = |b: wgpu::BindingResource<'_>, b_storage, n: usize, slot: Slot| {
            let ops = matmul::Operands {
                a: seq.delta.as_entire_binding(),
                trans_a: true,
                b,
                c: slot.bind(&model.grad),
                m: dims.hidden,
                n,
                k: rows,
            };
            matmul::product_with_b_in(ctx, ops, b_storage)
        };
        Ok(Self {
            forward: forward::dispatch(ctx, model, &seq, shape)?,
            head: head::HeadDispatches::new(ctx, model, &seq, shape, hyper.loss)?,
            cg: tp.map(|tp| Cg::new(ctx, model, tp)).transpose()?,
            sweep: tp
                .map(|tp| target_sweep::dispatch(ctx, model, &seq, shape, tp))
                .transpose()?,
            bptt: bptt::dispatch(ctx, model, &seq, shape, tp.is_some(), through_time)?,
            reductions: [
                reduce(seq.h.binding(), storage, dims.hidden, l.w)?,
                reduce(seq.x.as_entire_binding(), Storage::F32, dims.input, l.u)?,
                reduce(seq.ones.as_entire_binding(), Storage::F32, 1, l.b)?,
            ],
            optimizer: optimizer::OptimizerStep::new(ctx, model, &hyper.opt)?,
            error_norms: StepNorms::new(ctx, &seq.err, 0, shape.steps, step_len, &seq.norms_sq)?,
            // dv holds v_0 … v_T: skip v_0.
            target_norms: tp
                .map(|_| StepNorms::of_history(ctx, &seq.dv, 1, &seq.norms_sq))
                .transpose()?,
            seq,
            shape,
        })
    }

    /// Buffers for a single run of some kernels on `batch` at `params`, as the one-shot
    /// functions of the kernel modules use them: inputs uploaded, outputs poisoned.
    pub fn one_shot(
        ctx: &GpuContext,
        params: &Params,
        batch: &Batch,
        hyper: &Hyper,
        storage: Storage,
    ) -> Result<(ModelBuffers, Self)> {
        check_batch(params, batch)?;
        let model = ModelBuffers::new(ctx, params.dims())?;
        model.write_params(ctx, params)?;
        let ws = Self::new(ctx, &model, Shape::of(batch), hyper, storage)?;
        ws.seq.write_batch(ctx, batch);
        ws.poison_outputs(ctx, &model);
        Ok((model, ws))
    }

    /// Forward pass and head: loss, g_T, ∇V, ∇c.
    pub fn record_loss(&self, pass: &mut wgpu::ComputePass<'_>) {
        for phase in [Phase::Forward, Phase::Head] {
            self.record_phase(pass, phase, false);
        }
    }

    /// After `record_loss`: the recurrent gradients (TP surrogate or BP). `warm` starts
    /// CG from the P left by the previous step.
    pub fn record_gradients(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        for phase in [Phase::Inverse, Phase::Sweep, Phase::Bptt, Phase::Reductions] {
            self.record_phase(pass, phase, warm);
        }
    }

    /// The launches of one phase (none for the TP phases of a BP workspace). `warm` only
    /// matters for `Phase::Inverse`.
    pub fn record_phase(&self, pass: &mut wgpu::ComputePass<'_>, phase: Phase, warm: bool) {
        match phase {
            Phase::Forward => self.forward.iter().for_each(|d| d.record(pass)),
            Phase::Head => self.head.record(pass),
            Phase::Inverse => {
                if let Some(cg) = &self.cg {
                    cg.record(pass, warm);
                }
            }
            Phase::Sweep => {
                if let Some(sweep) = &self.sweep {
                    sweep.iter().for_each(|d| d.record(pass));
                }
            }
            Phase::Bptt => self.bptt.record(pass),
            Phase::Reductions => self.reductions.iter().for_each(|r| r.record(pass)),
            Phase::Optimizer => self.optimizer.record(pass),
        }
    }

    /// Poisons every output of an iteration (see `poison`).
    pub fn poison_outputs(&self, ctx: &GpuContext, model: &ModelBuffers) {
        let Shape { batch: b, steps: t } = self.shape;
        let d = model.layout.dims.hidden;
        self.seq.h.poison(ctx);
        self.seq.dv.poison(ctx);
        poison(ctx, &self.seq.delta, t * b * d);
        poison(ctx, &self.seq.err, t * b * d);
        poison(ctx, &self.seq.g_top, b * d);
        poison(ctx, &self.seq.stats, 2);
        for slot in model.layout.slots() {
            ctx.write(
                &model.grad,
                4 * slot.start as u64,
                &vec![f32::NAN; slot.len],
            );
        }
        poison(ctx, &model.cg.x, d * d);
    }
}

/// The loss as head.wgsl encodes it.
pub(crate) fn loss_code(loss: Loss) -> u32 {
    match loss {
        Loss::CrossEntropy => 0,
        Loss::Mse => 1,
    }
}
