//! Register-blocked matrix product C = op(A) B (`shaders/matmul.wgsl`): the reductions
//! over T·B rows behind ∇W, ∇U, ∇b. Its CPU twin is nalgebra's product. The k axis is
//! walked in bounded segments (`segments`), each launch adding its rows' part to C; a
//! reduction whose C has few blocks against a long k axis is also split over workgroups
//! along z into slices of partial sums, which `shaders/split_sum.wgsl` adds.

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
    k_split: u32,
    c_split_stride: u32,
}

/// split_sum.wgsl's uniform block.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumDims {
    len: u32,
    splits: u32,
    c_offset: u32,
    accumulate: u32,
    lanes: u32,
}

/// Fewest rows of k one split walks, so that a split's partial product is worth its
/// slice's write and read.
const MIN_SPLIT_ROWS: usize = 4 * REDUCTION_STAGE;

/// split_sum.wgsl's workgroup size.
const SUM_WORKGROUP: usize = 256;

/// Slices each invocation of split_sum.wgsl adds at most, one load after another: the
/// sum of each element is split over enough lanes for that (`sum_lanes`).
const SUM_CHAIN: usize = 8;

/// split_sum.wgsl's invocations per element for `splits` slices of `len` elements: the
/// least power of two that leaves each at most `SUM_CHAIN` slices, at most the workgroup
/// size, and fewer where the grid would pass WebGPU's 65 535 workgroups.
pub(crate) fn sum_lanes(splits: usize, len: usize) -> usize {
    let mut lanes = splits
        .div_ceil(SUM_CHAIN)
        .next_power_of_two()
        .min(SUM_WORKGROUP);
    while lanes > 1 && len.div_ceil(SUM_WORKGROUP / lanes) > 65_535 {
        lanes /= 2;
    }
    lanes
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
    launch(ctx, &ctx.kernels.matmul, ops, at, stages, None)
}

/// Workgroups along z a reduction over `k` rows into an m×n result is split over on a
/// device running `concurrent` workgroups at once: enough that the grid fills it, each
/// walking at least `MIN_SPLIT_ROWS` rows; 1 (no split) where C's 64×64 blocks already
/// fill it (∇W at d = 100 has 4 blocks over T·B = 12 544 rows: 196 splits on a GPU, of
/// 64 rows each, none on two CPU cores, where the slices' extra traffic measured slower).
pub(crate) fn splits(m: usize, n: usize, k: usize, concurrent: usize) -> usize {
    let [x, y, _] = groups(m, n);
    let blocks = (x as usize).saturating_mul(y as usize).max(1);
    (concurrent / blocks).min(k / MIN_SPLIT_ROWS).max(1)
}

/// Floats of scratch a reduction of `k` rows into an m×n result needs for its slices of
/// partial sums with `concurrent` workgroups at once (0 without a split): at most
/// `concurrent` · 64² (16 MiB on a GPU).
pub(crate) fn scratch_len(m: usize, n: usize, k: usize, concurrent: usize) -> usize {
    match splits(m, n, k, concurrent) {
        1 => 0,
        s => s * m * n,
    }
}

/// The launches of a reduction C = op(A) B over a long k axis with B a history stored as
/// `b_storage`: bounded segments as `segmenting` picks them and, where [`splits`] says
/// so for a device running `concurrent` workgroups at once (`Segmenting::
/// concurrent_workgroups`), the k axis split over workgroups into `scratch` (at least
/// [`scratch_len`] floats) and summed into C by split_sum.wgsl.
pub(crate) fn reduction(
    ctx: &GpuContext,
    ops: Operands<'_>,
    (b_storage, scratch): (Storage, &wgpu::Buffer),
    segmenting: &Segmenting,
    concurrent: usize,
) -> Result<Vec<Dispatch>> {
    let (m, n, k) = (ops.m, ops.n, ops.k);
    let pipeline = &ctx.history_kernels(b_storage)?.matmul;
    let splits = splits(m, n, k, concurrent);
    let [x, y, _] = groups(m, n);
    let model = loops::reductions(k.div_ceil(splits), (x * y) as usize * splits);
    let stages = segmenting.quota(&model)?;
    if splits == 1 {
        let at = Placement::default();
        return Ok(vec![launch(ctx, pipeline, ops, at, stages, None)?]);
    }
    let len = m * n;
    ensure!(
        scratch.size() >= 4 * (splits * len) as u64,
        "the split reduction's scratch holds {} bytes, {} needed",
        scratch.size(),
        4 * splits * len
    );
    let c = ops.c.clone();
    let partial = Operands {
        c: scratch.as_entire_binding(),
        ..ops
    };
    let products = launch(
        ctx,
        pipeline,
        partial,
        Placement::default(),
        stages,
        Some(splits),
    )?;
    let lanes = sum_lanes(splits, len);
    let sum = Dispatch::new(
        ctx,
        &ctx.kernels.split_sum,
        &SumDims {
            len: len as u32,
            splits: splits as u32,
            c_offset: 0,
            accumulate: 0,
            lanes: lanes as u32,
        },
        &[(1, scratch.as_entire_binding()), (2, c)],
        [len.div_ceil(SUM_WORKGROUP / lanes) as u32, 1, 1],
    )?;
    Ok(vec![products, sum])
}

/// The segments of the k axis, `stages` stages each per workgroup: the first writes C, the
/// rest add to it. With `splits`, each launch covers `splits` times as many rows, one
/// share per workgroup along z, each written to its own slice of C.
fn launch(
    ctx: &GpuContext,
    pipeline: &wgpu::ComputePipeline,
    ops: Operands<'_>,
    at: Placement,
    stages: usize,
    splits: Option<usize>,
) -> Result<Dispatch> {
    let mut grid = groups(ops.m, ops.n);
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    ensure!(
        grid[0] <= max && grid[1] <= max,
        "a {}×{} matrix product needs a {}×{} grid, over this device's max_compute_workgroups_per_dimension ({max})",
        ops.m,
        ops.n,
        grid[0],
        grid[1]
    );
    let share = stages.saturating_mul(REDUCTION_STAGE);
    let (rows_per_launch, c_split_stride) = match splits {
        Some(s) => {
            grid[2] = s as u32;
            (share.saturating_mul(s), ops.m * ops.n)
        }
        None => (share, 0),
    };
    // The first segment writes C unless the placement adds to it; the rest always add.
    let uniforms: Vec<Dims> = split(ops.k, rows_per_launch)
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
            k_split: if splits.is_some() {
                share.min(ops.k) as u32
            } else {
                seg.count
            },
            c_split_stride: c_split_stride as u32,
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

/// The loop model of an unsplit product over `k` rows producing an m×n result.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Enough lanes that no invocation of split_sum.wgsl adds more than SUM_CHAIN slices,
    /// within a workgroup and WebGPU's grid.
    #[test]
    fn split_sums_keep_their_chains_short() {
        assert_eq!(sum_lanes(1, 1), 1);
        assert_eq!(sum_lanes(8, 64), 1);
        assert_eq!(sum_lanes(9, 64), 2);
        // The paper's size on a GPU: 196 slices (∇W at d = 100, and ∇U, ∇b).
        assert_eq!(sum_lanes(196, 10_000), 32);
        assert_eq!(sum_lanes(1024, 1), 128);
        assert_eq!(sum_lanes(5000, 1), SUM_WORKGROUP);
        for splits in [1, 2, 7, 100, 1024, 4096] {
            for len in [1, 7, 64, 10_000, 1 << 22] {
                let lanes = sum_lanes(splits, len);
                assert!(lanes.is_power_of_two() && lanes <= SUM_WORKGROUP);
                let grid = |lanes: usize| len.div_ceil(SUM_WORKGROUP / lanes);
                // Short chains, unless the workgroup or the grid stopped the lanes short.
                let short = splits.div_ceil(lanes) <= SUM_CHAIN;
                assert!(short || lanes == SUM_WORKGROUP || grid(2 * lanes) > 65_535);
                assert!(lanes == 1 || grid(lanes) <= 65_535);
            }
        }
    }
}
