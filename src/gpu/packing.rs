//! How a time loop of the tanh RNN spreads its work over a workgroup (`Packing`: sequences
//! per workgroup, lanes per unit, invocations, and whether its matrix columns stay in
//! registers), and which loop it is (`TimeLoop`): the overrides its pipeline is compiled
//! with (`gpu::kernel`'s cache is keyed by them), and the workgroup sizes matched to d
//! that the other kernels with a `WG` override share.

use crate::error::Error;
use crate::gpu::layout::MAX_HIDDEN;

/// Most steps one block of the tanh RNN's time loops may take (`StepsPerBlock`,
/// `gpu::blocks`): past a few dozen, the round trip a block costs is spread thin.
pub const MAX_STEPS_PER_BLOCK: usize = 32;

/// The workgroup sizes matched to the hidden size d (`matched_workgroup_size`): the `WG`
/// of jacobian.wgsl and of the GRU's time loops, and of the tanh RNN's per lane (their
/// `WG` is this times the lanes per unit, within the adapter's limit).
pub const WORKGROUP_SIZES: [u32; 3] = [64, 128, 256];

/// The smallest of `WORKGROUP_SIZES` that gives each of d units its own invocation (256
/// beyond): invocations past d idle at every barrier of a loop, and on llvmpipe, which
/// runs a workgroup's invocations in turn, they cost time (docs/PERFORMANCE.md,
/// "Workgroups matched to d").
pub(crate) fn matched_workgroup_size(d: usize) -> u32 {
    WORKGROUP_SIZES
        .into_iter()
        .find(|&wg| d <= wg as usize)
        .unwrap_or(256)
}

/// The sequences per workgroup the tanh RNN's time loops are compiled for (their `SEQS`
/// override).
pub const SEQUENCES_PER_WORKGROUP: [u32; 5] = [1, 2, 4, 8, 16];

/// The lanes per unit the tanh RNN's time loops are compiled for (their `LANES` override).
pub const LANES_PER_UNIT: [u32; 5] = [1, 2, 4, 8, 16];

/// How a tanh RNN time loop's pipeline spreads its work: `seqs` sequences per workgroup,
/// `lanes` invocations per unit's dot product, `workgroup_size` invocations per workgroup
/// (the kernels' `SEQS`, `LANES` and `WG` overrides; `gpu::forward::packing` picks them),
/// and how many steps its blocks may take (`gpu::blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Packing {
    pub seqs: usize,
    pub lanes: usize,
    pub workgroup_size: usize,
    /// The hidden size d the packing was made for.
    pub hidden: usize,
    /// Most steps of a block (`--steps-per-block`; `MAX_STEPS_PER_BLOCK` unless asked).
    pub block_steps: usize,
}

impl Packing {
    /// One sequence per workgroup and one lane per unit, in a workgroup matched to d: the
    /// time loops at their simplest (the loop-count models' tests).
    #[cfg(test)]
    pub fn one(d: usize) -> Packing {
        Packing::new(1, 1, d, 256)
    }

    /// `seqs` and `lanes` at hidden size `d` with the workgroup size that goes with them on
    /// an adapter allowing `max_invocations` per workgroup: `matched_workgroup_size(d)`
    /// per lane, up to the largest power of two the adapter allows (at least 256).
    pub fn new(seqs: usize, lanes: usize, d: usize, max_invocations: usize) -> Packing {
        let per_lane = matched_workgroup_size(d) as usize;
        let cap = 1 << max_invocations.max(256).ilog2();
        let workgroup_size = (per_lane * lanes.max(1)).min(cap);
        Packing {
            seqs,
            lanes,
            workgroup_size,
            hidden: d,
            block_steps: MAX_STEPS_PER_BLOCK,
        }
    }

    /// The GRU's loop `which` at hidden size `d` on an adapter allowing `max_invocations`
    /// per workgroup: one sequence per workgroup and `lanes` lanes per unit (a count of
    /// `LANES_PER_UNIT`: `LanesPerUnit::count`), whose lanes must fit a workgroup
    /// (lanes·d ≤ `max_invocations`) and whose partial sums, with what the loop keeps
    /// beside them, one half of its workgroup memory: 3·lanes·d ≤ `MAX_HIDDEN` in the
    /// forward pass, (3 + lanes)·d in the backward recursion.
    pub fn gru(
        which: GruLoop,
        lanes: usize,
        d: usize,
        max_invocations: usize,
    ) -> Result<Packing, Error> {
        let l = lanes.max(1);
        let memory = match which {
            GruLoop::Forward => 3 * l * d,
            GruLoop::Bptt => (3 + l) * d,
        };
        if l > 1 && (memory > MAX_HIDDEN || l * d > max_invocations) {
            return Err(Error::setting(
                "lanes_per_unit",
                format!(
                    "{l} lanes per unit at hidden size d = {d} need {memory} values of {}'s workgroup memory and {} invocations per workgroup, more than its {MAX_HIDDEN} or this adapter's {max_invocations}; use fewer lanes, or `auto`",
                    which.what(),
                    l * d
                ),
            ));
        }
        Ok(Packing::new(1, l, d, max_invocations))
    }

    /// The same packing with blocks of at most `steps` steps (at least one).
    pub fn with_block_steps(self, steps: usize) -> Packing {
        Packing {
            block_steps: steps.clamp(1, MAX_STEPS_PER_BLOCK),
            ..self
        }
    }

    /// Whether `which` keeps each invocation's chunk of its column(s) in registers for the
    /// whole launch (its `REGISTERS` override; include/dot.wgsl, REG_BLOCKS): where every
    /// invocation owns at most one unit, its lane's chunk is at most `REG_BLOCKS` blocks of
    /// eight, and the registers that takes leave the workgroup within `REGISTER_FILE`.
    /// Past that last bound a driver would spill, or cap every invocation's registers and
    /// spill the rest of the loop: measured on an H200 at d = 256 with two lanes (512
    /// invocations), keeping the register path compiled in (unused) made the loops 2–3×
    /// slower (docs/PERFORMANCE.md, "W in registers").
    pub fn registers(self, which: TimeLoop) -> bool {
        let (d, lanes, wg) = (self.hidden, self.lanes.max(1), self.workgroup_size.max(1));
        let columns = which.register_columns();
        let fits = d * lanes <= wg && (d / 8).div_ceil(lanes) <= REG_BLOCKS;
        // Per column its chunk, its last d % 8 terms (up to 8) and the sums of the sequences.
        let needed = columns * (8 * REG_BLOCKS + 8 + 4 * self.seqs) + OTHER_REGISTERS;
        columns > 0 && fits && needed <= (REGISTER_FILE / wg).min(MAX_REGISTERS)
    }

    /// Workgroups for `batch` sequences.
    pub fn workgroups(self, batch: usize) -> usize {
        batch.div_ceil(self.seqs.max(1))
    }

    /// Floats of one of a time loop's d-vectors in workgroup memory: the lanes' partial
    /// sums of the workgroup's sequences, lanes·seqs·d.
    pub fn slot(self) -> usize {
        (self.lanes.max(1) * self.seqs.max(1) * self.hidden).max(1)
    }
}

/// include/dot.wgsl's REG_BLOCKS: the eight-term blocks of a column an invocation keeps in
/// registers at most.
pub(crate) const REG_BLOCKS: usize = 8;

/// 32-bit registers of one compute unit, shared by a workgroup's invocations: 65 536 on
/// NVIDIA's SMs since Kepler (AMD's compute units and Apple's cores have at least as many
/// a workgroup can use). A heuristic for `Packing::registers`, not a limit wgpu reports.
const REGISTER_FILE: usize = 65_536;

/// Registers one invocation may have at most (NVIDIA's 255, rounded down).
const MAX_REGISTERS: usize = 255;

/// Registers a time loop's step takes besides its columns and sums: indices, the unit's
/// values, addresses (a generous estimate).
const OTHER_REGISTERS: usize = 32;

/// The tanh RNN's time loops, which carry several sequences per workgroup (`SEQS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeLoop {
    /// forward.wgsl.
    Forward,
    /// bptt.wgsl.
    Bptt,
    /// target_sweep.wgsl.
    TargetSweep,
    /// sweep_bptt.wgsl.
    SweepBptt,
}

/// `HistoryKernels::time_loops` is indexed by `which as usize`, in declaration order.
impl TimeLoop {
    /// The kernel's source file.
    pub(crate) fn file(self) -> &'static str {
        match self {
            TimeLoop::Forward => "forward.wgsl",
            TimeLoop::Bptt => "bptt.wgsl",
            TimeLoop::TargetSweep => "target_sweep.wgsl",
            TimeLoop::SweepBptt => "sweep_bptt.wgsl",
        }
    }

    /// The matrix columns the loop can keep in registers: Wᵀ's in the forward pass, W's
    /// in BPTT, those of Pᵀ and W in the fused loop; the separate sweep keeps none.
    pub(crate) fn register_columns(self) -> usize {
        match self {
            TimeLoop::Forward | TimeLoop::Bptt => 1,
            TimeLoop::SweepBptt => 2,
            TimeLoop::TargetSweep => 0,
        }
    }

    /// What the loop computes, for messages.
    pub fn what(self) -> &'static str {
        match self {
            TimeLoop::Forward => "the forward pass",
            TimeLoop::Bptt => "the backward recursion",
            TimeLoop::TargetSweep => "the target sweep",
            TimeLoop::SweepBptt => "the target sweep with the backward recursion",
        }
    }
}

/// The GRU's time loops that take lanes per unit (their `LANES` override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GruLoop {
    /// gru_forward.wgsl.
    Forward,
    /// gru_bptt.wgsl.
    Bptt,
}

impl GruLoop {
    /// The kernel's source file.
    pub(crate) fn file(self) -> &'static str {
        match self {
            GruLoop::Forward => "gru_forward.wgsl",
            GruLoop::Bptt => "gru_bptt.wgsl",
        }
    }

    /// What the loop computes, for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            GruLoop::Forward => "the GRU's forward pass",
            GruLoop::Bptt => "the GRU's backward recursion",
        }
    }
}

/// Asserts that `source`, the shader include `file`, declares the host's `name` as
/// `value`: the constants both sides size their work by.
#[cfg(test)]
pub(crate) fn assert_shader_declares(source: &str, file: &str, name: &str, value: usize) {
    let declaration = format!("const {name}: u32 = {value}u;");
    assert!(
        source.contains(&declaration),
        "include/{file} must declare `{declaration}`"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_blocks_match_the_shaders() {
        let dot = include_str!("../../shaders/include/dot.wgsl");
        assert_shader_declares(dot, "dot.wgsl", "REG_BLOCKS", REG_BLOCKS);
    }
}
