//! The loop-count models of the GRU's backward loops (the conventions: `gpu::loops`).

use super::{dot, units, Cost, LoopModel, Unit, BARRIER};
use crate::gpu::layout::{Shape, MAX_HIDDEN};

/// gru_bptt.wgsl, per step and again per launch (below the top it forms the carried
/// vector once more, one step's work): the step backward and Wᵀ dgh, one gate block at a
/// time. Two barriers per gate block past d = 682 (one a step below, where the three blocks
/// go through workgroup memory at once: the model charges the wider case). With more
/// than one lane the lanes' chunks of the three blocks take at most what one lane's whole
/// blocks did, and the owners' loop over the lanes' parts and the three blocks' last d % 8
/// terms (at most 24) come after one more barrier.
pub(super) fn bptt(d: usize, lanes: usize) -> Cost {
    let owners = if lanes > 1 {
        units(d) * (lanes + 27) + 1 + BARRIER
    } else {
        0
    };
    let step = units(d) * (3 * dot(d) + 7) + 9 + 6 * BARRIER + owners;
    Cost {
        fixed: step,
        per_unit: step,
    }
}

/// gru_per_gate_sweep.wgsl: per step the direct term, the brackets and the products with
/// the P_gᵀ (each owned-units loop with a loop over the three gates inside), and the store
/// of dv_{t−1}: in one round and one barrier where the three brackets fit workgroup memory
/// together (3d ≤ `MAX_HIDDEN`), else in three rounds of two barriers; per launch the
/// set-up (the top rows, or the carried offsets) and the hand-over.
pub(crate) fn per_gate_sweep(d: usize, shape: Shape) -> LoopModel {
    let u = units(d);
    let products = 3 * u * dot(d);
    let per_unit = if 3 * d <= MAX_HIDDEN {
        products + 12 * u + 16 + BARRIER
    } else {
        products + 32 * u + 16 + 6 * BARRIER
    };
    LoopModel {
        what: "per-gate target sweep",
        unit: Unit::Step,
        cost: Cost {
            fixed: 2 * u + 5,
            per_unit,
        },
        total: shape.steps.saturating_sub(1),
        workgroups: shape.batch,
        workgroups_per_unit: 0,
    }
}

/// gru_sweep_bptt.wgsl: per step one owned-units loop writing the brackets (a loop over
/// the three gates inside) and running the step backward, one barrier, and one owned-units
/// loop with the six products (two loops over the three gates); per launch the set-up
/// (with, below the top, Wᵀ dgh of the step above and its barrier) and the hand-over.
pub(crate) fn gru_sweep_bptt(d: usize, shape: Shape) -> LoopModel {
    let u = units(d);
    LoopModel {
        what: "per-gate target sweep with the backward recursion",
        unit: Unit::Step,
        cost: Cost {
            fixed: u * (3 * dot(d) + 8) + 8 + BARRIER,
            per_unit: u * (6 * dot(d) + 16) + 8 + 2 * BARRIER,
        },
        total: shape.steps,
        workgroups: shape.batch,
        workgroups_per_unit: 0,
    }
}
