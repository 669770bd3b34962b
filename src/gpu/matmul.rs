//! Register-blocked matrix product C = op(A) B (`shaders/matmul.wgsl`): the reductions
//! over T·B rows behind ∇W, ∇U, ∇b. Its CPU twin is nalgebra's product. The k axis is
//! walked in bounded segments (`segments`), each launch adding its rows' part to C.

use anyhow::{ensure, Result};

use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::loops::{self, LoopModel, REDUCTION_STAGE};
use crate::gpu::segments::{split, Segmenting};
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
    k_first: u32,
    k_count: u32,
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

/// The launches of a product of f32 operands, `stages` stages of 16 rows of k each.
pub(crate) fn product(ctx: &GpuContext, ops: Operands<'_>, stages: usize) -> Result<Dispatch> {
    product_placed(ctx, ops, Placement::default(), stages)
}

/// The launches of a product of f32 operands placed as `at` says, `stages` stages each.
pub(crate) fn product_placed(
    ctx: &GpuContext,
    ops: Operands<'_>,
    at: Placement,
    stages: usize,
) -> Result<Dispatch> {
    launch(ctx, &ctx.kernels.matmul, ops, at, stages)
}

/// The launches of a product whose B operand is a history stored as `b_storage` (rows of
/// n values padded as `Storage::row_len` says), e.g. ∇W = Δᵀ H.
pub(crate) fn product_with_b_in(
    ctx: &GpuContext,
    ops: Operands<'_>,
    b_storage: Storage,
    stages: usize,
) -> Result<Dispatch> {
    launch(
        ctx,
        &ctx.history_kernels(b_storage)?.matmul,
        ops,
        Placement::default(),
        stages,
    )
}

/// The segments of the k axis, `stages` stages each: the first writes C, the rest add to it.
fn launch(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    ops: Operands<'_>,
    at: Placement,
    stages: usize,
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
    // The first segment writes C unless the placement adds to it; the rest always add.
    let uniforms: Vec<Dims> = split(ops.k, stages * REDUCTION_STAGE)
        .into_iter()
        .map(|seg| Dims {
            m: ops.m as u32,
            n: ops.n as u32,
            k: ops.k as u32,
            trans_a: u32::from(ops.trans_a),
            k_first: seg.first,
            k_count: seg.count,
            a_offset: at.a as u32,
            b_offset: at.b as u32,
            c_offset: at.c as u32,
            accumulate: u32::from(at.accumulate || seg.first > 0),
        })
        .collect();
    Dispatch::segments(
        ctx,
        pipeline,
        &uniforms,
        &[(1, ops.a), (2, ops.b), (3, ops.c)],
        grid,
    )
}

/// The loop model of a product over `k` rows producing an m×n result.
pub(crate) fn loop_model(m: usize, n: usize, k: usize) -> LoopModel {
    let [x, y, _] = groups(m, n);
    loops::reductions(k, (x * y) as usize)
}

impl Operands<'_> {
    /// The stages of 16 rows of k one launch of this product runs, as `segmenting` picks.
    pub fn stages(&self, segmenting: &Segmenting) -> Result<usize> {
        segmenting.quota(&loop_model(self.m, self.n, self.k))
    }
}
