//! How the GPU backend runs on its device: what it stores the histories in, how it
//! splits its long loops into launches, and how many sequences a workgroup of the tanh
//! RNN's time loops carries, how many invocations share each unit's dot product there, and
//! how many steps their blocks take.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::gpu::packing::MAX_STEPS_PER_BLOCK;
use crate::gpu::segments::StepsPerDispatch;
use crate::gpu::storage::Storage;

/// The GPU backend's settings beyond the device (`--storage`, `--steps-per-dispatch`,
/// `--sequences-per-workgroup`, `--lanes-per-unit`, `--steps-per-block`, `--backward`). None changes the mathematics: f16
/// storage rounds the stored histories (docs/ALGORITHM.md §11), the split into launches and
/// the grouping of sequences into workgroups change nothing at all but how long each launch
/// runs, and lanes per unit change the order of the time loops' sums (within f32
/// rounding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GpuOptions {
    /// Element type of the histories h and v − h.
    pub storage: Storage,
    /// How much of a long loop one launch runs.
    pub steps_per_dispatch: StepsPerDispatch,
    /// Sequences one workgroup of the tanh RNN's time loops (forward pass, backward
    /// recursion, target sweep) carries (the GRU's kernels carry one whatever this says).
    pub sequences_per_workgroup: SequencesPerWorkgroup,
    /// Invocations that share each unit's dot product in the tanh RNN's time loops and
    /// the GRU's forward pass and backward recursion (the GRU's other kernels use one
    /// whatever this says).
    pub lanes_per_unit: LanesPerUnit,
    /// Most steps of one block of the tanh RNN's time loops (the GRU's kernels take no
    /// blocks).
    pub steps_per_block: StepsPerBlock,
    /// TP-RI's backward pass with P: the target sweep and the surrogate's BPTT in one
    /// loop where it applies, or two.
    pub backward: Backward,
}

/// How TP-RI's backward pass walks time with the analytic inversion (`--backward`):
/// `fused` runs the target sweep and the surrogate's BPTT in one loop wherever that kernel
/// applies: `shaders/sweep_bptt.wgsl` for the tanh RNN with P (the linearized or
/// difference targets, one output, the surrogate through time, d · lanes per unit within
/// a workgroup; f32 or f16 storage), `shaders/gru_sweep_bptt.wgsl` for the GRU's per-gate
/// inversion (the surrogate through time, d ≤ 341); elsewhere it runs two. `separate`
/// always runs the two loops one after the other (docs/PERFORMANCE.md, "One backward loop
/// for TP-RI"). The results are the same bit for bit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Backward {
    /// One loop where it applies.
    #[default]
    Fused,
    /// Two loops: the target sweep, then the surrogate's BPTT.
    Separate,
}

impl From<Storage> for GpuOptions {
    fn from(storage: Storage) -> Self {
        Self {
            storage,
            ..Self::default()
        }
    }
}

/// Most sequences one workgroup of the tanh RNN's time loops carries
/// (`include/limits.wgsl`'s `MAX_SEQS`, the size of the kernels' per-sequence sums).
pub const MAX_SEQUENCES_PER_WORKGROUP: usize = 16;

/// How many sequences one workgroup of the tanh RNN's time loops (forward pass, backward
/// recursion, target sweep) carries (`--sequences-per-workgroup`; docs/PERFORMANCE.md,
/// "Sequences per workgroup"). Each element of W (or P) a workgroup reads then serves that
/// many sequences; the results are the
/// same whatever the count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SequencesPerWorkgroup {
    /// Per adapter and shape (`gpu::forward`'s rule): 1 on a GPU, on llvmpipe as many as
    /// leave a workgroup for every CPU thread.
    #[default]
    Auto,
    /// This many: a power of two from 1 to `MAX_SEQUENCES_PER_WORKGROUP`, whose states
    /// must fit the kernel's workgroup memory (count · d ≤ `MAX_HIDDEN`; checked per
    /// shape when the workspace is built).
    Fixed(usize),
}

impl SequencesPerWorkgroup {
    /// `Fixed(count)` after checking that `count` is a power of two from 1 to
    /// `MAX_SEQUENCES_PER_WORKGROUP`.
    pub fn fixed(count: usize) -> Result<Self, Error> {
        power_of_two(&SEQUENCES, count).map(Self::Fixed)
    }
}

/// Most lanes per unit of the tanh RNN's time loops (`LanesPerUnit`).
pub const MAX_LANES_PER_UNIT: usize = 16;

/// How many invocations ("lanes") of the tanh RNN's time loops (forward pass, backward
/// recursion, target sweep), and of the GRU's forward pass and backward recursion for
/// their three gates' sums,
/// share each unit's dot product at every step (`--lanes-per-unit`): each sums a
/// contiguous part of the terms, and one adds the parts.
/// The steps are a chain of dependent dot products, so on a GPU more lanes shorten each
/// step's serial work; the results change within f32 rounding (the order of the sums).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LanesPerUnit {
    /// Per adapter and shape (`gpu::forward`'s rule): 1 on llvmpipe, where each barrier
    /// costs; on a GPU 2 where d ≥ 64 and the batch makes at most 128 workgroups, else 1.
    /// The GRU's loops take 1 (`Packing::gru`).
    #[default]
    Auto,
    /// This many: a power of two from 1 to `MAX_LANES_PER_UNIT`, whose lanes fit a
    /// workgroup (lanes · d ≤ the adapter's invocations per workgroup) and whose partial
    /// sums fit the kernels' workgroup memory (lanes · sequences per workgroup · d ≤
    /// `MAX_HIDDEN`, for the GRU's forward pass 3 · lanes · d and its backward recursion
    /// (3 + lanes) · d; checked per shape when the workspace is built).
    Fixed(usize),
}

impl LanesPerUnit {
    /// `Fixed(count)` after checking that `count` is a power of two from 1 to
    /// `MAX_LANES_PER_UNIT`.
    pub fn fixed(count: usize) -> Result<Self, Error> {
        power_of_two(&LANES, count).map(Self::Fixed)
    }

    /// The count this asks for, checked as `fixed` checks it, or `auto` for `Auto`.
    pub fn count(self, auto: usize) -> Result<usize, Error> {
        match self {
            Self::Auto => Ok(auto),
            Self::Fixed(count) => Self::fixed(count).map(|_| count),
        }
    }
}

/// How many steps of the tanh RNN's time loops take their global memory at once
/// (`--steps-per-block`; docs/PERFORMANCE.md, "Blocks of steps"): the forward pass stages a
/// block's inputs and stores its states after it, the backward loops stage their history
/// values a block at a time. The results are the same bit for bit whatever the count; on a
/// GPU a block's loads cost about one memory round trip where a step's cost one each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StepsPerBlock {
    /// As many as the loop's workgroup memory and the loads an invocation issues at once
    /// allow, up to `MAX_STEPS_PER_BLOCK` (`gpu::blocks`).
    #[default]
    Auto,
    /// At most this many, from 1 (every step loads its own values) to
    /// `MAX_STEPS_PER_BLOCK`; fewer where the loop's memory holds fewer.
    Fixed(usize),
}

impl StepsPerBlock {
    /// `Fixed(count)` after checking that `count` is from 1 to `MAX_STEPS_PER_BLOCK`.
    pub fn fixed(count: usize) -> Result<Self, Error> {
        if (1..=MAX_STEPS_PER_BLOCK).contains(&count) {
            Ok(Self::Fixed(count))
        } else {
            Err(Self::refuse(count))
        }
    }

    /// The most steps a block may take: the fixed count, or `MAX_STEPS_PER_BLOCK`.
    pub(crate) fn cap(self) -> usize {
        match self {
            Self::Auto => MAX_STEPS_PER_BLOCK,
            Self::Fixed(count) => count,
        }
    }

    fn refuse(got: impl std::fmt::Debug) -> Error {
        Error::setting(
            "steps_per_block",
            format!(
                "steps per block must be `auto` or a count from 1 to {MAX_STEPS_PER_BLOCK}, got {got:?}"
            ),
        )
    }
}

/// A setting that is `auto` or a power of two up to a bound: its name (as errors name
/// it), what it counts in messages, and the bound.
struct PowerOfTwo {
    setting: &'static str,
    what: &'static str,
    max: usize,
}

const SEQUENCES: PowerOfTwo = PowerOfTwo {
    setting: "sequences_per_workgroup",
    what: "sequences per workgroup",
    max: MAX_SEQUENCES_PER_WORKGROUP,
};

const LANES: PowerOfTwo = PowerOfTwo {
    setting: "lanes_per_unit",
    what: "lanes per unit",
    max: MAX_LANES_PER_UNIT,
};

impl PowerOfTwo {
    /// The error for `got`, which is not `auto` nor a power of two up to the bound.
    fn refuse(&self, got: impl std::fmt::Debug) -> Error {
        Error::setting(
            self.setting,
            format!(
                "{} must be `auto` or a power of two from 1 to {}, got {got:?}",
                self.what, self.max
            ),
        )
    }

    /// `None` for `auto`, else the count `s` names after checking it.
    fn parse(&self, s: &str) -> Result<Option<usize>, Error> {
        if s == "auto" {
            return Ok(None);
        }
        let count = s.parse::<usize>().map_err(|_| self.refuse(s))?;
        power_of_two(self, count).map(Some)
    }
}

/// `count` if it is a power of two from 1 to `kind`'s bound.
fn power_of_two(kind: &PowerOfTwo, count: usize) -> Result<usize, Error> {
    if count.is_power_of_two() && count <= kind.max {
        Ok(count)
    } else {
        Err(kind.refuse(count))
    }
}

impl std::str::FromStr for SequencesPerWorkgroup {
    type Err = Error;

    /// `auto` or a power of two from 1 to `MAX_SEQUENCES_PER_WORKGROUP`.
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(SEQUENCES.parse(s)?.map_or(Self::Auto, Self::Fixed))
    }
}

impl std::str::FromStr for LanesPerUnit {
    type Err = Error;

    /// `auto` or a power of two from 1 to `MAX_LANES_PER_UNIT`.
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(LANES.parse(s)?.map_or(Self::Auto, Self::Fixed))
    }
}

impl std::str::FromStr for StepsPerBlock {
    type Err = Error;

    /// `auto` or a count from 1 to `MAX_STEPS_PER_BLOCK`.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        Self::fixed(s.parse::<usize>().map_err(|_| Self::refuse(s))?)
    }
}

/// `auto` or the count.
fn show(count: Option<usize>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match count {
        None => f.write_str("auto"),
        Some(b) => write!(f, "{b}"),
    }
}

impl std::fmt::Display for SequencesPerWorkgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => show(None, f),
            Self::Fixed(b) => show(Some(*b), f),
        }
    }
}

impl std::fmt::Display for LanesPerUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => show(None, f),
            Self::Fixed(l) => show(Some(*l), f),
        }
    }
}

impl std::fmt::Display for StepsPerBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => show(None, f),
            Self::Fixed(k) => show(Some(*k), f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_per_workgroup_parses_powers_of_two_only() {
        assert_eq!(
            "auto".parse::<SequencesPerWorkgroup>().unwrap(),
            SequencesPerWorkgroup::Auto
        );
        for b in [1, 2, 4, 8, 16] {
            let parsed = b.to_string().parse::<SequencesPerWorkgroup>().unwrap();
            assert_eq!(parsed, SequencesPerWorkgroup::Fixed(b));
            assert_eq!(parsed.to_string(), b.to_string());
        }
        for bad in ["0", "3", "12", "32", "-1", "two", ""] {
            let e = bad.parse::<SequencesPerWorkgroup>().unwrap_err();
            assert!(e.to_string().contains("power of two"), "{bad}: {e}");
            let e = bad.parse::<LanesPerUnit>().unwrap_err();
            assert!(e.to_string().contains("lanes per unit"), "{bad}: {e}");
        }
    }

    #[test]
    fn lanes_per_unit_parse_powers_of_two_only() {
        assert_eq!("auto".parse::<LanesPerUnit>().unwrap(), LanesPerUnit::Auto);
        for l in [1, 2, 4, 8, 16] {
            let parsed = l.to_string().parse::<LanesPerUnit>().unwrap();
            assert_eq!(parsed, LanesPerUnit::Fixed(l));
            assert_eq!(parsed.to_string(), l.to_string());
        }
        assert!(LanesPerUnit::fixed(6).is_err());
    }

    #[test]
    fn steps_per_block_parse_counts_up_to_the_bound() {
        assert_eq!(
            "auto".parse::<StepsPerBlock>().unwrap(),
            StepsPerBlock::Auto
        );
        for k in [1, 3, 19, MAX_STEPS_PER_BLOCK] {
            let parsed = k.to_string().parse::<StepsPerBlock>().unwrap();
            assert_eq!(parsed, StepsPerBlock::Fixed(k));
            assert_eq!(parsed.to_string(), k.to_string());
            assert_eq!(parsed.cap(), k);
        }
        assert_eq!(StepsPerBlock::Auto.cap(), MAX_STEPS_PER_BLOCK);
        for bad in ["0", "33", "-1", "1.5", "many", ""] {
            let e = bad.parse::<StepsPerBlock>().unwrap_err();
            assert!(e.to_string().contains("steps per block"), "{bad}: {e}");
        }
        assert!(StepsPerBlock::fixed(usize::MAX).is_err());
    }
}
