//! Forward pass of the tanh RNN, fused over time in bounded segments
//! (`shaders/forward.wgsl`; twin of `src/cpu/forward.rs`).

use anyhow::Result;

use crate::bench::{sequences_per_workgroup, Machine, Size};
use crate::error::Error;
use crate::gpu::buffers::{per_item_groups, ModelBuffers, SeqBuffers};
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::kernel::TimeLoop;
use crate::gpu::layout::{Shape, MAX_HIDDEN};
use crate::gpu::options::{SequencesPerWorkgroup, MAX_SEQUENCES_PER_WORKGROUP};
use crate::gpu::segments::{split, Budget};
use crate::gpu::storage::Storage;
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
}

/// Sequences per workgroup of the tanh RNN's time loops (the forward pass, the backward
/// recursion and the target sweep, which all take the same count) at hidden size `d` and
/// `shape` on `ctx`'s adapter, as `choice` asks: a fixed count after checking it (a power
/// of two up to `MAX_SEQUENCES_PER_WORKGROUP` whose vectors fit the kernels' workgroup
/// memory: b·d ≤ `MAX_HIDDEN` in each of them), or the
/// count `auto` picks (the cost model's on a GPU, llvmpipe's own rule there).
pub(crate) fn sequences(
    ctx: &GpuContext,
    choice: SequencesPerWorkgroup,
    d: usize,
    shape: Shape,
    storage: Storage,
) -> Result<usize> {
    match choice {
        SequencesPerWorkgroup::Fixed(b) => {
            SequencesPerWorkgroup::fixed(b)?;
            if b.saturating_mul(d) > MAX_HIDDEN {
                return Err(Error::setting(
                    "sequences_per_workgroup",
                    format!(
                        "{b} sequences per workgroup at hidden size d = {d} need {} states' worth of workgroup memory in the time loops, more than their {MAX_HIDDEN} (sequences per workgroup × d must be at most {MAX_HIDDEN}); use {} or fewer, or `auto`",
                        b * d,
                        largest_fitting(d)
                    ),
                )
                .into());
            }
            Ok(b)
        }
        SequencesPerWorkgroup::Auto => Ok(auto(Budget::of(ctx), d, shape, storage)),
    }
}

/// The largest power of two b ≤ `MAX_SEQUENCES_PER_WORKGROUP` with b·d ≤ `MAX_HIDDEN` (1
/// at least).
fn largest_fitting(d: usize) -> usize {
    let mut b = 1;
    while b * 2 <= MAX_SEQUENCES_PER_WORKGROUP && b * 2 * d <= MAX_HIDDEN {
        b *= 2;
    }
    b
}

/// The automatic count. On a GPU the cost model's choice for `Machine::MIDRANGE` (what a
/// GPU of unknown make is assumed to be). On llvmpipe, which runs each workgroup on one
/// CPU thread with W in that core's caches, there is no shared cache traffic to divide,
/// but a workgroup's barriers and idle invocations are shared by its sequences: the most
/// sequences that still leave a workgroup for every CPU thread (docs/PERFORMANCE.md,
/// "Sequences per workgroup": 8 at the paper's size on 2 threads, 0.73× the iteration
/// time of 1, where 16 on one thread was slower than 1).
fn auto(budget: Budget, d: usize, shape: Shape, storage: Storage) -> usize {
    match budget {
        Budget::LoopCap => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            llvmpipe_choice(d, shape.batch, threads)
        }
        Budget::Time => {
            let size = Size {
                steps: shape.steps,
                hidden: d,
                batch: shape.batch,
                input: 1,
                output: 1,
            };
            sequences_per_workgroup(&Machine::MIDRANGE, size, storage)
        }
    }
}

/// llvmpipe's count for `batch` sequences of hidden size `d` on `threads` CPU threads:
/// the largest power of two that fits the workgroup memory and leaves at least `threads`
/// workgroups (1 when the batch is smaller than that).
fn llvmpipe_choice(d: usize, batch: usize, threads: usize) -> usize {
    let mut b = 1;
    while b * 2 <= largest_fitting(d) && batch.div_ceil(b * 2) >= threads.max(1) {
        b *= 2;
    }
    b
}

/// The launches: Wᵀ, then the time loop with `seqs` sequences per workgroup, `steps`
/// steps per launch, writing h [T+1, B, d] (and handing each segment's last state on in
/// `seq.carry`).
pub(crate) fn dispatch(
    ctx: &GpuContext,
    model: &ModelBuffers,
    seq: &SeqBuffers,
    (shape, steps): (Shape, usize),
    seqs: usize,
) -> Result<[Dispatch; 2]> {
    dispatch_cell(
        ctx,
        model,
        (shape, steps, seqs),
        ctx.time_loop_kernel(seq.h.storage, TimeLoop::Forward, seqs)?,
        vec![
            (4, seq.x.as_entire_binding()),
            (5, seq.h.binding()),
            (6, seq.carry.as_entire_binding()),
            (7, model.layout.b_hh.bind(&model.theta)),
        ],
    )
}

/// What the forward launches of both cells share: Wᵀ ([d, gates·d] from W [gates·d, d]),
/// then `kernel`'s time loop, one workgroup per `seqs` sequences and `steps` steps per
/// launch, bound to Wᵀ, U and b at 1–3 and to the cell's own `bindings` after them.
pub(crate) fn dispatch_cell<'a>(
    ctx: &GpuContext,
    model: &'a ModelBuffers,
    (shape, steps, seqs): (Shape, usize, usize),
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
        per_item_groups(
            ctx,
            shape.batch.div_ceil(seqs.max(1)),
            "batch size B / sequences per workgroup",
        )?,
    )?;
    Ok([transpose, forward])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(steps: usize, batch: usize) -> Shape {
        Shape { steps, batch }
    }

    /// On a GPU the cost model packs sequences where W's cache traffic binds (large B and
    /// d) and not where the serial steps do; on llvmpipe as many as leave a workgroup for
    /// every CPU thread; never past workgroup memory.
    #[test]
    fn automatic_sequences_per_workgroup() {
        let f32 = Storage::F32;
        // llvmpipe: a workgroup for every thread, within the workgroup memory.
        assert_eq!(llvmpipe_choice(100, 16, 2), 8);
        assert_eq!(llvmpipe_choice(100, 16, 16), 1);
        assert_eq!(llvmpipe_choice(100, 7, 2), 4);
        assert_eq!(llvmpipe_choice(100, 1, 2), 1);
        assert_eq!(llvmpipe_choice(512, 512, 2), 4);
        assert_eq!(llvmpipe_choice(2048, 512, 2), 1);
        assert_eq!(llvmpipe_choice(7, 4096, 0), 16);
        assert_eq!(auto(Budget::Time, 100, shape(784, 16), f32), 1);
        assert_eq!(auto(Budget::Time, 512, shape(784, 512), f32), 4);
        assert_eq!(auto(Budget::Time, 2048, shape(784, 512), f32), 1);
        for d in [1, 7, 100, 257, 1024, 2048] {
            for batch in [1, 7, 64, 512, 4096] {
                let b = auto(Budget::Time, d, shape(100, batch), f32);
                assert!(
                    b.is_power_of_two() && b * d <= MAX_HIDDEN.max(d),
                    "d={d} B={batch}: {b}"
                );
                assert!(b <= MAX_SEQUENCES_PER_WORKGROUP);
            }
        }
        assert_eq!(largest_fitting(100), 16);
        assert_eq!(largest_fitting(512), 4);
        assert_eq!(largest_fitting(2048), 1);
    }
}
