//! How the GPU backend runs on its device: what it stores the histories in, how it
//! splits its long loops into launches, and how many sequences a workgroup of the tanh
//! RNN's time loops carries.

use crate::error::Error;
use crate::gpu::segments::StepsPerDispatch;
use crate::gpu::storage::Storage;

/// The GPU backend's settings beyond the device (`--storage`, `--steps-per-dispatch`,
/// `--sequences-per-workgroup`). None changes the mathematics: f16 storage rounds the
/// stored histories (docs/ALGORITHM.md §11), and the split into launches and the grouping
/// of sequences into workgroups change nothing at all but how long each launch runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GpuOptions {
    /// Element type of the histories h and v − h.
    pub storage: Storage,
    /// How much of a long loop one launch runs.
    pub steps_per_dispatch: StepsPerDispatch,
    /// Sequences one workgroup of the tanh RNN's time loops (forward pass, backward
    /// recursion, target sweep) carries (the GRU's kernels carry one whatever this says).
    pub sequences_per_workgroup: SequencesPerWorkgroup,
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
    /// Picked per shape and adapter by the cost model (`bench::sequences_per_workgroup`).
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
        if count.is_power_of_two() && count <= MAX_SEQUENCES_PER_WORKGROUP {
            Ok(Self::Fixed(count))
        } else {
            Err(Error::setting(
                "sequences_per_workgroup",
                format!(
                    "sequences per workgroup must be `auto` or a power of two from 1 to \
                     {MAX_SEQUENCES_PER_WORKGROUP}, got {count}"
                ),
            ))
        }
    }
}

impl std::str::FromStr for SequencesPerWorkgroup {
    type Err = Error;

    /// `auto` or a power of two from 1 to `MAX_SEQUENCES_PER_WORKGROUP`.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        let count = s.parse::<usize>().map_err(|_| {
            Error::setting(
                "sequences_per_workgroup",
                format!(
                    "sequences per workgroup must be `auto` or a power of two from 1 to \
                     {MAX_SEQUENCES_PER_WORKGROUP}, got {s:?}"
                ),
            )
        })?;
        Self::fixed(count)
    }
}

impl std::fmt::Display for SequencesPerWorkgroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(b) => write!(f, "{b}"),
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
        }
    }
}
