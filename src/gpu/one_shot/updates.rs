//! Twins of the dense updates: the matrix product behind the gradient reductions and the
//! optimizer (`cpu::optimizer`).

use anyhow::{ensure, Result};
use nalgebra::DMatrix;

use crate::arguments::like_params;
use crate::config::OptimizerConfig;
use crate::gpu::buffers::{poison, ModelBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::layout::{matrix, rows_f32};
use crate::gpu::matmul::{reduction, scratch_len, Operands};
use crate::gpu::optimizer::OptimizerStep;
use crate::gpu::segments::{Segmenting, StepsPerDispatch};
use crate::gpu::storage::Storage;
use crate::model::Params;
use crate::optimizer_state::OptState;
use crate::validate::check_param_shapes;

/// `op(a) · b` on the GPU (op = transpose when `trans_a`), checked against nalgebra in tests.
pub fn matmul(
    ctx: &GpuContext,
    a: &DMatrix<f64>,
    trans_a: bool,
    b: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    let concurrent = Segmenting::new(ctx, StepsPerDispatch::Auto, 1).concurrent_workgroups();
    matmul_split(ctx, a, trans_a, b, concurrent)
}

/// `matmul` split as on a device that runs `concurrent` workgroups at once: a long k axis
/// over up to that many workgroups whose partial products split_sum.wgsl adds (a GPU's
/// 1 024 on a CPU driver, so that tests there take the GPU's path).
pub fn matmul_split(
    ctx: &GpuContext,
    a: &DMatrix<f64>,
    trans_a: bool,
    b: &DMatrix<f64>,
    concurrent: usize,
) -> Result<DMatrix<f64>> {
    let (m, k) = if trans_a {
        (a.ncols(), a.nrows())
    } else {
        a.shape()
    };
    ensure!(
        b.nrows() == k,
        "matmul: op(A) is {m}×{k} but B has {} rows",
        b.nrows()
    );
    let n = b.ncols();
    let none = wgpu::BufferUsages::empty();
    let a_buf = ctx.storage("matmul A", 4 * a.len() as u64, none)?;
    let b_buf = ctx.storage("matmul B", 4 * b.len() as u64, none)?;
    let c_buf = ctx.storage("matmul C", 4 * (m * n) as u64, none)?;
    ctx.write(&a_buf, 0, &rows_f32(a));
    ctx.write(&b_buf, 0, &rows_f32(b));
    poison(ctx, &c_buf, m * n);
    let segmenting = Segmenting::new(ctx, StepsPerDispatch::Auto, 1);
    let slices = scratch_len(m, n, k, concurrent);
    let scratch = ctx.storage("matmul slices", 4 * slices.max(1) as u64, none)?;
    let launches = reduction(
        ctx,
        Operands {
            a: a_buf.as_entire_binding(),
            trans_a,
            b: b_buf.as_entire_binding(),
            c: c_buf.as_entire_binding(),
            m,
            n,
            k,
        },
        (Storage::F32, &scratch),
        &segmenting,
        concurrent,
    )?;
    ctx.submit(|pass| launches.iter().for_each(|l| l.record(pass)))?;
    Ok(matrix(&ctx.read(&c_buf, 0, m * n)?, m, n))
}

/// One optimizer step on the GPU, as `cpu::optimizer::optimizer_step` applies it (and
/// checks its arguments).
pub fn optimizer_step(
    ctx: &GpuContext,
    cfg: &OptimizerConfig,
    state: &mut OptState,
    params: &mut Params,
    grads: &Params,
) -> Result<()> {
    check_param_shapes(params)?;
    like_params("grads", grads, params)?;
    like_params("OptState::m", &state.m, params)?;
    like_params("OptState::v", &state.v, params)?;
    let model = ModelBuffers::for_params(ctx, params)?;
    model.write_params(ctx, params)?;
    let l = &model.layout;
    ctx.write(&model.grad, 0, &l.pack(grads));
    ctx.write(&model.m, 0, &l.pack(&state.m));
    ctx.write(&model.v, 0, &l.pack(&state.v));
    let step = OptimizerStep::new(ctx, &model, cfg)?;
    state.step += 1;
    step.set_step(ctx, state.step);
    ctx.submit(|pass| step.record(pass))?;
    *params = model.read_params(ctx, &model.theta)?;
    state.m = model.read_params(ctx, &model.m)?;
    state.v = model.read_params(ctx, &model.v)?;
    Ok(())
}
