//! Timing one iteration phase by phase, for `tpri bench` and the criterion benchmarks.
//!
//! A `Profiler` owns the buffers of one iteration at fixed parameters and batch, like a
//! training step's, and submits any sequence of phases on its own, waiting for each
//! submission. Where the device has timestamp queries the time is the device's (start to
//! end of the compute pass); elsewhere it is the host's wall clock from submit to the end
//! of the wait, which also counts driver overhead — the more honest number for a software
//! rasterizer, and an upper bound everywhere.

use std::sync::Arc;

use anyhow::Result;

use crate::cg::CgReport;
use crate::config::Hyper;
use crate::gpu::buffers::ModelBuffers;
use crate::gpu::cg_record::{cg_regions, cg_report};
use crate::gpu::context::{GpuContext, Timer};
use crate::gpu::iteration::Workspace;
use crate::gpu::layout::Shape;
use crate::gpu::options::GpuOptions;
use crate::gpu::phase::Phase;
use crate::gpu::readback::Readback;
use crate::model::Params;
use crate::tasks::Batch;
use crate::validate::check_run;

/// One iteration's buffers at fixed parameters and batch, for timing.
pub struct Profiler {
    ctx: Arc<GpuContext>,
    model: ModelBuffers,
    ws: Workspace,
    timer: Option<Timer>,
    /// The settings the launches were built for (the CG tolerance and cap the report
    /// checks).
    hyper: Hyper,
}

impl Profiler {
    /// Uploads `params` and `batch` and builds the launches of `hyper`'s method, with the
    /// histories stored and the long loops split as `options` say.
    pub fn new(
        ctx: Arc<GpuContext>,
        params: &Params,
        batch: &Batch,
        hyper: &Hyper,
        options: GpuOptions,
    ) -> Result<Self> {
        check_run(params, batch, hyper, options.storage.device())?;
        let model = ModelBuffers::for_params(&ctx, params)?;
        model.write_params(&ctx, params)?;
        let ws = Workspace::new(&ctx, &model, Shape::of(batch), hyper, options)?;
        ws.seq.write_batch(&ctx, batch)?;
        ws.optimizer.set_step(&ctx, 1);
        let timer = ctx.timer()?;
        Ok(Self {
            ctx,
            model,
            ws,
            timer,
            hyper: hyper.clone(),
        })
    }

    /// Whether times come from device timestamps (else from the host's clock).
    pub fn device_timed(&self) -> bool {
        self.timer.is_some()
    }

    /// Runs `phases` in one submission and waits; returns the seconds it took. `warm`
    /// starts CG from the P the buffer holds (the last solve's), as training steps after
    /// the first do. The optimizer phase changes the parameters: time it last, or accept
    /// that the next run sees slightly different ones.
    pub fn run(&self, phases: &[Phase], warm: bool) -> Result<f64> {
        self.ctx.run_timed(self.timer.as_ref(), |pass| {
            for &phase in phases {
                self.ws.record_phase(pass, phase, warm);
            }
        })
    }

    /// The CG report of the last solve for P, or of the GRU's three solves for its P_g,
    /// or of the steps of the last per-step sweep (the jacobian inversion, or P applied by
    /// per-step solves), as training reads it (`CgReport::successive` where there are
    /// several); `None` for BP and DTP. A solve that missed its tolerance in any run since
    /// the profiler was built is the `CgError` training would raise.
    pub fn cg_report(&self) -> Result<Option<CgReport>> {
        let regions = cg_regions(&self.ctx, &self.model, &self.ws)?;
        let words = Readback::default().read(&self.ctx, |_| {}, &regions)?;
        cg_report(&self.ctx, &self.model, &self.ws, &self.hyper, &words)
    }
}
