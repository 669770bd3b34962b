//! The GPU as a `Backend` (twin of `src/cpu/backend.rs`): the training loop drives it
//! without knowing which device it has.
//!
//! A step uploads the batch, records forward, head, (CG for P and the target sweep, or the
//! jacobian sweep with its per-step CG,) BPTT, the gradient reductions and the optimizer
//! into one command buffer, submits it and returns without waiting. Loss and CG statistics
//! stay on the device until `last_stats` asks for them. Both cells (tanh RNN, GRU) and every
//! inversion (analytic for the tanh RNN, jacobian for either, per-gate for the GRU) run
//! here; f16 storage of the histories (`Storage::F16`) only for the tanh RNN with the
//! analytic inversion.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::backend::{Backend, Diagnostics, Eval, LogPoint, StepStats, Trace};
use crate::config::{Hyper, Method};
use crate::gpu::buffers::ModelBuffers;
use crate::gpu::cg_record::{cg_regions, cg_report};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::Workspace;
use crate::gpu::layout::{matrix, Shape};
use crate::gpu::one_shot;
use crate::gpu::options::GpuOptions;
use crate::gpu::readback::{record_then_copy, CopyTo, Readback, Region};
use crate::gpu::storage::Storage;
use crate::limits::{GpuLimits, Workload};
use crate::memory::MemoryEstimate;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::plan::{Plan, TargetSolve};
use crate::tasks::Batch;
use crate::validate::{check_embedding, check_params, check_reverse_layer, check_run, check_step};

/// The wgpu backend: f32 arithmetic, the histories h and v − h stored as its `Storage`
/// says, long loops split into launches as its `StepsPerDispatch` says. Keeps P on the
/// device to warm-start the next CG solve.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    options: GpuOptions,
    train: Option<Training>,
}

struct Training {
    hyper: Hyper,
    model: ModelBuffers,
    /// Optimizer steps taken (Adam's bias corrections need it).
    step: u64,
    /// Whether the CG buffer holds a previous P to start from.
    warm: bool,
    /// Whether `step` has run since `load`.
    stepped: bool,
    /// The training workspace (one shape at a time).
    train_ws: Vec<Workspace>,
    /// Evaluation workspaces by batch shape, at most `EVAL_SHAPES`: an evaluation set's
    /// full batches and its smaller last one each keep theirs.
    eval_ws: Vec<Workspace>,
    /// An evaluation's per-batch [loss, accuracy], gathered on the device.
    eval_stats: Option<wgpu::Buffer>,
    readback: Readback,
}

/// Evaluation workspaces kept at once.
const EVAL_SHAPES: usize = 2;

/// Row-major f32 from the words of a region.
fn floats(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&w| f32::from_bits(w)).collect()
}

/// The workspace of `shape` among `cache`, built when there is none, evicting the oldest
/// so that at most `keep` remain.
fn cached_workspace<'a>(
    ctx: &GpuContext,
    cache: &'a mut Vec<Workspace>,
    keep: usize,
    model: &ModelBuffers,
    shape: Shape,
    hyper: &Hyper,
    options: GpuOptions,
) -> Result<&'a Workspace> {
    let i = match cache.iter().position(|ws| ws.shape == shape) {
        Some(i) => i,
        None => {
            if cache.len() >= keep {
                cache.remove(0); // free the old buffers before allocating new ones
            }
            cache.push(Workspace::new(ctx, model, shape, hyper, options)?);
            cache.len() - 1
        }
    };
    Ok(&cache[i])
}

/// What a backend on `ctx` storing its histories as `storage` allows: the kernels' largest
/// hidden size, the device's largest buffer, and the bytes of a stored history value.
pub fn gpu_limits(ctx: &GpuContext, storage: Storage) -> GpuLimits {
    let l = &ctx.limits;
    GpuLimits {
        max_hidden: crate::gpu::layout::MAX_HIDDEN,
        max_buffer: l.max_buffer_size.min(l.max_storage_buffer_binding_size),
        history_bytes: match storage {
            Storage::F32 => 4,
            Storage::F16 => 2,
        },
    }
}

impl GpuBackend {
    /// A backend on `ctx` with nothing loaded, storing its histories in f32. The context
    /// may be shared with other users.
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        Self::with_storage(ctx, Storage::F32)
    }

    /// A backend on `ctx` that stores the histories h and v − h as `storage` says.
    pub fn with_storage(ctx: Arc<GpuContext>, storage: Storage) -> Self {
        Self::with_options(ctx, storage.into())
    }

    /// A backend on `ctx` with the storage and launch splitting `options` name.
    pub fn with_options(ctx: Arc<GpuContext>, options: GpuOptions) -> Self {
        Self {
            ctx,
            options,
            train: None,
        }
    }

    /// The device this backend runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// How this backend stores the histories.
    pub fn storage(&self) -> Storage {
        self.options.storage
    }

    /// How this backend stores the histories and splits its long loops.
    pub fn options(&self) -> GpuOptions {
        self.options
    }

    /// What this backend's device allows: the kernels' largest hidden size, its largest
    /// buffer, and the bytes of a stored history value.
    pub fn limits(&self) -> GpuLimits {
        gpu_limits(&self.ctx, self.options.storage)
    }

    fn training(&mut self) -> Result<&mut Training> {
        self.train
            .as_mut()
            .context("no parameters loaded: call load() first")
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        match self.options.storage {
            Storage::F32 => format!("gpu (f32): {}", self.ctx.describe()),
            storage => format!("gpu (f32, {storage} storage): {}", self.ctx.describe()),
        }
    }

    fn check_workload(&self, workload: &Workload) -> Result<MemoryEstimate> {
        workload.check_gpu(&self.limits())
    }

    fn trace(&mut self, params: &Params, batch: &Batch, hyper: &Hyper) -> Result<Trace> {
        check_run(params, batch, hyper, self.options.storage.device())?;
        let (t, b) = (batch.seq_len(), batch.batch_size());
        Workload::new(params.cell, params.dims(), t, b, hyper)
            .with_embedding(params.vocabulary())
            .check_gpu(&self.limits())?;
        let ctx = &*self.ctx;
        let (model, ws) = one_shot::workspace(ctx, params, batch, hyper, self.options)?;
        ctx.submit(|pass| {
            ws.record_loss(pass);
            ws.record_gradients(pass, false);
        })?;
        let (t, d) = (ws.shape.steps, params.dims().hidden);
        let h = ws.seq.h.read(ctx, 0, t + 1)?;
        let v = if hyper.method != Method::Bp {
            let dv = ws.seq.dv.read(ctx, 0, t + 1)?;
            Some(h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect())
        } else {
            None
        };
        let len = model.layout.len;
        let mut regions = vec![
            Region::new(&ws.seq.stats, 0, 1),
            Region::new(&model.grad, 0, len),
            ws.error_norms.region(),
        ];
        // P exists only where it was formed (the analytic inversion), the P_g only for the
        // per-gate inversion.
        let per_gate = matches!(ws.plan, Plan::Tp(TargetSolve::PerGate { .. }));
        if ws.plan.forms_p() {
            regions.push(Region::new(&model.cg.x, 0, d * d));
        }
        if per_gate {
            let gates = model.gates(ctx)?;
            regions.extend(gates.cg.iter().map(|cg| Region::new(&cg.x, 0, d * d)));
        }
        // The per-step losses, with outputs at every step (the last fixed region).
        if let Some(steps) = ws.step_stats() {
            regions.push(Region::new(steps, 0, 2 * t));
        }
        let fixed = regions.len();
        regions.extend(cg_regions(ctx, &model, &ws)?);
        let words = Readback::default().read(ctx, |pass| ws.error_norms.record(pass), &regions)?;
        let square = |k: usize| matrix(&floats(&words[k]), d, d);
        let step_losses = match ws.step_stats() {
            Some(_) => floats(&words[fixed - 1])
                .iter()
                .step_by(2)
                .map(|&l| f64::from(l))
                .collect(),
            None => Vec::new(),
        };
        Ok(Trace {
            h,
            loss: f64::from(f32::from_bits(words[0][0])),
            grads: model.layout.unpack(&floats(&words[1])),
            error_norms: ws.error_norms.decode(&words[2]),
            v,
            p_inv: ws.plan.forms_p().then(|| square(3)),
            p_gates: per_gate.then(|| [square(3), square(4), square(5)]),
            cg: cg_report(ctx, &model, &ws, hyper, &words[fixed..])?,
            step_losses,
        })
    }

    fn load(&mut self, params: &Params, opt: Option<&OptState>, hyper: &Hyper) -> Result<()> {
        check_params(params)?;
        Plan::check(params.cell, hyper, self.options.storage.device())?;
        check_reverse_layer(params, hyper.method)?;
        check_embedding(params, hyper.method)?;
        let opt = &OptState::for_params(opt, params)?;
        self.train = None; // free the previous model's buffers first
        let ctx = &*self.ctx;
        let model = ModelBuffers::for_params(ctx, params)?;
        model.write_params(ctx, params)?;
        ctx.write(&model.m, 0, &model.layout.pack(&opt.m));
        ctx.write(&model.v, 0, &model.layout.pack(&opt.v));
        self.train = Some(Training {
            hyper: hyper.clone(),
            model,
            step: opt.step,
            warm: false,
            stepped: false,
            train_ws: Vec::new(),
            eval_ws: Vec::new(),
            eval_stats: None,
            readback: Readback::default(),
        });
        Ok(())
    }

    fn step(&mut self, batch: &Batch) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let options = self.options;
        let tr = self.training()?;
        let layout = &tr.model.layout;
        check_step(
            layout.cell,
            layout.dims,
            layout.embed.map(|(_, rows)| rows),
            batch,
            &tr.hyper,
            options.storage.device(),
        )?;
        let shape = Shape::of(batch);
        let ws = cached_workspace(
            &ctx,
            &mut tr.train_ws,
            1,
            &tr.model,
            shape,
            &tr.hyper,
            options,
        )?;
        ws.seq.write_batch(&ctx, batch)?;
        ws.optimizer.set_step(&ctx, tr.step + 1);
        if let Some((reverse, _)) = &ws.dtp {
            reverse.set_iteration(&ctx, tr.step + 1);
        }
        ctx.submit(|pass| {
            ws.record_loss(pass);
            ws.record_training_gradients(pass, tr.warm);
            ws.optimizer.record(pass);
        })?;
        tr.step += 1;
        // Only the solves for P or the P_g start from the last solution; the per-step
        // solves start from 0.
        tr.warm = ws.plan.forms_inverses();
        tr.stepped = true;
        Ok(())
    }

    fn last_stats(&mut self) -> Result<StepStats> {
        self.read_back(false, false)?
            .stats
            .context("no step has run yet")
    }

    /// Reduces the last step's buffers, still on the device: the target offsets (TP) or
    /// the backward errors (BP) per step, and the gradient (read back whole: it is
    /// parameter-sized, and summing it in f64 on the host matches the reference exactly).
    fn last_diagnostics(&mut self) -> Result<Option<Diagnostics>> {
        Ok(self.read_back(true, false)?.diagnostics)
    }

    fn log_point(&mut self, with_state: bool) -> Result<LogPoint> {
        let read = self.read_back(true, with_state)?;
        Ok(LogPoint {
            stats: read.stats.context("no step has run yet")?,
            diagnostics: read.diagnostics,
            state: read.state,
        })
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<Eval> {
        self.evaluate_all(std::slice::from_ref(batch))
    }

    /// Each batch's forward pass and head in its own submission, its [loss, accuracy]
    /// copied into one device buffer; one wait and one read at the end.
    fn evaluate_all(&mut self, batches: &[Batch]) -> Result<Eval> {
        let ctx = Arc::clone(&self.ctx);
        let options = self.options;
        let tr = self.training()?;
        // Only the forward pass and the head run: a BP workspace needs no CG buffers.
        let hyper = Hyper {
            method: Method::Bp,
            ..tr.hyper.clone()
        };
        let layout = &tr.model.layout;
        for batch in batches {
            check_step(
                layout.cell,
                layout.dims,
                layout.embed.map(|(_, rows)| rows),
                batch,
                &hyper,
                options.storage.device(),
            )?;
        }
        let words = 2 * batches.len();
        if tr
            .eval_stats
            .as_ref()
            .is_none_or(|b| b.size() < 4 * words as u64)
        {
            tr.eval_stats = None;
            let bytes = 4 * words.max(1) as u64;
            let none = wgpu::BufferUsages::empty();
            tr.eval_stats = Some(ctx.storage("evaluation statistics [batches, 2]", bytes, none)?);
        }
        let Training {
            model,
            eval_ws,
            eval_stats,
            readback,
            ..
        } = tr;
        let stats = eval_stats.as_ref().expect("just made");
        for (i, batch) in batches.iter().enumerate() {
            let shape = Shape::of(batch);
            let ws = cached_workspace(&ctx, eval_ws, EVAL_SHAPES, model, shape, &hyper, options)?;
            ws.seq.write_batch(&ctx, batch)?;
            let copy = CopyTo {
                from: Region::new(&ws.seq.stats, 0, 2),
                to: stats,
                at: 2 * i,
            };
            record_then_copy(&ctx, |pass| ws.record_loss(pass), &[copy])?;
        }
        let words = readback.read(&ctx, |_| {}, &[Region::new(stats, 0, words)])?;
        let per_batch = floats(&words[0]);
        Eval::weighted(batches.iter().zip(per_batch.chunks_exact(2)).map(|(b, s)| {
            let e = Eval {
                loss: f64::from(s[0]),
                accuracy: f64::from(s[1]),
            };
            (e, b.batch_size())
        }))
    }

    fn state(&mut self) -> Result<(Params, OptState)> {
        self.read_back(false, true)?
            .state
            .context("the parameters were not read")
    }
}

/// What `GpuBackend::read_back` read.
struct Readout {
    stats: Option<StepStats>,
    diagnostics: Option<Diagnostics>,
    state: Option<(Params, OptState)>,
}

impl GpuBackend {
    /// One readback of what is asked: with `diagnostics` the last step's statistics and
    /// diagnostics (an error before any step), with `state` the parameters and optimizer
    /// state. Statistics come with either.
    fn read_back(&mut self, diagnostics: bool, state: bool) -> Result<Readout> {
        let ctx = Arc::clone(&self.ctx);
        let tr = self.training()?;
        let Training {
            hyper,
            model,
            step,
            stepped,
            train_ws,
            readback,
            ..
        } = tr;
        let stats_wanted = diagnostics || !state;
        let ws = match (train_ws.first(), *stepped, stats_wanted) {
            (_, _, false) => None,
            (Some(ws), true, true) => Some(ws),
            _ => bail!("no step has run yet"),
        };
        let len = model.layout.len;
        let mut regions = Vec::new();
        if state {
            regions.extend([&model.theta, &model.m, &model.v].map(|b| Region::new(b, 0, len)));
        }
        let norms = ws.map(|ws| ws.target_norms.as_ref().unwrap_or(&ws.error_norms));
        if let (Some(ws), Some(norms)) = (ws, norms) {
            regions.push(Region::new(&ws.seq.stats, 0, 1));
            if diagnostics {
                regions.extend([norms.region(), Region::new(&model.grad, 0, len)]);
            }
            regions.extend(cg_regions(&ctx, model, ws)?);
        }
        let record = |pass: &mut wgpu::ComputePass<'_>| {
            if let (true, Some(norms)) = (diagnostics, norms) {
                norms.record(pass);
            }
        };
        let words = readback.read(&ctx, record, &regions)?;
        let unpack = |w: &[u32]| model.layout.unpack(&floats(w));
        let mut rest = &words[..];
        let state = state.then(|| {
            let (theta, m, v) = (unpack(&rest[0]), unpack(&rest[1]), unpack(&rest[2]));
            rest = &rest[3..];
            (theta, OptState { step: *step, m, v })
        });
        let (Some(ws), Some(norms)) = (ws, norms) else {
            return Ok(Readout {
                stats: None,
                diagnostics: None,
                state,
            });
        };
        let loss = f64::from(f32::from_bits(rest[0][0]));
        rest = &rest[1..];
        let diagnostics = diagnostics.then(|| {
            let d = Diagnostics {
                step_norms: norms.decode(&rest[0]),
                grad_norm: unpack(&rest[1]).norm(),
            };
            rest = &rest[2..];
            d
        });
        let cg = cg_report(&ctx, model, ws, hyper, rest)?;
        Ok(Readout {
            stats: Some(StepStats { loss, cg }),
            diagnostics,
            state,
        })
    }
}
