//! The loop-count models of jacobian.wgsl's CG solves: the per-step solves of the target
//! sweep (with or without the Jacobi preconditioner) and the solve for P.

use super::{dot, units, Cost, LoopModel, Unit};
use crate::gpu::layout::Shape;

/// One CG iteration of jacobian.wgsl (J = W for the linear operator and the tanh cell, the
/// GRU's Jacobian with `gru`): the two products, three owned-units updates and two
/// workgroup sums. A step's set-up (one transposed product) costs less.
fn cg_iteration(gru: bool, d: usize) -> usize {
    let (u, s) = (units(d), units(d) + 1);
    if gru {
        4 * u * dot(d) + 18 * s + 20
    } else {
        2 * u * dot(d) + 10 * s + 19
    }
}

/// Units of the GRU's three gate vectors jacobian.wgsl's jacobi_owned shares at a time
/// (its GATE_CHUNK: MAX_HIDDEN / 3).
const GATE_CHUNK: usize = crate::gpu::layout::MAX_HIDDEN / 3;

/// jacobian.wgsl's jacobi_owned, the preconditioner of one step's solve: per chunk of
/// units (the GRU's GATE_CHUNK; the tanh cell's d in one) the loops that share the chunk
/// and, per owned unit, the pass down its column four terms at a time and the rest; the
/// owned-units loops around them.
fn jacobi(gru: bool, d: usize) -> usize {
    let (u, s) = (units(d), units(d) + 1);
    let chunks = if gru {
        d.div_ceil(GATE_CHUNK).max(1)
    } else {
        1
    };
    chunks * (1 + 2 * s + u * (d / 4 + 5)) + 4 * s + 1
}

/// jacobian.wgsl's sweep: T − 1 steps of a set-up and up to `max_iter` CG iterations each,
/// a unit costing at most one iteration plus the end of a step (its store, the outer
/// loop); per launch the set-up, and the loads and stores of the carried solve. With the
/// preconditioner (`preconditioned`) each iteration adds z = m ⊙ r and its inner product,
/// a set-up (bounded by an iteration) forms m, and so does a launch that resumes a solve.
pub(crate) fn solves(
    gru: bool,
    d: usize,
    shape: Shape,
    max_iter: usize,
    preconditioned: bool,
) -> LoopModel {
    let s = units(d) + 1;
    let (per_iteration, set_up) = if preconditioned {
        (cg_iteration(gru, d) + 2 * s + 9, jacobi(gru, d))
    } else {
        (cg_iteration(gru, d), 0)
    };
    LoopModel {
        what: "per-step CG of the target sweep",
        unit: Unit::Cg,
        cost: Cost {
            fixed: 8 * s + 3 + set_up,
            per_unit: per_iteration + set_up + s + 1,
        },
        total: shape
            .steps
            .saturating_sub(1)
            .saturating_mul(max_iter.saturating_add(1)),
        workgroups: shape.batch,
        workgroups_per_unit: 0,
    }
}

/// jacobian.wgsl's inverse_columns: one solve per column, its set-up (with the warm
/// start's product) and up to `max_iter` iterations.
pub(crate) fn inverse(d: usize, max_iter: usize) -> LoopModel {
    let s = units(d) + 1;
    LoopModel {
        what: "solve for P",
        unit: Unit::Cg,
        cost: Cost {
            fixed: 10 * s + 3,
            per_unit: cg_iteration(false, d) + s + 1,
        },
        total: max_iter.saturating_add(1),
        workgroups: d,
        workgroups_per_unit: 0,
    }
}
