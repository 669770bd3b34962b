//! One whole TP-RI or BP iteration on the GPU (twin of `src/cpu/iteration.rs`): the
//! buffers it needs, allocated once per shape, and the kernels' launches recorded in order
//! into a single compute pass — every long loop in bounded segments (`segments`), with the
//! quotas picked once per shape here.
//!
//! (Layout conventions: `layout`.)
//!
//! Which kernels run depends on the cell and the inversion: forward.wgsl or
//! gru_forward.wgsl; the head at the last step, or the heads at every step (seq_head.wgsl
//! between matmul products); for TP either CG for P and target_sweep.wgsl (analytic, tanh
//! only), jacobian.wgsl's sweep with its per-step CG (jacobian, either cell), or CG for
//! each gate's P_g and gru_per_gate_sweep.wgsl (per-gate, GRU only); for DTP
//! dtp_reverse.wgsl with its reductions (and in training the reverse layer's step) and
//! dtp_targets.wgsl; bptt.wgsl or gru_bptt.wgsl; then the same matmul reductions and
//! optimizer, which only see more or larger slots for the GRU.

use anyhow::Result;

use crate::config::{Hyper, TpGrad};
use crate::gpu::buffers::{ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::dtp_reverse::DtpReverse;
use crate::gpu::inverse::{Cg, GateCg};
use crate::gpu::layout::{Shape, Slot};
use crate::gpu::loops;
use crate::gpu::norms::StepNorms;
use crate::gpu::options::{Backward, GpuOptions};
use crate::gpu::packing::GruLoop;
use crate::gpu::packing::Packing;
use crate::gpu::phase::Phase;
use crate::gpu::segments::Segmenting;
use crate::gpu::seq_head::SeqHead;
use crate::gpu::storage::Storage;
use crate::gpu::{
    bptt, dtp_targets, embedding_gather, embedding_grad, forward, gru_bptt, gru_forward,
    gru_per_gate_sweep, gru_sweep_bptt, head, jacobian, matmul, optimizer, sweep_bptt,
    target_sweep,
};
use crate::limits::logit_block_steps;
use crate::model::CellKind;
use crate::plan::{Plan, Sizes, TargetSolve};

/// The head at the last step, or the heads at every step (docs/ALGORITHM.md §13).
pub(crate) enum Head {
    Last(head::HeadDispatches),
    EveryStep(SeqHead),
}

impl Head {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        match self {
            Head::Last(h) => h.record(pass),
            Head::EveryStep(h) => h.record(pass),
        }
    }
}

/// All buffers and kernel launches of an iteration for one batch shape and one set of
/// hyperparameters. Built once and reused step after step.
pub(crate) struct Workspace {
    pub shape: Shape,
    /// What this workspace runs (`Plan::new` for its cell, settings and shape).
    pub plan: Plan,
    pub seq: SeqBuffers,
    /// With a trained embedding table: x gathered from it, before the forward pass.
    pub gather: Option<Dispatch>,
    /// Wᵀ, then the time loop (tanh RNN or GRU).
    pub forward: [Dispatch; 2],
    pub head: Head,
    /// TP with the analytic inversion: the CG solve for P.
    pub cg: Option<Cg>,
    /// TP with the per-gate inversion: the CG solves for P_r, P_z, P_n.
    pub gate_cg: Option<GateCg>,
    /// TP: Pᵀ and the analytic sweep, the jacobian sweep (which reads the Wᵀ of the
    /// forward phase), or the per-gate sweep; or, with `fused_backward`, [Pᵀ; W] and the
    /// analytic sweep fused with the surrogate's BPTT, or W below the P_gᵀ and the
    /// per-gate sweep fused with the GRU's.
    pub sweep: Option<Vec<Dispatch>>,
    /// The sweep's loop also runs the backward recursion (sweep_bptt.wgsl where
    /// `sweep_bptt::fits`, gru_sweep_bptt.wgsl where `gru_sweep_bptt::fits`): an iteration
    /// then records `sweep` and not `bptt`, which is kept for the one-shot runs of the
    /// recursion alone.
    pub fused_backward: bool,
    /// DTP: the reverse layer's gradient and step, and its target sweep.
    pub dtp: Option<(DtpReverse, Dispatch)>,
    /// The backward recursion of the cell.
    pub bptt: Dispatch,
    /// By matmul over the T·B rows of δ (and the GRU's dgi): ∇W, ∇U, ∇b, and ∇b_hh; with
    /// a trained embedding table then ∇E (its per-token sums of δ, and their product
    /// with U).
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
        options: GpuOptions,
    ) -> Result<Self> {
        let l = &model.layout;
        let (cell, dims) = (l.cell, l.dims);
        let storage = options.storage;
        let device = storage.device();
        let sizes = Sizes {
            hidden: dims.hidden,
            steps: shape.steps,
            batch: shape.batch,
        };
        let plan = Plan::new(cell, hyper, device, sizes)?;
        let segmenting = Segmenting::new(ctx, options.steps_per_dispatch, shape.batch);
        let (d, p) = (dims.hidden, dims.input);
        // A loop's shape and how many of its units one launch runs.
        let per_launch = |m: loops::LoopModel| anyhow::Ok((shape, segmenting.quota(&m)?));
        let tp = plan.targets().map(|_| &hyper.tp);
        let dv_scale = tp.map_or(1.0, |tp| storage.dv_scale(tp));
        let vocabulary = l.embed.map(|(_, rows)| rows);
        let seq = SeqBuffers::new(
            ctx, cell, dims, shape, storage, dv_scale, hyper.loss, vocabulary,
        )?;
        let dtp = plan == Plan::Dtp;
        let through_time = plan == Plan::Bptt || hyper.tp.tp_grad == TpGrad::ThroughTime;
        let rows = shape.steps * shape.batch;
        let step_len = shape.batch * dims.hidden;
        // ∇(slot) = errᵀ b over all T·B rows, err [T·B, g·d]; b is the B operand with its
        // storage (h is a history; x and the ones are f32). The reductions run one after
        // another, so one scratch serves the split ones all.
        let m = cell.gates() * dims.hidden;
        let scratch_len = [dims.hidden, dims.input, 1]
            .map(|n| matmul::scratch_len(m, n, rows, segmenting.concurrent_workgroups()))
            .into_iter()
            .max()
            .unwrap_or(0);
        let scratch = ctx.storage(
            "split reductions",
            4 * scratch_len.max(1) as u64,
            wgpu::BufferUsages::empty(),
        )?;
        let reduce =
            |err: &wgpu::Buffer, b: wgpu::BindingResource<'_>, b_storage, n: usize, slot: Slot| {
                let ops = matmul::Operands {
                    a: err.as_entire_binding(),
                    trans_a: true,
                    b,
                    c: slot.bind(&model.grad),
                    m,
                    n,
                    k: rows,
                };
                let concurrent = segmenting.concurrent_workgroups();
                matmul::reduction(ctx, ops, (b_storage, &scratch), &segmenting, concurrent)
            };
        let x = || seq.x.as_entire_binding();
        let ones = || seq.ones.as_entire_binding();
        // Sequences per workgroup and lanes per unit of the time loops (forward, backward
        // recursion, target sweep): the tanh RNN's kernels take them; the GRU's carry one
        // sequence a workgroup, and only its forward pass takes lanes (fixed ones: `auto`
        // gives it one).
        let (packing, forward_packing) = match cell {
            CellKind::Tanh => {
                let packing = forward::packing(ctx, &options, d, shape)?;
                (packing, packing)
            }
            CellKind::Gru => {
                // `auto`: one lane, until a GPU has timed the GRU's lanes (docs/PERFORMANCE.md,
                // "Lanes for the GRU's forward and backward loops").
                let lanes = options.lanes_per_unit.count(1)?;
                let most = ctx.max_invocations_per_workgroup();
                (
                    Packing::gru(GruLoop::Bptt, lanes, d, most)?,
                    Packing::gru(GruLoop::Forward, lanes, d, most)?,
                )
            }
        };
        let forward_steps = per_launch(loops::forward(cell, d, p, shape, forward_packing))?;
        let bptt_steps = per_launch(loops::bptt(cell, d, shape, packing))?;
        let packed_bptt = (shape, bptt_steps.1, packing);
        let every_step = hyper.loss.every_step();
        let (forward, bptt, mut reductions): (_, _, Vec<Dispatch>) = match cell {
            CellKind::Tanh => (
                forward::dispatch(ctx, model, &seq, forward_steps, packing)?,
                if dtp {
                    bptt::dispatch_batch_mean(ctx, model, &seq, packed_bptt, through_time)?
                } else {
                    bptt::dispatch(
                        ctx,
                        model,
                        &seq,
                        packed_bptt,
                        tp.is_some(),
                        through_time,
                        every_step,
                    )?
                },
                [
                    reduce(&seq.delta, seq.h.binding(), storage, dims.hidden, l.w)?,
                    reduce(&seq.delta, x(), Storage::F32, dims.input, l.u)?,
                    reduce(&seq.delta, ones(), Storage::F32, 1, l.b)?,
                    // b_ih and b_hh enter as their sum: each has the sum's gradient.
                    reduce(&seq.delta, ones(), Storage::F32, 1, l.b_hh)?,
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
            // δ holds dgh: W and b_hh see it, U and b_ih see dgi. h is an f32 history here
            // (`check_storage`), read by the f32 variant of the matmul.
            CellKind::Gru => (
                gru_forward::dispatch(
                    ctx,
                    model,
                    &seq,
                    (forward_steps.0, forward_steps.1, forward_packing),
                )?,
                gru_bptt::dispatch(ctx, model, &seq, packed_bptt, tp.is_some(), through_time)?,
                [
                    reduce(&seq.delta, seq.h.binding(), seq.h.storage, dims.hidden, l.w)?,
                    reduce(&seq.dgi, x(), Storage::F32, dims.input, l.u)?,
                    reduce(&seq.dgi, ones(), Storage::F32, 1, l.b)?,
                    reduce(&seq.delta, ones(), Storage::F32, 1, l.b_hh)?,
                ]
                .into_iter()
                .flatten()
                .collect(),
            ),
        };
        let gather = if vocabulary.is_some() {
            reductions.extend(embedding_grad::dispatch(
                ctx,
                model,
                &seq,
                rows,
                &segmenting,
            )?);
            Some(embedding_gather::dispatch(ctx, model, &seq, shape)?)
        } else {
            None
        };
        let fused_backward = options.backward == Backward::Fused
            && match (tp, plan.targets()) {
                (Some(tp), Some(TargetSolve::FormP { .. })) => {
                    sweep_bptt::fits(tp, (storage, packing, d), every_step, through_time)
                }
                (Some(_), Some(TargetSolve::PerGate { .. })) => {
                    gru_sweep_bptt::fits(d, through_time)
                }
                _ => false,
            };
        let (sweep, cg, gate_cg) = match (tp, plan.targets()) {
            (Some(tp), Some(TargetSolve::FormP { .. })) => {
                let sweep = if fused_backward {
                    let looped = loops::sweep_bptt(d, p, shape, (packing, storage));
                    let steps = segmenting.quota(&looped)?;
                    sweep_bptt::dispatch(ctx, model, &seq, (shape, steps, packing), tp)?
                } else {
                    let steps = segmenting.quota(&loops::target_sweep(d, p, shape, packing))?;
                    target_sweep::dispatch(
                        ctx,
                        model,
                        &seq,
                        (shape, steps, packing),
                        tp,
                        every_step,
                    )?
                    .into()
                };
                let cg_units = segmenting.quota(&loops::inverse(d, tp.cg_max_iter))?;
                (Some(sweep), Some(Cg::new(ctx, model, tp, cg_units)?), None)
            }
            (Some(tp), Some(TargetSolve::PerGate { .. })) => (
                Some(if fused_backward {
                    let steps = per_launch(loops::gru_sweep_bptt(d, shape))?;
                    gru_sweep_bptt::dispatch(ctx, model, &seq, steps, tp)?
                } else {
                    vec![gru_per_gate_sweep::dispatch(
                        ctx,
                        model.gates(ctx)?,
                        &seq,
                        per_launch(loops::per_gate_sweep(d, shape))?,
                        dims.hidden,
                        tp,
                    )?]
                }),
                None,
                Some(GateCg::new(
                    ctx,
                    model,
                    tp,
                    segmenting.quota(&loops::inverse(d, tp.cg_max_iter))?,
                )?),
            ),
            (Some(tp), Some(solve)) => {
                let gru = cell == CellKind::Gru;
                let pc = jacobian::preconditioned(tp, cell, solve);
                let units = per_launch(loops::solves(gru, d, shape, tp.cg_max_iter, pc))?;
                (
                    Some(vec![jacobian::sweep_dispatch(
                        ctx, model, &seq, units, tp, solve,
                    )?]),
                    None,
                    None,
                )
            }
            _ => (None, None, None),
        };
        let block = every_step.then(|| {
            let limit = ctx
                .limits
                .max_buffer_size
                .min(ctx.limits.max_storage_buffer_binding_size);
            logit_block_steps(shape.steps, shape.batch, dims.output, limit)
        });
        let head = if let Some(block) = block {
            Head::EveryStep(SeqHead::new(ctx, model, &seq, shape, block, &segmenting)?)
        } else {
            Head::Last(head::HeadDispatches::new(
                ctx, model, &seq, shape, hyper.loss,
            )?)
        };
        let dtp = if dtp {
            let reverse = DtpReverse::new(ctx, model, &seq, shape, &segmenting, hyper)?;
            let sweep = dtp_targets::dispatch(
                ctx,
                model,
                &seq,
                per_launch(loops::dtp_targets(d, p, shape))?,
                &reverse,
                hyper.tp.lr_target,
            )?;
            Some((reverse, sweep))
        } else {
            None
        };
        Ok(Self {
            gather,
            forward,
            head,
            cg,
            gate_cg,
            sweep,
            fused_backward,
            bptt,
            reductions,
            optimizer: optimizer::OptimizerStep::new(ctx, model, &hyper.opt)?,
            error_norms: StepNorms::new(ctx, &seq.err, 0, shape.steps, step_len, &seq.norms_sq)?,
            // dv holds v_0 … v_T: skip v_0.
            target_norms: (tp.is_some() || dtp.is_some())
                .then(|| StepNorms::of_history(ctx, &seq.dv, 1, &seq.norms_sq))
                .transpose()?,
            dtp,
            seq,
            shape,
            plan,
        })
    }

    /// The per-step losses' buffer ([T, 2]: ℓ_t, hits) with outputs at every step.
    pub fn step_stats(&self) -> Option<&wgpu::Buffer> {
        match &self.head {
            Head::Last(_) => None,
            Head::EveryStep(h) => Some(&h.step_stats),
        }
    }

    /// Forward pass and head: loss, g_T (or g_t at every step), ∇V, ∇c.
    pub fn record_loss(&self, pass: &mut wgpu::ComputePass<'_>) {
        for phase in [Phase::Forward, Phase::Head] {
            self.record_phase(pass, phase, false);
        }
    }

    /// After `record_loss`: the recurrent gradients (TP surrogate or BP) at fixed
    /// parameters. `warm` starts CG from the P (or P_g) left by the previous step.
    pub fn record_gradients(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        for phase in [Phase::Inverse, Phase::Sweep, Phase::Bptt, Phase::Reductions] {
            self.record_phase(pass, phase, warm);
        }
    }

    /// `record_gradients` in a training step: there DTP steps its reverse layer between
    /// its gradient and the targets (docs/ALGORITHM.md §14).
    pub fn record_training_gradients(&self, pass: &mut wgpu::ComputePass<'_>, warm: bool) {
        self.record_phase(pass, Phase::Inverse, warm);
        if let Some((reverse, _)) = &self.dtp {
            reverse.record_step(pass);
        }
        for phase in [Phase::Sweep, Phase::Bptt, Phase::Reductions] {
            self.record_phase(pass, phase, warm);
        }
    }

    /// The launches of one phase (none for the TP phases of a BP workspace). `warm` only
    /// matters for `Phase::Inverse`.
    pub fn record_phase(&self, pass: &mut wgpu::ComputePass<'_>, phase: Phase, warm: bool) {
        match phase {
            Phase::Forward => self
                .gather
                .iter()
                .chain(&self.forward)
                .for_each(|d| d.record(pass)),
            Phase::Head => self.head.record(pass),
            Phase::Inverse => {
                if let Some(cg) = &self.cg {
                    cg.record(pass, warm);
                }
                if let Some(gate_cg) = &self.gate_cg {
                    gate_cg.record(pass, warm);
                }
                if let Some((reverse, _)) = &self.dtp {
                    reverse.record_gradient(pass);
                }
            }
            Phase::Sweep => {
                if let Some(sweep) = &self.sweep {
                    sweep.iter().for_each(|d| d.record(pass));
                }
                if let Some((_, sweep)) = &self.dtp {
                    sweep.record(pass);
                }
            }
            Phase::Bptt => {
                if !self.fused_backward {
                    self.bptt.record(pass);
                }
            }
            Phase::Reductions => self.reductions.iter().for_each(|r| r.record(pass)),
            Phase::Optimizer => self.optimizer.record(pass),
        }
    }
}
