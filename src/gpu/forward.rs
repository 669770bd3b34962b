//! Forward pass of the tanh RNN, fused over time in bounded segments
//! (`shaders/forward.wgsl`; twin of `src/cpu/forward.rs`).

use anyhow::Result;

use crate::error::Error;
use crate::gpu::blocks::{self, Blocks};
use crate::gpu::buffers::{time_loop_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::layout::{Shape, MAX_HIDDEN};
use crate::gpu::options::{
    GpuOptions, LanesPerUnit, SequencesPerWorkgroup, StepsPerBlock, MAX_LANES_PER_UNIT,
    MAX_SEQUENCES_PER_WORKGROUP,
};
use crate::gpu::packing::{Packing, TimeLoop};
use crate::gpu::segments::{split, Budget};
use crate::gpu::transpose;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    batch: u32,
    steps: u32,
    input: u32,
    hidden: u32,
    first: u32,
    count: u32,
    block: u32,
    slot: u32,
    staged: u32,
}

/// How the tanh RNN's time loops (the forward pass, the backward recursion and the target
/// sweep, which all take the same packing) run at hidden size `d` and `shape` on `ctx`'s
/// adapter, as `options` ask: sequences per workgroup and lanes per unit, each a fixed
/// count after checking it or the count `auto` picks, and the workgroup size that goes
/// with the lanes (`Packing::new`). Their partial sums and vectors must fit the kernels'
/// workgroup memory, lanes·b·d ≤ `MAX_HIDDEN`, and more than one lane a workgroup,
/// lanes·d ≤ the adapter's invocations per workgroup. Their blocks take at most the
/// steps per block asked for.
pub(crate) fn packing(
    ctx: &GpuContext,
    options: &GpuOptions,
    d: usize,
    shape: Shape,
) -> Result<Packing> {
    let budget = Budget::of(ctx);
    let max_invocations = ctx.max_invocations_per_workgroup();
    let lanes = match options.lanes_per_unit {
        LanesPerUnit::Fixed(l) => {
            LanesPerUnit::fixed(l)?;
            if l > 1 && l.saturating_mul(d) > max_invocations {
                return Err(Error::setting(
                    "lanes_per_unit",
                    format!(
                        "{l} lanes per unit at hidden size d = {d} need {} invocations per workgroup, more than this adapter's {max_invocations} (lanes per unit × d must be at most {max_invocations}); use {} or fewer, or `auto`",
                        l * d,
                        largest_power_of_two(MAX_LANES_PER_UNIT, |l| l * d <= max_invocations)
                    ),
                )
                .into());
            }
            Some(l)
        }
        LanesPerUnit::Auto => None,
    };
    let seqs = match options.sequences_per_workgroup {
        SequencesPerWorkgroup::Fixed(b) => {
            SequencesPerWorkgroup::fixed(b)?;
            let l = lanes.unwrap_or(1);
            if b.saturating_mul(l).saturating_mul(d) > MAX_HIDDEN {
                let fit =
                    largest_power_of_two(MAX_SEQUENCES_PER_WORKGROUP, |b| b * l * d <= MAX_HIDDEN);
                return Err(Error::setting(
                    if l > 1 { "lanes_per_unit" } else { "sequences_per_workgroup" },
                    format!(
                        "{b} sequences per workgroup with {l} lane(s) per unit at hidden size d = {d} need {} values of workgroup memory in the time loops, more than their {MAX_HIDDEN} (sequences per workgroup × lanes per unit × d must be at most {MAX_HIDDEN}); use {fit} or fewer sequences, fewer lanes, or `auto`",
                        b * l * d,
                    ),
                )
                .into());
            }
            b
        }
        SequencesPerWorkgroup::Auto => auto_sequences(budget, d * lanes.unwrap_or(1), shape),
    };
    let lanes = lanes.unwrap_or_else(|| auto_lanes(budget, d, seqs, shape.batch, max_invocations));
    if let StepsPerBlock::Fixed(k) = options.steps_per_block {
        StepsPerBlock::fixed(k)?;
    }
    Ok(Packing::new(seqs, lanes, d, max_invocations)
        .with_block_steps(options.steps_per_block.cap()))
}

/// The largest power of two n ≤ `max` for which `fits(n)` holds (1 at least).
fn largest_power_of_two(max: usize, fits: impl Fn(usize) -> bool) -> usize {
    let mut n = 1;
    while n * 2 <= max && fits(n * 2) {
        n *= 2;
    }
    n
}

/// The automatic count of sequences per workgroup, for `width` = lanes per unit · d
/// values per sequence in workgroup memory. On a GPU 1: packing adds serial work to every
/// invocation of a chain of steps that is pure latency (measured on an H100 through Vulkan,
/// 1 beat the cost model's 4 by 3.7× at d = 100, B = 256 and by 1.9× at d = 512, B = 256;
/// `bench::sequences_per_workgroup` is the model's count, which the kernels no longer
/// follow). On llvmpipe, which runs each workgroup on one CPU thread with W in that core's
/// caches, a workgroup's barriers and idle invocations are shared by its sequences: the
/// most sequences that still leave a workgroup for every CPU thread (docs/PERFORMANCE.md,
/// "Sequences per workgroup": 8 at the paper's size on 2 threads, 0.73× the iteration
/// time of 1, where 16 on one thread was slower than 1).
fn auto_sequences(budget: Budget, width: usize, shape: Shape) -> usize {
    match budget {
        Budget::LoopCap => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            llvmpipe_choice(width, shape.batch, threads)
        }
        Budget::Time => 1,
    }
}

/// Most workgroups of the time loops for which `auto` gives each unit two lanes on a GPU:
/// up to here a large GPU has compute units to spare for the bigger workgroups.
const LANES_MAX_WORKGROUPS: usize = 128;

/// Least hidden size for which `auto` gives each unit two lanes on a GPU: below it the
/// dot product is too short for halving it to pay for the lanes' extra barrier.
const LANES_MIN_HIDDEN: usize = 64;

/// The automatic count of lanes per unit with `seqs` sequences per workgroup at hidden
/// size `d` and `batch` sequences. On llvmpipe 1: each lane count above 1 adds a barrier a
/// step, which costs there, and the invocations of a workgroup run on one CPU thread
/// anyway. On a GPU 2 when d ≥ `LANES_MIN_HIDDEN`, the batch gives at most
/// `LANES_MAX_WORKGROUPS` workgroups and two lanes fit (2·d ≤ `max_invocations`,
/// 2·seqs·d ≤ `MAX_HIDDEN`), else 1. Measured on an H100 through Vulkan at T = 784
/// (docs/PERFORMANCE.md, "Lanes per unit"): two lanes took 0.94–0.95× the TP-RI iteration
/// time of one at d = 100, 0.72–0.75× at d = 256 and 0.65–0.68× at d = 512 for B = 16, 64
/// and 128, but 1.04–1.05× at d = 32, 1.25–1.36× at d = 8 and 1.06× at d = 512, B = 256;
/// four lanes were no faster than two at d = 100, eight 1.41× slower than one (a
/// 1 024-invocation workgroup's barriers outweigh the shorter chain).
fn auto_lanes(
    budget: Budget,
    d: usize,
    seqs: usize,
    batch: usize,
    max_invocations: usize,
) -> usize {
    let two_fit = 2 * d <= max_invocations && 2 * seqs * d <= MAX_HIDDEN;
    let pays = d >= LANES_MIN_HIDDEN && batch.div_ceil(seqs.max(1)) <= LANES_MAX_WORKGROUPS;
    match budget {
        Budget::Time if two_fit && pays => 2,
        _ => 1,
    }
}

/// llvmpipe's count for `batch` sequences of `width` values each (lanes per unit · d) on
/// `threads` CPU threads: the largest power of two that fits the workgroup memory and
/// leaves at least `threads` workgroups (1 when the batch is smaller than that).
fn llvmpipe_choice(width: usize, batch: usize, threads: usize) -> usize {
    largest_power_of_two(MAX_SEQUENCES_PER_WORKGROUP, |b| {
        b * width <= MAX_HIDDEN && batch.div_ceil(b) >= threads.max(1)
    })
}

/// The launches: Wᵀ, then the time loop packed as `packing` says, `steps` steps per
/// launch in blocks (`blocks::forward`), writing h [T+1, B, d] (and handing each
/// segment's last state on in `seq.carry`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
    packing: Packing,
) -> Result<[Dispatch; 2]> {
    dispatch_cell(
        ctx,
        model,
        (shape, steps, packing),
        Some(blocks::forward(packing, model.layout.dims.input)),
        ctx.time_loop_kernel(seq.h.storage, TimeLoop::Forward, packing)?,
        vec![
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.carry.as_entire_binding()),
            (7, model.layout.b_hh.bind(&model.theta)),
        ],
    )
}

/// What the forward launches of both cells share: Wᵀ ([d, gates·d] from W [gates·d, d]),
/// then `kernel`'s time loop, one workgroup per `packing.seqs` sequences and `steps` steps
/// per launch (in `blocks` where the loop has them: the tanh cell's), bound to Wᵀ, U and b
/// at 1–3 and to the cell's own `bindings` after them.
pub(crate) fn dispatch_cell<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    (shape, steps, packing): (Shape, usize, Packing),
    blocks: Option<Blocks>,
    kernel: &wgpu::ComputePipeline,
    bindings: Vec<(u32, wgpu::BindingResource<'a>)>,
) -> Result<[Dispatch; 2]> {
    let l = &model.layout;
    let d = l.dims.hidden;
    let transpose = transpose::dispatch(
        ctx,
        l.w.bind(&model.theta),
        model.wt.as_entire_binding(),
        l.cell.gates() * d,
        d,
    )?;
    let uniforms: Vec<Dims> = split(shape.steps, steps)
        .into_iter()
        .map(|seg| Dims {
            batch: shape.batch as u32,
            steps: shape.steps as u32,
            input: l.dims.input as u32,
            hidden: d as u32,
            first: 1 + seg.first,
            count: seg.count,
            block: blocks.map_or(0, |b| b.steps as u32),
            slot: blocks.map_or(0, |b| b.slot as u32),
            staged: blocks.is_some_and(|b| b.staged).into(),
        })
        .collect();
    let mut all = vec![
        (1, model.wt.as_entire_binding()),
        (2, l.u.bind(&model.theta)),
        (3, l.b.bind(&model.theta)),
    ];
    all.extend(bindings);
    let forward = Dispatch::segments(
        ctx,
        kernel,
        &uniforms,
        &all,
        time_loop_groups(ctx, packing, shape.batch)?,
    )?;
    Ok([transpose, forward])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(steps: usize, batch: usize) -> Shape {
        Shape { steps, batch }
    }

    /// On a GPU one sequence per workgroup and two lanes for small batches; on llvmpipe one
    /// lane and as many sequences as leave a workgroup for every CPU thread; never past
    /// workgroup memory or the adapter's invocations.
    #[test]
    fn automatic_packing() {
        // llvmpipe: a workgroup for every thread, within the workgroup memory.
        assert_eq!(llvmpipe_choice(100, 16, 2), 8);
        assert_eq!(llvmpipe_choice(100, 16, 16), 1);
        assert_eq!(llvmpipe_choice(100, 7, 2), 4);
        assert_eq!(llvmpipe_choice(100, 1, 2), 1);
        assert_eq!(llvmpipe_choice(512, 512, 2), 4);
        assert_eq!(llvmpipe_choice(2048, 512, 2), 1);
        assert_eq!(llvmpipe_choice(7, 4096, 0), 16);
        assert_eq!(auto_lanes(Budget::LoopCap, 100, 1, 16, 1024), 1);
        for batch in [1, 16, 512] {
            assert_eq!(auto_sequences(Budget::Time, 100, shape(784, batch)), 1);
        }
        // The paper's size on an NVIDIA adapter (1024 invocations): two lanes a unit; at
        // B = 256 the workgroups fill the device and one lane is faster.
        assert_eq!(auto_lanes(Budget::Time, 100, 1, 16, 1024), 2);
        assert_eq!(auto_lanes(Budget::Time, 512, 1, 16, 1024), 2);
        assert_eq!(auto_lanes(Budget::Time, 100, 1, 128, 1024), 2);
        assert_eq!(auto_lanes(Budget::Time, 100, 1, 256, 1024), 1);
        assert_eq!(auto_lanes(Budget::Time, 100, 4, 256, 1024), 2);
        assert_eq!(auto_lanes(Budget::Time, 32, 1, 16, 1024), 1);
        // Two lanes must fit the invocations and the workgroup memory.
        assert_eq!(auto_lanes(Budget::Time, 1024, 1, 16, 1024), 1);
        assert_eq!(auto_lanes(Budget::Time, 600, 1, 16, 1024), 1);
        assert_eq!(auto_lanes(Budget::Time, 512, 4, 16, 1024), 1);
        for d in [1, 7, 100, 257, 1024, 2048] {
            for seqs in [1, 2, 16] {
                let l = auto_lanes(Budget::Time, d, seqs, 16, 1024);
                assert!(l == 1 || (l * d <= 1024 && l * seqs * d <= MAX_HIDDEN));
            }
        }
        // Workgroups matched to d per lane, within the adapter's invocations.
        assert_eq!(Packing::new(1, 1, 100, 1024).workgroup_size, 128);
        assert_eq!(Packing::new(1, 1, 33, 1024).workgroup_size, 64);
        assert_eq!(Packing::new(1, 1, 257, 1024).workgroup_size, 256);
        assert_eq!(Packing::new(1, 1, 1000, 1024).workgroup_size, 256);
        assert_eq!(Packing::new(1, 2, 100, 1024).workgroup_size, 256);
        assert_eq!(Packing::new(1, 2, 200, 1024).workgroup_size, 512);
        assert_eq!(Packing::new(1, 8, 200, 1024).workgroup_size, 1024);
        assert_eq!(Packing::new(4, 16, 200, 1000).workgroup_size, 512);
    }
}
