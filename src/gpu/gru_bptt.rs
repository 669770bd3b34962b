//! Backpropagation through the GRU for BP and for the TP surrogate (`shaders/gru_bptt.wgsl`,
//! then `matmul.wgsl` for the reductions; twin of `src/cpu/gru.rs::gru_bptt`).

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::gpu::bptt::{backward_once, dispatch_cell, Dims};
use crate::gpu::context::GpuContext;
use crate::gpu::iteration::{ModelBuffers, SeqBuffers, Shape};
use crate::gpu::kernel::Dispatch;
use crate::kernel_io::GruGrads;
use crate::kernel_io::{Injection, RnnGrads};
use crate::model::{CellKind, Params};

/// The launch: one workgroup per sequence, writing dgh (into `seq.delta`) and dgi
/// [T, B, 3d] and e [T, B, d]. `targets` injects h_t − v_t at every step (TP), otherwise
/// g_T at the top (BP).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    shape: Shape,
    targets: bool,
    through_time: bool,
) -> Result<Dispatch> {
    // f32 histories only (`iteration::check_storage`).
    let dims = Dims::new(model, seq, shape, targets, through_time);
    let bindings = vec![
        (2, seq.h.binding()),
        (3, seq.gates.as_entire_binding()),
        (4, seq.dv.binding()),
        (5, seq.g_top.as_entire_binding()),
        (6, seq.dgi.as_entire_binding()),
        (7, seq.delta.as_entire_binding()),
        (8, seq.err.as_entire_binding()),
    ];
    dispatch_cell(ctx, model, shape, &ctx.kernels.gru_bptt, &dims, bindings)
}

/// Gradients of w_hh, w_ih, b_ih and b_hh on the GPU, as `cpu::gru::gru_bptt` returns
/// them (see `bptt::backward_once` for which states the kernel linearizes at).
pub fn gru_bptt(
    ctx: &GpuContext,
    params: &Params,
    x: &[DMatrix<f64>],
    h: &[DMatrix<f64>],
    injection: Injection,
    through_time: bool,
) -> Result<GruGrads> {
    ensure!(
        params.cell == CellKind::Gru,
        "gru_bptt needs GRU parameters, got a {:?} cell",
        params.cell
    );
    let (g, error_norms) = backward_once(ctx, params, x, h, injection, through_time)?;
    Ok(GruGrads {
        rnn: RnnGrads {
            w_hh: g.w_hh,
            w_ih: g.w_ih,
            b: g.b,
            error_norms,
        },
        b_hh: g.b_hh,
    })
}
