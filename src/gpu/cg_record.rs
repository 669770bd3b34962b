//! Where the CG record of an iteration is on the device, and the report read from it
//! (for `backend`): P's solve, the per-gate inversion's P_g, or the per-step sweep's.

use anyhow::Result;

use crate::cg::CgReport;
use crate::config::Hyper;
use crate::gpu::buffers::ModelBuffers;
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::Workspace;
use crate::gpu::jacobian;
use crate::gpu::readback::Region;
use crate::plan::{Plan, TargetSolve};

/// Where the CG record of the last iteration run in `ws` is (TP only): P's solve, the
/// three P_g's of the per-gate inversion, or the per-step sweep's (which runs where no
/// inverse is formed).
pub(crate) fn cg_regions<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    ws: &'a Workspace,
) -> Result<Vec<Region<'a>>> {
    Ok(match ws.plan {
        Plan::Bptt | Plan::Dtp => Vec::new(),
        plan if plan.forms_p() => vec![model.cg.state_region()],
        Plan::Tp(TargetSolve::PerGate { .. }) => model.gates(ctx)?.state_regions().to_vec(),
        _ => jacobian::report_regions(model, &ws.seq, ws.shape).to_vec(),
    })
}

/// The CG report from the words of `cg_regions`; a solve that missed its tolerance is a
/// `CgError`.
pub(crate) fn cg_report(
    ctx: &GpuContext,
    model: &ModelBuffers,
    ws: &Workspace,
    hyper: &Hyper,
    words: &[Vec<u32>],
) -> Result<Option<CgReport>> {
    let tp = &hyper.tp;
    Ok(match ws.plan {
        Plan::Bptt | Plan::Dtp => None,
        plan if plan.forms_p() => Some(model.cg.report_from(
            ctx,
            &words[0],
            jacobian::tolerance(tp),
            tp.cg_max_iter,
        )?),
        Plan::Tp(TargetSolve::PerGate { .. }) => Some(model.gates(ctx)?.report_from(
            ctx,
            words,
            jacobian::tolerance(tp),
            tp.cg_max_iter,
        )?),
        _ => Some(jacobian::report_from(
            ctx,
            model,
            [&words[0], &words[1]],
            ws.shape,
            tp,
        )?),
    })
}
