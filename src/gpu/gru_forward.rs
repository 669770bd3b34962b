//! Forward pass of the GRU, fused over time (`shaders/gru_forward.wgsl`; twin of
//! `src/cpu/gru.rs::gru_forward`), keeping each step's gates for the backward recursion and
//! the Jacobian products.

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::config::{Hyper, Method};
use crate::gpu::context::GpuContext;
use crate::gpu::forward::dispatch_cell;
use crate::gpu::iteration::{ModelBuffers, SeqBuffers, Shape, Workspace};
use crate::gpu::kernel::Dispatch;
use crate::gpu::storage::Storage;
use crate::kernel_io::GruStep;
use crate::model::{CellKind, Params};

/// The launches: Wᵀ [d, 3d], then the time loop with one workgroup per sequence, writing
/// h [T+1, B, d] and the gates r | z | n | hn [T, B, 4d].
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
) -> Result<[Dispatch; 2]> {
    dispatch_cell(
        ctx,
        model,
        shape,
        &ctx.kernels.gru_forward,
        vec![
            (4, model.layout.b_hh.bind(&model.theta)),
            (5, seq.x.as_entire_binding()),
            // An f32 history (`iteration::check_storage`).
            (6, seq.h.binding()),
            (7, seq.gates.as_entire_binding()),
        ],
    )
}

/// Hidden states h_0 … h_T on the GPU, as `cpu::gru::gru_forward` returns them.
pub fn gru_forward(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
) -> Result<Vec<DMatrix<f64>>> {
    Ok(gru_forward_gates(ctx, params, x)?.0)
}

/// Hidden states h_0 … h_T and, for t = 1 … T, the gates the kernel stored (as
/// `cpu::gru::gru_gates` computes them at (h_{t−1}, x_t)).
pub fn gru_forward_gates(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
) -> Result<(Vec<DMatrix<f64>>, Vec<GruStep>)> {
    let bp = Hyper {
        method: Method::Bp,
        ..Hyper::default()
    };
    ensure!(
        params.cell == CellKind::Gru,
        "gru_forward needs GRU parameters, got a {:?} cell",
        params.cell
    );
    let (_model, ws) = Workspace::after_forward(ctx, params, x, &bp, Storage::F32)?;
    let Shape { batch: b, steps: t } = ws.shape;
    let d = params.dims().hidden;
    let h = ws.seq.h.read(ctx, 0, t + 1)?;
    // Each step's B rows hold r | z | n | hn side by side.
    let gates = Workspace::read_stack(ctx, &ws.seq.gates, 0, t, b, 4 * d)?
        .into_iter()
        .map(|m| GruStep {
            r: m.columns(0, d).into_owned(),
            z: m.columns(d, d).into_owned(),
            n: m.columns(2 * d, d).into_owned(),
            hn: m.columns(3 * d, d).into_owned(),
        })
        .collect();
    Ok((h, gates))
}
