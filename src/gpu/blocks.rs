//! How the tanh RNN's time loops take their global memory a block of steps at a time
//! (docs/PERFORMANCE.md, "Blocks of steps"): forward.wgsl stages each block's inputs x_t
//! in workgroup memory and stores the block's states to the history after it
//! (`forward`); bptt.wgsl and sweep_bptt.wgsl have each unit's finisher load the unit's
//! history values for a block of steps at once into its own part of workgroup memory
//! (`staged_steps`). On a GPU a load on a step's chain costs a memory round trip a step;
//! a block's loads are issued together and cost about one. The sizes here keep every
//! loop within its workgroup memory and the loads an invocation issues at once.

use crate::gpu::layout::MAX_HIDDEN;
use crate::gpu::packing::Packing;
use crate::gpu::storage::Storage;

/// Floats of workgroup memory each of the tanh RNN's time loops declares (`h_buf`,
/// `delta_buf`, `fused_buf`): two d-vectors at the largest d.
const LOOP_MEMORY: usize = 2 * MAX_HIDDEN;

/// Values one invocation loads at most when a time loop stages a block
/// (include/limits.wgsl's STAGE_LOADS: a constant count, which the drivers unroll, so that
/// the loads are in flight together).
pub(crate) const STAGE_LOADS: usize = 16;

/// How forward.wgsl walks its steps (its `dims.block`, `dims.slot`, `dims.staged`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocks {
    /// Steps per block.
    pub steps: usize,
    /// Floats per slot of the ring of states (`Packing::slot`).
    pub slot: usize,
    /// Whether the block's inputs are staged in workgroup memory.
    pub staged: bool,
}

/// forward.wgsl's blocks for `packing` and `p` inputs a step: a ring of `steps` + 1 slots,
/// and after it the inputs of a block for the workgroup's sequences where they fit too
/// (`staged`: within `LOOP_MEMORY`, and at most `STAGE_LOADS` loads an invocation); at
/// most `packing.block_steps` steps. Where the inputs do not fit, the most steps the ring
/// alone allows (at least one: the packing keeps lanes·seqs·d ≤ `MAX_HIDDEN`, two slots).
pub(crate) fn forward(packing: Packing, p: usize) -> Blocks {
    let slot = packing.slot();
    let inputs = packing.seqs.max(1).saturating_mul(p).max(1);
    let loads = STAGE_LOADS.saturating_mul(packing.workgroup_size) / inputs;
    let staged = (LOOP_MEMORY.saturating_sub(slot) / slot.saturating_add(inputs)).min(loads);
    let (steps, staged) = if staged >= 1 {
        (staged, true)
    } else {
        ((LOOP_MEMORY / slot).saturating_sub(1).max(1), false)
    };
    Blocks {
        steps: steps.min(packing.block_steps).max(1),
        slot,
        staged,
    }
}

/// What a backward loop's finisher of each unit stages: `values` values a step for each of
/// the workgroup's sequences, beside the loop's `vectors` d-vectors (`Packing::slot`s) of
/// workgroup memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stage {
    pub values: usize,
    pub vectors: usize,
}

/// bptt.wgsl's stage: the injection and h_t, beside the two vectors of δ.
pub(crate) const BPTT: Stage = Stage {
    values: 2,
    vectors: 2,
};

/// sweep_bptt.wgsl's stage with the histories stored as `storage` says: h_{t−1}, beside
/// its four vectors (s and δ, two each), six with f16 storage (where dv_{t−1} waits in two
/// more for its row's paired stores).
pub(crate) fn sweep_bptt(storage: Storage) -> Stage {
    Stage {
        values: 1,
        vectors: sweep_bptt_vectors(storage),
    }
}

/// The vectors of sweep_bptt.wgsl's workgroup memory (`Packing::slot`s each).
pub(crate) fn sweep_bptt_vectors(storage: Storage) -> usize {
    match storage {
        Storage::F32 => 4,
        Storage::F16 => 6,
    }
}

/// Whether sweep_bptt.wgsl's vectors of `packing` fit its workgroup memory.
pub(crate) fn sweep_bptt_fits(packing: Packing, storage: Storage) -> bool {
    sweep_bptt_vectors(storage).saturating_mul(packing.slot()) <= LOOP_MEMORY
}

/// Steps per block of a backward loop (bptt.wgsl, sweep_bptt.wgsl) that stages `stage`:
/// at most `STAGE_LOADS` loads an invocation, within `LOOP_MEMORY`, at most
/// `packing.block_steps`. 0 where not one step fits: the loop then loads its values at
/// each step.
pub(crate) fn staged_steps(packing: Packing, stage: Stage) -> usize {
    let Stage { values, vectors } = stage;
    let per_step = packing.seqs.max(1) * values.max(1);
    let memory = LOOP_MEMORY.saturating_sub(vectors.saturating_mul(packing.slot()))
        / per_step.saturating_mul(packing.hidden.max(1));
    (STAGE_LOADS / per_step)
        .min(memory)
        .min(packing.block_steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::packing::{assert_shader_declares, MAX_STEPS_PER_BLOCK};

    /// The packings the loops allow: lanes·seqs·d ≤ MAX_HIDDEN.
    fn packings() -> impl Iterator<Item = Packing> {
        let shapes = [(1, 1), (1, 2), (4, 1), (16, 1), (2, 8), (16, 2)];
        [1, 7, 33, 64, 100, 257, 512, 1024, 2048]
            .into_iter()
            .flat_map(move |d| shapes.map(|(seqs, lanes)| Packing::new(seqs, lanes, d, 1024)))
            .filter(|p| p.slot() <= MAX_HIDDEN)
    }

    /// The ring and the staged inputs fit the workgroup memory, with at least one step a
    /// block and no more loads an invocation than STAGE_LOADS.
    #[test]
    fn forward_blocks_fit_the_workgroup_memory() {
        // The paper's size on a GPU: two lanes, 200 floats a slot, 19 steps a block.
        let b = forward(Packing::new(1, 2, 100, 1024), 1);
        assert_eq!((b.steps, b.slot, b.staged), (19, 200, true));
        assert_eq!(
            forward(Packing::new(1, 1, 8, 1024), 1).steps,
            MAX_STEPS_PER_BLOCK
        );
        // No room for the inputs beside two slots: the ring alone, one step a block.
        let b = forward(Packing::new(1, 1, 2048, 1024), 1);
        assert_eq!((b.steps, b.staged), (1, false));
        let b = forward(Packing::new(1, 1, 1000, 1024), 5000);
        assert_eq!((b.steps, b.staged), (3, false));
        for packing in packings() {
            for p in [1, 2, 7, 100, 5000] {
                let b = forward(packing, p);
                let inputs = if b.staged {
                    b.steps * packing.seqs * p
                } else {
                    0
                };
                assert!((1..=MAX_STEPS_PER_BLOCK).contains(&b.steps));
                assert_eq!(b.slot, packing.slot());
                assert!(
                    (b.steps + 1) * b.slot + inputs <= LOOP_MEMORY,
                    "{packing:?} p = {p}"
                );
                assert!(inputs <= STAGE_LOADS * packing.workgroup_size);
            }
        }
    }

    /// A backward loop's stage fits beside its vectors, within STAGE_LOADS a finisher.
    #[test]
    fn staged_steps_fit_the_workgroup_memory() {
        // The paper's size: BPTT (two values, two vectors) 8 steps a block, the fused
        // loop (one value, four vectors, six with f16 storage) 16.
        let paper = Packing::new(1, 2, 100, 1024);
        let (f32_stage, f16_stage) = (sweep_bptt(Storage::F32), sweep_bptt(Storage::F16));
        assert_eq!(staged_steps(paper, BPTT), 8);
        assert_eq!(staged_steps(paper, f32_stage), 16);
        assert_eq!(staged_steps(paper, f16_stage), 16);
        // Four vectors of four lanes at d = 256 fill the memory: no blocks.
        assert_eq!(staged_steps(Packing::new(1, 4, 256, 1024), f32_stage), 0);
        // Two lanes at d = 256: six vectors leave room for 4 steps of h, four for 8.
        let wide = Packing::new(1, 2, 256, 1024);
        assert_eq!(
            (staged_steps(wide, f32_stage), staged_steps(wide, f16_stage)),
            (8, 4)
        );
        for packing in packings() {
            for stage in [BPTT, f32_stage, f16_stage] {
                let Stage { values, vectors } = stage;
                let k = staged_steps(packing, stage);
                let per_step = packing.seqs * values;
                assert!(k <= MAX_STEPS_PER_BLOCK && k * per_step <= STAGE_LOADS);
                assert!(
                    vectors * packing.slot() + k * per_step * packing.hidden <= LOOP_MEMORY
                        || k == 0
                );
            }
        }
    }

    /// `--steps-per-block` caps every loop's blocks; 1 leaves a step to each block.
    #[test]
    fn blocks_take_at_most_the_steps_asked_for() {
        let paper = Packing::new(1, 2, 100, 1024);
        for cap in [1, 5, 19, MAX_STEPS_PER_BLOCK] {
            let packing = paper.with_block_steps(cap);
            assert_eq!(forward(packing, 1).steps, cap.min(19));
            assert_eq!(staged_steps(packing, BPTT), cap.min(8));
            assert_eq!(staged_steps(packing, sweep_bptt(Storage::F32)), cap.min(16));
        }
        assert_eq!(paper.with_block_steps(0).block_steps, 1);
        assert_eq!(paper.with_block_steps(usize::MAX), paper);
    }

    #[test]
    fn stage_loads_match_the_shaders() {
        let limits = include_str!("../../shaders/include/limits.wgsl");
        assert_shader_declares(limits, "limits.wgsl", "STAGE_LOADS", STAGE_LOADS);
    }
}
