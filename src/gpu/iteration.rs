//! One whole TP-RI or BP iteration on the GPU (twin of `src/cpu/iteration.rs`): the
//! buffers it needs, allocated once per shape, and the kernels' launches recorded in order
//! into a single compute pass.
//!
//! Layout conventions (row-major, sequences as rows like the CPU reference; f32 unless
//! said otherwise): x [T, B, p]; h [T+1, B, d] (h_0 = 0 included) and the target offsets
//! dv = v − h [T+1, B, d] (see target_sweep.wgsl for why offsets), both `History`s in
//! the backend's `Storage` (f16 pads rows to even d; f16 only for the tanh RNN with the
//! analytic inversion); δ [T, B, g·d] (g = 3 gates for the GRU, whose δ is dgh, with dgi
//! beside it); the GRU's gates [T, B, 4d]; g_T [B, d]; parameters, gradients and
//! optimizer slots each one flat buffer holding the cell's tensors (W, U, b, [b_hh,] V, c)
//! at offsets aligned for binding (`ParamLayout`).
//!
//! Which kernels run depends on the cell and the inversion: forward.wgsl or
//! gru_forward.wgsl; for TP either CG for P and target_sweep.wgsl (analytic, tanh only) or
//! jacobian.wgsl's sweep with its per-step CG (jacobian, either cell); bptt.wgsl or
//! gru_bptt.wgsl; then the same matmul reductions and optimizer, which only see more or
//! larger slots for the GRU.

use anyhow::{bail, Result};
use nalgebra::DMatrix;

use crate::config::{Hyper, Loss, Method, TpGrad};
use crate::gpu::context::GpuContext;
use crate::gpu::inverse::{Cg, CgBuffers};
use crate::gpu::jacobian::Solve;
use crate::gpu::kernel::Dispatch;
use crate::gpu::norms::StepNorms;
use crate::gpu::profile::Phase;
use crate::gpu::storage::{History, Storage};
use crate::gpu::{
    bptt, forward, gru_bptt, gru_forward, head, jacobian, matmul, optimizer, target_sweep,
    MAX_HIDDEN,
};
use crate::model::{CellKind, Dims, Params};
use crate::tasks::{Batch, Targets};
use crate::validate::check_batch;

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

/// Offsets of the cell's tensors (`Params::tensors` order: W, U, b, for the GRU b_hh, then
/// V, c) in the flat parameter buffers; each starts at a multiple of the device's
/// storage-binding alignment so kernels can bind it alone.
#[derive(Clone, Debug)]
pub(crate) struct ParamLayout {
    pub cell: CellKind,
    pub dims: Dims,
    /// w_hh [g·d, d] (g = `cell.gates()`).
    pub w: Slot,
    /// w_ih [g·d, p].
    pub u: Slot,
    /// b (the GRU's b_ih) [g·d].
    pub b: Slot,
    /// The GRU's b_hh [3d]; empty and not among `slots()` for the tanh RNN.
    pub b_hh: Slot,
    pub v: Slot,
    pub c: Slot,
    pub len: usize,
}

impl ParamLayout {
    pub fn new(cell: CellKind, dims: Dims, align_bytes: u32) -> Self {
        let align = (align_bytes as usize / 4).max(1);
        let Dims {
            input: p,
            hidden: d,
            output: q,
        } = dims;
        let g = cell.gates();
        let mut end = 0;
        let mut slot = |len: usize| {
            let s = Slot { start: end, len };
            end = (end + len.max(1)).next_multiple_of(align);
            s
        };
        let (w, u, b) = (slot(g * d * d), slot(g * d * p), slot(g * d));
        let b_hh = match cell {
            CellKind::Gru => slot(g * d),
            CellKind::Tanh => Slot { start: 0, len: 0 },
        };
        let (v, c) = (slot(q * d), slot(q));
        Self {
            cell,
            dims,
            w,
            u,
            b,
            b_hh,
            v,
            c,
            len: end,
        }
    }

    /// The slots in `Params::tensors` order.
    pub fn slots(&self) -> Vec<Slot> {
        match self.cell {
            CellKind::Tanh => vec![self.w, self.u, self.b, self.v, self.c],
            CellKind::Gru => vec![self.w, self.u, self.b, self.b_hh, self.v, self.c],
        }
    }

    /// All-zero parameters of this layout's cell and sizes.
    pub fn zeros(&self) -> Params {
        Params::zeros_of(self.cell, self.dims)
    }

    /// `params` flattened into this layout (padding zero).
    pub fn pack(&self, params: &Params) -> Vec<f32> {
        assert_eq!(params.cell, self.cell, "parameters of another cell");
        let mut out = vec![0.0; self.len];
        for (slot, (_, m)) in self.slots().iter().zip(params.tensors()) {
            out[slot.start..slot.start + slot.len].copy_from_slice(&rows_f32(m));
        }
        out
    }

    /// The tensors back out of a flat buffer.
    pub fn unpack(&self, data: &[f32]) -> Params {
        let mut params = self.zeros();
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

/// The inverse of `stack`.
pub(crate) fn unstack(data: &[f32], rows: usize, cols: usize) -> Vec<DMatrix<f64>> {
    data.chunks_exact((rows * cols).max(1))
        .map(|c| matrix(c, rows, cols))
        .collect()
}

/// Parameters, gradients and optimizer slots (flat, `ParamLayout`), the CG state whose P
/// persists between steps to warm-start the next solve, and the sticky record of failed
/// per-step solves of the jacobian sweep. Independent of B and T.
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
}

impl ModelBuffers {
    /// Buffers for a model of `cell` with sizes `dims`.
    pub fn new(ctx: &GpuContext, cell: CellKind, dims: Dims) -> Result<Self> {
        if dims.hidden > MAX_HIDDEN {
            bail!(
                "hidden size d = {} exceeds the GPU kernels' limit of {MAX_HIDDEN} \
                 (they keep one d-vector in workgroup memory)",
                dims.hidden
            );
        }
        let layout = ParamLayout::new(cell, dims, ctx.limits.min_storage_buffer_offset_alignment);
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
            layout,
        })
    }

    pub fn write_params(&self, ctx: &GpuContext, params: &Params) -> Result<()> {
        if params.cell != self.layout.cell {
            bail!(
                "parameters of a {:?} cell given to buffers of a {:?} cell",
                params.cell,
                self.layout.cell
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
    /// Labels as u32, or real targets as their f32 bits.
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
    /// The jacobian sweep's per-step, per-sequence CG (iterations, residual) [T, B, 2].
    pub cg_steps: wgpu::Buffer,
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
        cell: CellKind,
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
                &format!("per-step CG statistics [T={t}, B={b}, 2]"),
                f(t * b * 2),
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

/// Upper estimates of the loop iterations one invocation of each kernel of an iteration
/// runs, by kernel: what llvmpipe's loop limiter counts.
/// - the time loops of forward, gru_forward, target_sweep and bptt: T steps of an
///   eight-term dot product over d, the inputs, and the copies;
/// - gru_bptt: T steps of three such dot products (Wᵀ dgh, one gate block at a time);
/// - the jacobian sweep: T − 1 steps of up to `cg_max_iter` CG iterations, each two
///   Jacobian products and two workgroup sums (`jacobian::sweep_loops`);
/// - the solve for P: one such solve per column (`jacobian::inverse_loops`);
/// - the reductions over T·B rows (16 rows per stage, about 24 loop iterations each).
pub(crate) fn loop_counts(
    layout: &ParamLayout,
    shape: Shape,
    hyper: &Hyper,
) -> Vec<(&'static str, usize)> {
    let (d, p) = (layout.dims.hidden, layout.dims.input);
    let units = d.div_ceil(256);
    let dot = d / 8 + 8;
    // + 3: the inputs' and the copies' loops, and the storing of a history row.
    let time_loop = shape.steps * (units * (dot + p) + 3);
    let mut counts = vec![
        ("forward pass", time_loop),
        ("reductions", (shape.steps * shape.batch).div_ceil(16) * 24),
    ];
    counts.push(match layout.cell {
        CellKind::Tanh => ("backward recursion", time_loop),
        CellKind::Gru => (
            "GRU backward recursion",
            shape.steps * (units * (3 * dot + 7) + 2),
        ),
    });
    if hyper.method == Method::Tp {
        let solve = Solve::of(layout.cell, hyper);
        if solve.is_none() {
            counts.push((
                "solve for P (counting cg_max_iter CG iterations)",
                jacobian::inverse_loops(d, hyper.tp.cg_max_iter),
            ));
        }
        counts.push(match solve {
            None => ("target sweep", time_loop),
            Some(solve) => (
                match solve {
                    Solve::Jacobian(_) => {
                        "jacobian target sweep (counting cg_max_iter CG iterations at every step)"
                    }
                    Solve::Linear => {
                        "per-step target sweep (counting cg_max_iter CG iterations at every step)"
                    }
                },
                jacobian::sweep_loops(solve, d, shape.steps, hyper.tp.cg_max_iter),
            ),
        });
    }
    counts
}

/// Refuses f16 histories where they are not implemented: the GRU's kernels and the
/// per-step sweep (jacobian inversion, or `--solver per-step`) read and write f32
/// histories only.
pub(crate) fn check_storage(storage: Storage, cell: CellKind, hyper: &Hyper) -> Result<()> {
    if storage == Storage::F32 {
        return Ok(());
    }
    let solve = Solve::of(cell, hyper);
    if cell != CellKind::Tanh || solve.is_some() {
        let asked = match (cell, solve) {
            (CellKind::Gru, Some(_)) => "the GRU cell with --inversion jacobian",
            (CellKind::Gru, None) => "the GRU cell",
            (CellKind::Tanh, Some(Solve::Linear)) => "--solver per-step",
            (CellKind::Tanh, _) => "--inversion jacobian",
        };
        bail!(
            "{storage} storage is implemented for the tanh RNN's analytic inversion only, \
             not for {asked}; use --storage f32"
        );
    }
    Ok(())
}

/// On llvmpipe, refuses shapes whose kernels would run into its loop limiter: the results
/// would be wrong without any error. The counts are `loop_counts`.
fn check_llvmpipe_loops(
    ctx: &GpuContext,
    layout: &ParamLayout,
    shape: Shape,
    hyper: &Hyper,
) -> Result<()> {
    if !ctx.info.name.contains("llvmpipe") {
        return Ok(());
    }
    let counts = loop_counts(layout, shape, hyper);
    let (kernel, worst) = counts
        .into_iter()
        .max_by_key(|&(_, n)| n)
        .expect("every iteration has kernels");
    if worst > LLVMPIPE_LOOP_LIMIT {
        let (d, p) = (layout.dims.hidden, layout.dims.input);
        bail!(
            "T = {}, B = {}, d = {d}, p = {p} needs about {worst} loop iterations in one GPU \
             invocation of the {kernel}; llvmpipe (software Vulkan) stops every invocation \
             after {LLVMPIPE_LOOP_LIMIT} without an error, so its results would be wrong. Use a \
             real GPU or the CPU backend, or shorter sequences, smaller batches, or (for the \
             CG solves) a lower --cg-max-iter",
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
    /// Wᵀ, then the time loop (tanh RNN or GRU).
    pub forward: [Dispatch; 2],
    pub head: head::HeadDispatches,
    /// TP with the analytic inversion: the CG solve for P.
    pub cg: Option<Cg>,
    /// TP: Pᵀ and the analytic sweep, or the jacobian sweep (which reads the Wᵀ of the
    /// forward phase).
    pub sweep: Option<Vec<Dispatch>>,
    /// The backward recursion of the cell.
    pub bptt: Dispatch,
    /// By matmul over the T·B rows of δ (and the GRU's dgi): ∇W, ∇U, ∇b, and ∇b_hh.
    pub reductions: Vec<Dispatch>,
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
        let l = &model.layout;
        let (cell, dims) = (l.cell, l.dims);
        hyper.validate_for(cell)?;
        check_storage(storage, cell, hyper)?;
        check_llvmpipe_loops(ctx, l, shape, hyper)?;
        let tp = (hyper.method == Method::Tp).then_some(&hyper.tp);
        let dv_scale = tp.map_or(1.0, |tp| storage.dv_scale(tp));
        let seq = SeqBuffers::new(ctx, cell, dims, shape, storage, dv_scale)?;
        let solve = Solve::of(cell, hyper);
        let through_time = tp.is_none_or(|tp| tp.tp_grad == TpGrad::ThroughTime);
        let rows = shape.steps * shape.batch;
        let step_len = shape.batch * dims.hidden;
        // ∇(slot) = errᵀ b over all T·B rows, err [T·B, g·d]; b is the B operand with its
        // storage (h is a history; x and the ones are f32).
        let reduce =
            |err: &wgpu::Buffer, b: wgpu::BindingResource<'_>, b_storage, n: usize, slot: Slot| {
                let ops = matmul::Operands {
                    a: err.as_entire_binding(),
                    trans_a: true,
                    b,
                    c: slot.bind(&model.grad),
                    m: cell.gates() * dims.hidden,
                    n,
                    k: rows,
                };
                matmul::product_with_b_in(ctx, ops, b_storage)
            };
        let x = || seq.x.as_entire_binding();
        let ones = || seq.ones.as_entire_binding();
        let (forward, bptt, reductions) = match cell {
            CellKind::Tanh => (
                forward::dispatch(ctx, model, &seq, shape)?,
                bptt::dispatch(ctx, model, &seq, shape, tp.is_some(), through_time)?,
                vec![
                    reduce(&seq.delta, seq.h.binding(), storage, dims.hidden, l.w)?,
                    reduce(&seq.delta, x(), Storage::F32, dims.input, l.u)?,
                    reduce(&seq.delta, ones(), Storage::F32, 1, l.b)?,
                ],
            ),
            // δ holds dgh: W and b_hh see it, U and b_ih see dgi. h is an f32 history here
            // (`check_storage`), read by the f32 variant of the matmul.
            CellKind::Gru => (
                gru_forward::dispatch(ctx, model, &seq, shape)?,
                gru_bptt::dispatch(ctx, model, &seq, shape, tp.is_some(), through_time)?,
                vec![
                    reduce(&seq.delta, seq.h.binding(), seq.h.storage, dims.hidden, l.w)?,
                    reduce(&seq.dgi, x(), Storage::F32, dims.input, l.u)?,
                    reduce(&seq.dgi, ones(), Storage::F32, 1, l.b)?,
                    reduce(&seq.delta, ones(), Storage::F32, 1, l.b_hh)?,
                ],
            ),
        };
        let sweep = match (tp, solve) {
            (None, _) => None,
            (Some(tp), Some(solve)) => Some(vec![jacobian::sweep_dispatch(
                ctx, model, &seq, shape, tp, solve,
            )?]),
            (Some(tp), None) => Some(target_sweep::dispatch(ctx, model, &seq, shape, tp)?.into()),
        };
        Ok(Self {
            forward,
            head: head::HeadDispatches::new(ctx, model, &seq, shape, hyper.loss)?,
            cg: tp
                .filter(|_| solve.is_none())
                .map(|tp| Cg::new(ctx, model, tp))
                .transpose()?,
            sweep,
            bptt,
            reductions,
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
        let model = ModelBuffers::new(ctx, params.cell, params.dims())?;
        model.write_params(ctx, params)?;
        let ws = Self::new(ctx, &model, Shape::of(batch), hyper, storage)?;
        ws.seq.write_batch(ctx, batch);
        ws.poison_outputs(ctx, &model);
        Ok((model, ws))
    }

    /// `one_shot` on the inputs `x` (labels all 0), with the forward pass of the cell run:
    /// where the one-shot functions of the kernels after it start.
    pub fn after_forward(
        ctx: &GpuContext,
        params: &Params,
        x: &[DMatrix<f64>],
        hyper: &Hyper,
        storage: Storage,
    ) -> Result<(ModelBuffers, Self)> {
        let b = x.first().map_or(0, |m| m.nrows());
        let batch = Batch {
            x: x.to_vec(),
            y: Targets::Labels(vec![0; b]),
        };
        let (model, ws) = Self::one_shot(ctx, params, &batch, hyper, storage)?;
        ctx.submit(|pass| ws.forward.iter().for_each(|l| l.record(pass)))?;
        Ok((model, ws))
    }

    /// Reads `count` matrices `rows`×`cols` stacked in the f32 `buffer` from element
    /// `start` on (the histories h and dv read with `History::read`).
    pub fn read_stack(
        ctx: &GpuContext,
        buffer: &wgpu::Buffer,
        start: usize,
        count: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<DMatrix<f64>>> {
        Ok(unstack(
            &ctx.read(buffer, start, count * rows * cols)?,
            rows,
            cols,
        ))
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
        let g = model.layout.cell.gates();
        self.seq.h.poison(ctx);
        self.seq.dv.poison(ctx);
        poison(ctx, &self.seq.delta, t * b * g * d);
        poison(ctx, &self.seq.cg_steps, t * b * 2);
        if model.layout.cell == CellKind::Gru {
            poison(ctx, &self.seq.dgi, t * b * 3 * d);
            poison(ctx, &self.seq.gates, t * b * 4 * d);
        }
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
        poison(ctx, &model.cg.columns, 3 * d);
        poison(ctx, &model.wt, g * d * d);
    }
}

/// The loss as head.wgsl encodes it.
pub(crate) fn loss_code(loss: Loss) -> u32 {
    match loss {
        Loss::CrossEntropy => 0,
        Loss::Mse => 1,
    }
}
