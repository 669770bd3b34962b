//! Register-blocked matrix product C = op(A) B (`shaders/matmul.wgsl`): the reductions
//! over T·B rows behind ∇W, ∇U, ∇b, and CG's products. Its CPU twin is nalgebra's product.

use anyhow::{ensure, Result};

use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::storage::Storage;

/// matmul.wgsl's output block edge (TS).
const TILE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    m: u32,
    n: u32,
    k: u32,
    trans_a: u32,
    a_offset: u32,
    b_offset: u32,
    c_offset: u32,
    accumulate: u32,
}

/// Where the operands of a product start in their buffers (elements) and whether it adds
/// to C: a block of rows of a larger buffer, without binding at an offset (which the
/// device's alignment would constrain).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Placement {
    pub a: usize,
    pub b: usize,
    pub c: usize,
    /// C += op(A) B instead of C = op(A) B.
    pub accumulate: bool,
}

/// Bindings and sizes of C [m, n] = op(A) B, with A [m, k] or (`trans_a`) [k, m], B [k, n].
pub(crate) struct Operands<'a> {
    pub a: wgpu::BindingResource<'a>,
    pub trans_a: bool,
    pub b: wgpu::BindingResource<'a>,
    pub c: wgpu::BindingResource<'a>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The grid of an m×n product.
pub(crate) fn groups(m: usize, n: usize) -> [u32; 3] {
    [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1]
}

/// The launch of a product of f32 operands.
pub(crate) fn product(ctx: &GpuContext, ops: Operands<'_>) -> Result<Dispatch> {
    product_placed(ctx, ops, Placement::default())
}

/// The launch of a product of f32 operands placed as `at` says.
pub(crate) fn product_placed(
    ctx: &GpuContext,
    ops: Operands<'_>,
    at: Placement,
) -> Result<Dispatch> {
    launch(ctx, &ctx.kernels.matmul, ops, at)
}

/// The launch of a product whose B operand is a history stored as `b_storage` (rows of
/// n values padded as `Storage::row_len` says), e.g. ∇W = Δᵀ H.
pub(crate) fn product_with_b_in(
    ctx: &GpuContext,
    ops: Operands<'_>,
    b_storage: Storage,
) -> Result<Dispatch> {
    launch(
        ctx,
        &ctx.history_kernels(b_storage)?.matmul,
        ops,
        Placement::default(),
    )
}

fn launch(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    ops: Operands<'_>,
    at: Placement,
) -> Result<Dispatch> {
    let grid = groups(ops.m, ops.n);
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    ensure!(
        grid[0] <= max && grid[1] <= max,
        "a {}×{} matrix product needs a {}×{} grid, over this device's max_compute_workgroups_per_dimension ({max})",
        ops.m,
        ops.n,
        grid[0],
        grid[1]
    );
    let dims = Dims {
        m: ops.m as u32,
        n: ops.n as u32,
        k: ops.k as u32,
        trans_a: u32::from(ops.trans_a),
        a_offset: at.a as u32,
        b_offset: at.b as u32,
        c_offset: at.c as u32,
        accumulate: u32::from(at.accumulate),
    };
    Dispatch::new(
        ctx,
        pipeline,
        &dims,
        &[(1, ops.a), (2, ops.b), (3, ops.c)],
        grid,
    )
}
