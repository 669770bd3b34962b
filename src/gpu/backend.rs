//! The GPU as a `Backend` (twin of `src/cpu/backend.rs`): the training loop drives it
//! without knowing which device it has.
//!
//! A step uploads the batch, records forward, head, (CG for P and the target sweep, or the
//! jacobian sweep with its per-step CG,) BPTT, the gradient reductions and the optimizer
//! into one command buffer, submits it and returns without waiting. Loss and CG statistics
//! stay on the device until `last_stats` asks for them. Both cells (tanh RNN, GRU) and both
//! inversions (analytic for the tanh RNN, jacobian for either) run here; f16 storage of
//! the histories (`Storage::F16`) only for the tanh RNN with the analytic inversion.

use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::backend::{Backend, Diagnostics, Eval, StepStats, Trace};
use crate::cg::CgReport;
use crate::config::{Hyper, Method};
use crate::gpu::buffers::ModelBuffers;
use crate::gpu::context::GpuContext;
use crate::gpu::inverse::GPU_CG_TOL;
use crate::gpu::iteration::Workspace;
use crate::gpu::jacobian;
use crate::gpu::layout::{matrix, Shape};
use crate::gpu::one_shot;
use crate::gpu::storage::Storage;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::plan::Plan;
use crate::tasks::Batch;
use crate::validate::check_run;

/// The wgpu backend: f32 arithmetic, the histories h and v − h stored as its `Storage`
/// says. Keeps P on the device to warm-start the next CG solve.
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    storage: Storage,
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
    train_ws: Option<Workspace>,
    eval_ws: Option<Workspace>,
}

/// The CG report of the last iteration run in `ws` (TP only): P's solve, or the worst
/// step of the per-step sweep (which runs where no P is formed). A solve that missed its tolerance is a `CgError`.
fn cg_report(
    ctx: &GpuContext,
    model: &ModelBuffers,
    ws: &Workspace,
    hyper: &Hyper,
) -> Result<Option<CgReport>> {
    if hyper.method != Method::Tp {
        return Ok(None);
    }
    let tp = &hyper.tp;
    Ok(Some(if ws.cg.is_none() {
        jacobian::report(ctx, model, &ws.seq, ws.shape, tp)?
    } else {
        model
            .cg
            .report(ctx, tp.cg_tol.unwrap_or(GPU_CG_TOL), tp.cg_max_iter)?
    }))
}

/// The cached workspace in `slot`, rebuilt when the batch shape changes.
fn workspace<'a>(
    ctx: &GpuContext,
    slot: &'a mut Option<Workspace>,
    model: &ModelBuffers,
    shape: Shape,
    hyper: &Hyper,
    storage: Storage,
) -> Result<&'a Workspace> {
    if slot.as_ref().is_none_or(|ws| ws.shape != shape) {
        *slot = None; // free the old buffers before allocating new ones
        *slot = Some(Workspace::new(ctx, model, shape, hyper, storage)?);
    }
    Ok(slot.as_ref().expect("just filled"))
}

impl GpuBackend {
    /// A backend on `ctx` with nothing loaded, storing its histories in f32. The context
    /// may be shared with other users.
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        Self::with_storage(ctx, Storage::F32)
    }

    /// A backend on `ctx` that stores the histories h and v − h as `storage` says.
    pub fn with_storage(ctx: Arc<GpuContext>, storage: Storage) -> Self {
        Self {
            ctx,
            storage,
            train: None,
        }
    }

    /// The device this backend runs on.
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    /// How this backend stores the histories.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    fn training(&mut self) -> Result<&mut Training> {
        self.train
            .as_mut()
            .context("no parameters loaded: call load() first")
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        match self.storage {
            Storage::F32 => format!("gpu (f32): {}", self.ctx.describe()),
            storage => format!("gpu (f32, {storage} storage): {}", self.ctx.describe()),
        }
    }

    fn trace(&mut self, params: &Params, batch: &Batch, hyper: &Hyper) -> Result<Trace> {
        check_run(params, batch, hyper, self.storage.device())?;
        let ctx = &*self.ctx;
        let (model, ws) = one_shot::workspace(ctx, params, batch, hyper, self.storage)?;
        ctx.submit(|pass| {
            ws.record_loss(pass);
            ws.record_gradients(pass, false);
        })?;
        let (t, d) = (ws.shape.steps, params.dims().hidden);
        let h = ws.seq.h.read(ctx, 0, t + 1)?;
        let cg = cg_report(ctx, &model, &ws, hyper)?;
        let v = if hyper.method == Method::Tp {
            let dv = ws.seq.dv.read(ctx, 0, t + 1)?;
            Some(h.iter().zip(dv).map(|(h_t, dv_t)| h_t + dv_t).collect())
        } else {
            None
        };
        // P exists only where it was formed (the analytic inversion).
        let p_inv = if ws.cg.is_some() {
            Some(matrix(&ctx.read(&model.cg.x, 0, d * d)?, d, d))
        } else {
            None
        };
        Ok(Trace {
            error_norms: ws.error_norms.read(ctx)?,
            h,
            loss: f64::from(ctx.read::<f32>(&ws.seq.stats, 0, 1)?[0]),
            grads: model.read_params(ctx, &model.grad)?,
            v,
            p_inv,
            cg,
        })
    }

    fn load(&mut self, params: &Params, opt: Option<&OptState>, hyper: &Hyper) -> Result<()> {
        Plan::check(params.cell, hyper, self.storage.device())?;
        let dims = params.dims();
        let opt = &OptState::for_params(opt, params)?;
        self.train = None; // free the previous model's buffers first
        let ctx = &*self.ctx;
        let model = ModelBuffers::new(ctx, params.cell, dims)?;
        model.write_params(ctx, params)?;
        ctx.write(&model.m, 0, &model.layout.pack(&opt.m));
        ctx.write(&model.v, 0, &model.layout.pack(&opt.v));
        self.train = Some(Training {
            hyper: hyper.clone(),
            model,
            step: opt.step,
            warm: false,
            stepped: false,
            train_ws: None,
            eval_ws: None,
        });
        Ok(())
    }

    fn step(&mut self, batch: &Batch) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let storage = self.storage;
        let tr = self.training()?;
        let params_shape = tr.model.layout.zeros();
        check_run(&params_shape, batch, &tr.hyper, storage.device())?;
        let ws = workspace(
            &ctx,
            &mut tr.train_ws,
            &tr.model,
            Shape::of(batch),
            &tr.hyper,
            storage,
        )?;
        ws.seq.write_batch(&ctx, batch);
        ws.optimizer.set_step(&ctx, tr.step + 1);
        ctx.submit(|pass| {
            ws.record_loss(pass);
            ws.record_gradients(pass, tr.warm);
            ws.optimizer.record(pass);
        })?;
        tr.step += 1;
        // Only P's solve starts from the last solution; the per-step solves start from 0.
        tr.warm = ws.cg.is_some();
        tr.stepped = true;
        Ok(())
    }

    fn last_stats(&mut self) -> Result<StepStats> {
        let ctx = Arc::clone(&self.ctx);
        let tr = self.training()?;
        let ws = match (&tr.train_ws, tr.stepped) {
            (Some(ws), true) => ws,
            _ => bail!("no step has run yet"),
        };
        let cg = cg_report(&ctx, &tr.model, ws, &tr.hyper)?;
        Ok(StepStats {
            loss: f64::from(ctx.read::<f32>(&ws.seq.stats, 0, 1)?[0]),
            cg,
        })
    }

    /// Reduces the last step's buffers, still on the device, on demand: the target offsets
    /// (TP) or the backward errors (BP) per step, and the gradient (read back whole: it is
    /// parameter-sized, and summing it in f64 on the host matches the reference exactly).
    fn last_diagnostics(&mut self) -> Result<Option<Diagnostics>> {
        let ctx = Arc::clone(&self.ctx);
        let tr = self.training()?;
        let ws = match (&tr.train_ws, tr.stepped) {
            (Some(ws), true) => ws,
            _ => bail!("no step has run yet"),
        };
        let step_norms = ws
            .target_norms
            .as_ref()
            .unwrap_or(&ws.error_norms)
            .read(&ctx)?;
        let grads = tr.model.read_params(&ctx, &tr.model.grad)?;
        Ok(Some(Diagnostics {
            step_norms,
            grad_norm: grads.norm(),
        }))
    }

    fn evaluate(&mut self, batch: &Batch) -> Result<Eval> {
        let ctx = Arc::clone(&self.ctx);
        let storage = self.storage;
        let tr = self.training()?;
        // Only the forward pass and the head run: a BP workspace needs no CG buffers.
        let hyper = Hyper {
            method: Method::Bp,
            ..tr.hyper.clone()
        };
        check_run(&tr.model.layout.zeros(), batch, &hyper, storage.device())?;
        let ws = workspace(
            &ctx,
            &mut tr.eval_ws,
            &tr.model,
            Shape::of(batch),
            &hyper,
            storage,
        )?;
        ws.seq.write_batch(&ctx, batch);
        ctx.submit(|pass| ws.record_loss(pass))?;
        let stats = ctx.read::<f32>(&ws.seq.stats, 0, 2)?;
        Ok(Eval {
            loss: f64::from(stats[0]),
            accuracy: f64::from(stats[1]),
        })
    }

    fn state(&mut self) -> Result<(Params, OptState)> {
        let ctx = Arc::clone(&self.ctx);
        let tr = self.training()?;
        let m = &tr.model;
        Ok((
            m.read_params(&ctx, &m.theta)?,
            OptState {
                step: tr.step,
                m: m.read_params(&ctx, &m.m)?,
                v: m.read_params(&ctx, &m.v)?,
            },
        ))
    }
}
