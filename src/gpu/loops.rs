//! The loop-count model: upper estimates of the loop iterations one invocation of each
//! segmented kernel runs in one launch, as a fixed part plus a part per unit of work (a
//! time step; a CG unit — a step's set-up or one iteration; a stage of 16 reduction rows).
//! `segments` picks from it how many units a launch may run: on llvmpipe, whose loop
//! limiter silently stops an invocation after `LLVMPIPE_LOOP_LIMIT` loop iterations over
//! all its loops, so that no launch reaches it; elsewhere as a proxy for a launch's time.
//!
//! Counting convention, derived from the WGSL loops: a loop of n iterations counts n + 1
//! (the test that ends it), a dot product over d (include/dot.wgsl: eight terms per
//! iteration, then the rest one at a time) `dot(d)`, an owned-units loop of a kernel with
//! `units` units per invocation `units + 1`, a workgroup sum nine (a tree of at most 256),
//! and a workgroup barrier in a time loop `BARRIER` (an empirical margin: what llvmpipe
//! was measured to count beyond the loops). Every term rounds up, so the model is an upper
//! bound; tests/gpu_segments.rs runs the
//! kernels past the cap at the quotas it gives llvmpipe, launches spending their whole
//! quota, and checks their results against the reference.

use crate::gpu::blocks::{self, Stage, STAGE_LOADS};
use crate::gpu::layout::Shape;
use crate::gpu::packing::Packing;
use crate::gpu::packing::REG_BLOCKS;
use crate::gpu::storage::Storage;
use crate::model::CellKind;

mod cg;
mod gru;
pub(crate) use cg::{inverse, solves};
pub(crate) use gru::{gru_sweep_bptt, per_gate_sweep};

/// Loop iterations llvmpipe (Mesa's software Vulkan driver) lets one invocation run in
/// total, over all its loops, before it silently cuts them short (gallivm's loop limiter,
/// present at least up to Mesa 22.3).
pub(crate) const LLVMPIPE_LOOP_LIMIT: usize = 65_535;

/// Loop iterations of one launch: `fixed + units · per_unit` for `units` units of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cost {
    pub fixed: usize,
    pub per_unit: usize,
}

impl Cost {
    /// Loop iterations of a launch running `units` units.
    pub fn loops(self, units: usize) -> usize {
        self.fixed
            .saturating_add(units.saturating_mul(self.per_unit))
    }
}

/// What a loop's unit of work is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// A time step.
    Step,
    /// A CG unit: a step's set-up or one iteration.
    Cg,
    /// A stage of `REDUCTION_STAGE` rows.
    Rows,
}

/// One segmented loop of an iteration: its cost per launch, its whole work in units (the
/// worst case for CG solves) and the workgroups of each launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LoopModel {
    /// The kernel, as messages name it.
    pub what: &'static str,
    pub unit: Unit,
    pub cost: Cost,
    pub total: usize,
    /// Workgroups of a launch, whatever its units.
    pub workgroups: usize,
    /// Workgroups each unit adds to a launch: a kernel that gives every step its own
    /// workgroups instead of looping over steps (DTP's reverse layer) spends no loop
    /// iterations per unit, only time. 0 elsewhere.
    pub workgroups_per_unit: usize,
}

/// What each workgroup barrier in a kernel's time loop adds to the model: an empirical
/// margin, not derived from the WGSL. llvmpipe counts more than the loops the convention
/// sees (it suspends and resumes the invocations at a barrier; what exactly its limiter
/// counts there was not pinned down). Measured on lavapipe (Mesa 22.3) where the dot
/// products leave no slack (d = 103: d % 8 = 7): the tanh forward pass, one barrier a step,
/// was cut short after 2 114 steps of a launch, about 31 iterations a step where its loops
/// make 28; at d = 100 the per-gate sweep, six barriers a step, from 772 steps on (about 85
/// where its loops make 75), and the GRU's backward recursion at the 828 steps its model
/// allowed without a charge. 4 a barrier covers each with room. The CG kernels' barriers
/// (in their workgroup sums) are not charged: their models were checked past the cap at
/// d = 100 as they are.
const BARRIER: usize = 4;

/// Units each invocation owns: exact in kernels with 256 invocations per workgroup, and
/// an upper bound in workgroups matched to d (`packing::matched_workgroup_size`: at least d
/// invocations up to d = 256, at least 256 beyond).
fn units(d: usize) -> usize {
    d.div_ceil(256)
}

/// The iterations one invocation adds to a loop over the values of `b` sequences (a
/// workgroup's b·d, the workgroup size apart) beyond the loop over one sequence's d.
fn flat_loops(b: usize, d: usize, packing: Packing) -> usize {
    let wg = packing.workgroup_size.max(1);
    b.saturating_mul(d).div_ceil(wg) - d.div_ceil(wg)
}

/// Loading one column into registers (include/dot.wgsl's column_registers, and in
/// forward.wgsl rest_registers too), once a launch: at most REG_BLOCKS iterations and seven,
/// and the tests that end the loops (forward.wgsl, bptt.wgsl and sweep_bptt.wgsl, where
/// `Packing::registers` says; charged everywhere). Their use at each step
/// (columns_dot8_registers, column_rest_registers) counts as columns_dot8 and column_rest
/// do: one iteration a block or term and the test that leaves.
const REGISTER_LOAD: usize = REG_BLOCKS + 1 + 8;

/// One dot product over d: d/8 iterations of eight terms, at most 7 single terms, and the
/// two loops' ends.
fn dot(d: usize) -> usize {
    d / 8 + 9
}

/// The dot products of a tanh RNN time loop's step split over `packing.lanes` > 1 lanes
/// (forward.wgsl, bptt.wgsl, target_sweep.wgsl with `b` sequences per workgroup): per
/// pass of the lanes' loop over units (workgroup size / lanes units a pass) the lane's
/// chunk of ⌈(d/8)/lanes⌉ eight-term blocks, each with its loop over the sequences, and the
/// loop over the sequences that stores the partials; then a barrier and the finishers'
/// loop over units (a workgroup's worth a pass), each finishing the b sequences: `finish`
/// loop iterations of its own (the input terms), the last d % 8 terms and the lanes'
/// partials. Workgroups hold at least min(d, 256) invocations a lane, so the loops over
/// units the kernels keep (`units`) cost no more than the model says.
fn lanes_step(d: usize, b: usize, finish: usize, packing: Packing) -> usize {
    let l = packing.lanes;
    let wg = packing.workgroup_size.max(l);
    let passes = d.div_ceil(wg / l);
    let blocks = (d / 8).div_ceil(l);
    let lanes = passes.saturating_mul(blocks.saturating_mul(b + 2) + b + 4) + 1;
    let finishers = d
        .div_ceil(wg)
        .saturating_mul(b.saturating_mul(finish + l + 10) + 2)
        + 1;
    lanes.saturating_add(finishers) + BARRIER
}

/// forward.wgsl and gru_forward.wgsl: per step the units' input loop (p) and dot
/// product(s) — the GRU's three gates share one pass over h — and the store or copy of
/// h_t; per launch the set-up and the hand-over of the last state. forward.wgsl with
/// `seqs` sequences per workgroup (the GRU's kernel has 1) does most of it once per
/// sequence: its flat loops run over the workgroup's seqs·d values, and per unit it runs
/// `seqs` input loops and rests of the dot products (charged as `seqs` whole dot products)
/// and, inside the one pass over Wᵀ, per eight terms a loop over the sequences (its exit
/// test and the outer iteration: two beyond those whole dot products), plus the loop over
/// the sequences around the input loops and the one around their use. At one sequence
/// the drivers drop those one-iteration loops (tests/gpu_segments.rs runs it past the cap
/// at this count). With lanes the dot products and the units' finishing are
/// `lanes_step`'s, and the finishers' input loops, issued before the product, one more
/// loop over the sequences.
pub(crate) fn forward(
    cell: CellKind,
    d: usize,
    p: usize,
    shape: Shape,
    packing: Packing,
) -> LoopModel {
    let u = units(d);
    let b = packing.seqs.max(1);
    // The flat loops' iterations per invocation beyond those of one sequence.
    let flat = flat_loops(b, d, packing);
    let shared = if b > 1 { 2 * (d / 8) + b + 4 } else { 0 };
    let unit = b.saturating_mul(dot(d) + p + 3).saturating_add(shared);
    let units_work = if packing.lanes > 1 {
        lanes_step(d, b, p + 3, packing).saturating_add(b + 1)
    } else {
        u * unit
    };
    let step = units_work + 3 + flat;
    let cost = match cell {
        // One barrier after the set-up, one a step. Blocks (`blocks::forward`): the staging
        // of their inputs (two loops of STAGE_LOADS, where staged), the end of the loop
        // over their steps' stores (one iteration a step) and a barrier.
        CellKind::Tanh => {
            let blocks = blocks::forward(packing, p);
            let block = 1 + BARRIER + if blocks.staged { staging(1) } else { 0 };
            let cost = Cost {
                fixed: 3 * (u + flat) + 4 + REGISTER_LOAD + BARRIER,
                per_unit: step + BARRIER + 1,
            };
            with_blocks(cost, blocks.steps, block)
        }
        // One barrier after the set-up, one a step.
        CellKind::Gru => Cost {
            fixed: u + 2 + BARRIER,
            per_unit: step + BARRIER,
        },
    };
    LoopModel {
        what: "forward pass",
        unit: Unit::Step,
        cost,
        total: shape.steps,
        workgroups: packing.workgroups(shape.batch),
        workgroups_per_unit: 0,
    }
}

/// target_sweep.wgsl: per step the bracketed vector (p input terms in the plain mode), the
/// product with P and the store of dv_{t−1}; per launch the set-up (the top rows) and the
/// hand-over. With `seqs` sequences per workgroup it does most of it once per sequence, as
/// forward.wgsl does (see `forward`): its flat loops (set-up, zeroing, stores, hand-over)
/// run over the workgroup's seqs·d values, and per unit it runs `seqs` brackets and rests
/// of the product (charged as `seqs` whole dot products), the loop over the sequences
/// inside the one pass over Pᵀ and the two loops around the per-sequence work. With lanes
/// the brackets stay (p input terms and the loop over the sequences, per unit) and the
/// product and the units' finishing are `lanes_step`'s.
pub(crate) fn target_sweep(d: usize, p: usize, shape: Shape, packing: Packing) -> LoopModel {
    let u = units(d);
    let b = packing.seqs.max(1);
    // The flat loops' iterations per invocation beyond those of one sequence.
    let flat = flat_loops(b, d, packing);
    let shared = if b > 1 { 2 * (d / 8) + 6 } else { 0 };
    let unit = b.saturating_mul(dot(d) + p + 4).saturating_add(shared);
    let units_work = if packing.lanes > 1 {
        u * (b.saturating_mul(p + 4) + 2) + lanes_step(d, b, 1, packing)
    } else {
        u * unit
    };
    LoopModel {
        what: "target sweep",
        unit: Unit::Step,
        cost: Cost {
            // One barrier in the set-up, two a step; the loads one step ahead, a loop over
            // the sequences in the set-up and in each step.
            fixed: 4 * (u + flat) + 6 + b + BARRIER,
            per_unit: units_work + 5 + b + flat + 2 * BARRIER,
        },
        total: shape.steps.saturating_sub(1),
        workgroups: packing.workgroups(shape.batch),
        workgroups_per_unit: 0,
    }
}

/// bptt.wgsl (per step one dot product) and gru_bptt.wgsl (per step the step backward and
/// Wᵀ dgh, one gate block at a time; a launch below the top forms the carried vector once
/// more, one step's work). bptt.wgsl with `seqs` sequences per workgroup (the GRU's kernel
/// has 1) does most of it once per sequence, as forward.wgsl does (see `forward`): per unit
/// `seqs` injections and rests of the dot product (charged as `seqs` whole dot products),
/// the loop over the sequences inside the one pass over W and the loops around the
/// injections' loads and their use; its set-up loop runs over the workgroup's seqs·d
/// values. With lanes the dot products and the units' finishing (the injections) are
/// `lanes_step`'s, and the finishers' loads, issued before the product, one more loop
/// over the sequences.
pub(crate) fn bptt(cell: CellKind, d: usize, shape: Shape, packing: Packing) -> LoopModel {
    let cost = match cell {
        CellKind::Tanh => with_stage(tanh_bptt(d, packing), packing, blocks::BPTT),
        CellKind::Gru => gru::bptt(d, packing.lanes),
    };
    LoopModel {
        what: "backward recursion",
        unit: Unit::Step,
        cost,
        total: shape.steps,
        workgroups: packing.workgroups(shape.batch),
        workgroups_per_unit: 0,
    }
}

/// bptt.wgsl's loops without its blocks of staged loads: one barrier in the set-up, one a
/// step (two with lanes: lanes_step's); before the steps, a loop over the sequences (the
/// first step's inputs where sweep_bptt.wgsl loads h_first).
fn tanh_bptt(d: usize, packing: Packing) -> Cost {
    let u = units(d);
    let b = packing.seqs.max(1);
    let flat = flat_loops(b, d, packing);
    let shared = if b > 1 { 2 * (d / 8) + b + 4 } else { 0 };
    let unit = b.saturating_mul(dot(d) + 2).saturating_add(shared);
    let units_work = if packing.lanes > 1 {
        lanes_step(d, b, 2, packing).saturating_add(b + 1)
    } else {
        u * unit
    };
    Cost {
        fixed: u + flat + 2 + b + 1 + REGISTER_LOAD + BARRIER,
        per_unit: units_work + 3 + BARRIER,
    }
}

/// The two loops (loads, then stores) of a block's staging with `values` values a step
/// (forward.wgsl's stage_inputs: 1; bptt.wgsl's and sweep_bptt.wgsl's stage_block).
fn staging(values: usize) -> usize {
    2 * (STAGE_LOADS / values.max(1) + 1)
}

/// `cost` with blocks of `k` steps (0: none) of `block` iterations each: n steps run at
/// most ⌈n / k⌉ ≤ n / k + 1 blocks, charged once a launch and ⌈block / k⌉ a step.
fn with_blocks(cost: Cost, k: usize, block: usize) -> Cost {
    if k == 0 {
        return cost;
    }
    Cost {
        fixed: cost.fixed + block,
        per_unit: cost.per_unit + block.div_ceil(k),
    }
}

/// `cost` with a backward loop's blocks of `stage` (`blocks::staged_steps`).
fn with_stage(cost: Cost, packing: Packing, stage: Stage) -> Cost {
    let k = blocks::staged_steps(packing, stage);
    with_blocks(cost, k, staging(stage.values))
}

/// sweep_bptt.wgsl with the histories stored as `storage` says: per step what
/// target_sweep.wgsl's and bptt.wgsl's steps do together (their sum: its one pass over the
/// units runs both dot products and both finishes, its barriers are the sweep's, and with
/// f16 storage its paired stores of dv are the sweep's store_rows), per launch both
/// set-ups and the loading of its column of Pᵀ into registers (bptt's model has the one of
/// W); and its own blocks of staged loads (h, one value a step).
pub(crate) fn sweep_bptt(
    d: usize,
    p: usize,
    shape: Shape,
    (packing, storage): (Packing, Storage),
) -> LoopModel {
    let sweep = target_sweep(d, p, shape, packing).cost;
    let bptt = tanh_bptt(d, packing);
    let both = Cost {
        fixed: sweep.fixed.saturating_add(bptt.fixed) + REGISTER_LOAD,
        per_unit: sweep.per_unit.saturating_add(bptt.per_unit),
    };
    LoopModel {
        what: "target sweep with the backward recursion",
        unit: Unit::Step,
        cost: with_stage(both, packing, blocks::sweep_bptt(storage)),
        total: shape.steps,
        workgroups: packing.workgroups(shape.batch),
        workgroups_per_unit: 0,
    }
}

/// Rows of a reduction per unit (matmul.wgsl's BK).
pub(crate) const REDUCTION_STAGE: usize = 16;

/// matmul.wgsl over `rows` rows: per stage of 16 rows the loads (four per invocation) and
/// sixteen multiply-adds; per launch the stores. `workgroups` is the launch's grid.
pub(crate) fn reductions(rows: usize, workgroups: usize) -> LoopModel {
    LoopModel {
        what: "reductions over T·B rows",
        unit: Unit::Rows,
        cost: Cost {
            fixed: 24,
            per_unit: 24,
        },
        total: rows.div_ceil(REDUCTION_STAGE),
        workgroups,
        workgroups_per_unit: 0,
    }
}

/// embedding_grad.wgsl over the T·B rows of δ: per stage of 16 of a token's rows sixteen
/// loop iterations (one load and add each); per launch the index reads and the store. The
/// rows a token holds are known only per batch, so the model takes the worst case: one
/// token at every row. `workgroups` is the launch's grid.
pub(crate) fn embedding_sums(rows: usize, workgroups: usize) -> LoopModel {
    LoopModel {
        what: "embedding gradient (per-token sums)",
        unit: Unit::Rows,
        cost: Cost {
            fixed: 4,
            per_unit: REDUCTION_STAGE + 1,
        },
        total: rows.div_ceil(REDUCTION_STAGE),
        workgroups,
        workgroups_per_unit: 0,
    }
}

/// dtp_reverse.wgsl: one workgroup per step and sequence, each loading h~ and forming y
/// and r, two owned-units loops of p input terms and a dot product, two barriers; no loop
/// over steps.
pub(crate) fn dtp_reverse(d: usize, p: usize, shape: Shape) -> LoopModel {
    let u = units(d);
    LoopModel {
        what: "DTP reverse layer",
        unit: Unit::Step,
        cost: Cost {
            fixed: u * (2 * dot(d) + 2 * p + 5) + 3 + 2 * BARRIER,
            per_unit: 0,
        },
        total: shape.steps,
        workgroups: 0,
        workgroups_per_unit: shape.batch,
    }
}

/// dtp_targets.wgsl: per step the load of h_t, the owned units' p input terms and two dot
/// products, two barriers and the store of dv_{t−1}; per launch the set-up and the
/// hand-over.
pub(crate) fn dtp_targets(d: usize, p: usize, shape: Shape) -> LoopModel {
    let u = units(d);
    LoopModel {
        what: "DTP target sweep",
        unit: Unit::Step,
        cost: Cost {
            fixed: 2 * u + 3,
            per_unit: u * (2 * dot(d) + p + 4) + 4 + 2 * BARRIER,
        },
        total: shape.steps.saturating_sub(1),
        workgroups: shape.batch,
        workgroups_per_unit: 0,
    }
}

/// seq_head.wgsl's step_stats, one workgroup: its invocations take a launch's steps in
/// turn (⌈count/256⌉ rounds of a loop over the B sequences, at most
/// count·⌈(B+2)/256⌉ + B + 2 iterations), then two workgroup sums (nine loop iterations
/// and ten barriers each). (softmax_rows loops over one row's q outputs only,
/// 3⌈q/256⌉ + 21 iterations, under the cap for any q below five million: it is one launch
/// per block of steps, not a loop over time.)
pub(crate) fn step_stats(shape: Shape) -> LoopModel {
    let b = shape.batch;
    LoopModel {
        what: "per-step losses of the heads at every step",
        unit: Unit::Step,
        cost: Cost {
            fixed: b + 2 + 1 + 2 * (9 + 10 * BARRIER),
            per_unit: (b + 2).div_ceil(256),
        },
        total: shape.steps,
        workgroups: 1,
        workgroups_per_unit: 0,
    }
}
