//! Bounded segments: every long loop of an iteration — the time loops of the forward pass,
//! the target sweep and the backward recursion, the per-step CG of the jacobian sweep, the
//! CG of the solve for P, the reductions over T·B rows — runs as a sequence of launches
//! that each do a bounded part of it, their state kept in buffers between launches, all
//! recorded into the iteration's one command buffer (no host round trip).
//!
//! How much one launch does — its *quota*, in the loop's own units (time steps, CG units,
//! stages of 16 rows; `loops`) — is picked per adapter:
//! - on llvmpipe from the loop-count model, so that no invocation reaches the driver's
//!   silent cap of `LLVMPIPE_LOOP_LIMIT` loop iterations;
//! - elsewhere from a time budget: `TIME_BUDGET_LOOPS` loop iterations per invocation and
//!   launch, divided among the waves a launch's workgroups need when there are more than
//!   `CONCURRENT_WORKGROUPS`. A loop iteration of these kernels (eight multiply-adds, about
//!   sixteen loads) takes some 10–50 ns on a current GPU, so a launch stays in the tens of
//!   milliseconds, far below watchdogs such as Windows' 2 s TDR;
//! - or as `StepsPerDispatch::Fixed` says (`--steps-per-dispatch`), capped on llvmpipe
//!   like the automatic quota.

use std::num::NonZeroUsize;

use anyhow::Result;

use crate::error::Error;
use crate::gpu::context::GpuContext;
use crate::gpu::loops::{LoopModel, Unit, LLVMPIPE_LOOP_LIMIT, REDUCTION_STAGE};

/// Loop iterations per invocation one launch may run on an adapter other than llvmpipe.
const TIME_BUDGET_LOOPS: usize = 1 << 20;

/// Workgroups assumed to run at once on a GPU; a launch with more runs in waves, each
/// taking the time of one.
pub(crate) const CONCURRENT_WORKGROUPS: usize = 128;

/// Workgroups a split reduction fills on a GPU: a compute unit holds several of the
/// product's 256-invocation workgroups at once (an H100's 132 SMs about eight each), and
/// each workgroup's walk over its rows is a chain of latency-bound stages, so more splits
/// shorten the chain until the units are full. 128 (one per unit) left the reductions
/// taking 4.1 ms at T = 784, d = 100, B = 256 on an H100 (docs/PERFORMANCE.md, "First
/// measurements on a real GPU").
pub(crate) const REDUCTION_WORKGROUPS: usize = 1024;

/// Most launches one loop may be split into: a worst case beyond this (an enormous
/// `cg_max_iter`, or T·d far past any real problem on llvmpipe) is refused rather than
/// recorded into every iteration's command buffer.
const MAX_LAUNCHES: usize = 1 << 20;

/// How much of a long loop one launch runs (`--steps-per-dispatch`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StepsPerDispatch {
    /// Picked per adapter: under llvmpipe's loop cap there, from a time budget elsewhere.
    #[default]
    Auto,
    /// At most K steps of each time loop, K CG units of each solve (a step's set-up or
    /// one iteration), and K·B rows of each reduction per launch; on llvmpipe never more
    /// than its loop cap allows. A K of at least T (and at least the CG iterations) runs
    /// every loop in one launch, as far as llvmpipe allows.
    Fixed(NonZeroUsize),
}

impl std::str::FromStr for StepsPerDispatch {
    type Err = Error;

    /// `auto` or a positive count.
    fn from_str(s: &str) -> Result<Self, Error> {
        if s == "auto" {
            return Ok(Self::Auto);
        }
        s.parse::<NonZeroUsize>().map(Self::Fixed).map_err(|_| {
            Error::setting(
                "steps_per_dispatch",
                format!("steps per dispatch must be `auto` or a count of at least 1, got {s:?}"),
            )
        })
    }
}

impl std::fmt::Display for StepsPerDispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(k) => write!(f, "{k}"),
        }
    }
}

/// What bounds a launch on an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Budget {
    /// llvmpipe's loop cap.
    LoopCap,
    /// A time budget (every other adapter).
    Time,
}

impl Budget {
    pub fn of(ctx: &GpuContext) -> Self {
        if ctx.info.name.contains("llvmpipe") {
            Self::LoopCap
        } else {
            Self::Time
        }
    }

    /// Loop iterations one invocation of a launch of `workgroups` workgroups may run.
    fn loops(self, workgroups: usize) -> usize {
        match self {
            Self::LoopCap => LLVMPIPE_LOOP_LIMIT,
            Self::Time => TIME_BUDGET_LOOPS / workgroups.div_ceil(CONCURRENT_WORKGROUPS).max(1),
        }
    }
}

/// How one workspace splits its loops: the adapter's budget and the override.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segmenting {
    pub budget: Budget,
    pub steps: StepsPerDispatch,
    /// Sequences per batch: a fixed K gives the reductions K·B rows per launch.
    pub batch: usize,
}

impl Segmenting {
    /// The splitting `steps` asks for on `ctx`'s adapter, for batches of `batch` sequences.
    pub fn new(ctx: &GpuContext, steps: StepsPerDispatch, batch: usize) -> Self {
        Self {
            budget: Budget::of(ctx),
            steps,
            batch,
        }
    }

    /// Workgroups a reduction splits its rows to fill: llvmpipe runs one per CPU thread,
    /// a GPU `REDUCTION_WORKGROUPS`.
    pub fn concurrent_workgroups(&self) -> usize {
        match self.budget {
            Budget::LoopCap => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Budget::Time => REDUCTION_WORKGROUPS,
        }
    }

    /// The most units of `model` (at most its whole loop, at least one unit's worth of
    /// search) whose launch stays within the budget: the loop iterations of one invocation
    /// grow with the units, and so do the workgroups of a kernel that gives each unit its
    /// own (on a time budget, more waves leave each invocation less time).
    fn fits(&self, model: &LoopModel) -> usize {
        let within = |units: usize| {
            let workgroups = model
                .workgroups
                .saturating_add(units.saturating_mul(model.workgroups_per_unit));
            model.cost.loops(units) <= self.budget.loops(workgroups)
        };
        // Both sides are monotone in the units: the largest that fits, by bisection.
        let (mut lo, mut hi) = (0, model.total.max(1));
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if within(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Units of `model` one launch runs: at least 1, at most the whole loop. On llvmpipe a
    /// loop whose single unit alone passes the cap (only a forward step or sweep step with
    /// thousands of inputs p at d > 256 could) is refused: it cannot be split further, and
    /// its results would be wrong without an error.
    pub fn quota(&self, model: &LoopModel) -> Result<usize> {
        let fits = self.fits(model);
        if fits == 0 && self.budget == Budget::LoopCap {
            return Err(Error::DeviceLimit {
                limit: "llvmpipe loop limit".into(),
                needed: Some(model.cost.loops(1) as u64),
                allowed: LLVMPIPE_LOOP_LIMIT as u64,
                message: format!(
                    "one step of the {} alone needs about {} loop iterations in one GPU \
                     invocation; llvmpipe (software Vulkan) stops every invocation after \
                     {LLVMPIPE_LOOP_LIMIT} without an error. Use a real GPU or the CPU \
                     backend, or fewer inputs per step",
                    model.what,
                    model.cost.loops(1)
                ),
            }
            .into());
        }
        let quota = match self.steps {
            StepsPerDispatch::Auto => fits,
            StepsPerDispatch::Fixed(k) => {
                let k = match model.unit {
                    Unit::Rows => k.get().saturating_mul(self.batch).div_ceil(REDUCTION_STAGE),
                    Unit::Step | Unit::Cg => k.get(),
                };
                match self.budget {
                    Budget::LoopCap => k.min(fits),
                    Budget::Time => k,
                }
            }
        };
        let quota = quota.clamp(1, model.total.max(1));
        let launches = model.total.div_ceil(quota);
        if launches > MAX_LAUNCHES {
            return Err(Error::setting(
                "cg_max_iter",
                format!(
                    "the {} would need {launches} launches of at most {quota} units each in \
                     the worst case, more than the {MAX_LAUNCHES} one iteration records; \
                     lower Hyper::tp.cg_max_iter",
                    model.what
                ),
            )
            .into());
        }
        Ok(quota)
    }
}

/// A part of a loop: `count` units from the `first` (0-based, in the loop's own order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub first: u32,
    pub count: u32,
}

/// `total` units in parts of at most `quota`, in order; a loop without units still gets
/// one (empty) part, for the set-up its kernel does in the first.
pub(crate) fn split(total: usize, quota: usize) -> Vec<Segment> {
    let quota = quota.max(1);
    let parts = total.div_ceil(quota).max(1);
    (0..parts)
        .map(|i| Segment {
            first: (i * quota) as u32,
            count: quota.min(total - (i * quota).min(total)) as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::layout::{Shape, MAX_HIDDEN};
    use crate::gpu::loops;
    use crate::gpu::packing::Packing;
    use crate::gpu::storage::Storage;
    use crate::model::CellKind;

    #[test]
    fn split_covers_the_loop_in_order() {
        let parts = split(10, 3);
        assert_eq!(
            parts.iter().map(|s| (s.first, s.count)).collect::<Vec<_>>(),
            [(0, 3), (3, 3), (6, 3), (9, 1)]
        );
        assert_eq!(split(0, 5), [Segment { first: 0, count: 0 }]);
        assert_eq!(split(4, 100), [Segment { first: 0, count: 4 }]);
    }

    /// The quotas llvmpipe gets keep every loop of every kernel under its cap by the model,
    /// over cells, sizes and CG caps up to the largest the kernels take (d = 2048).
    #[test]
    fn llvmpipe_quotas_stay_under_the_loop_cap() {
        for steps in [
            StepsPerDispatch::Auto,
            StepsPerDispatch::Fixed(NonZeroUsize::MAX),
        ] {
            let seg = Segmenting {
                budget: Budget::LoopCap,
                steps,
                batch: 16,
            };
            for d in [1, 7, 100, 257, 1024, 2048] {
                for (t, max_iter) in [(1, 1), (784, 100), (20_000, 1000)] {
                    let shape = Shape {
                        batch: 16,
                        steps: t,
                    };
                    let mut models = vec![
                        loops::inverse(d, max_iter),
                        loops::reductions(t * 16, 4),
                        loops::per_gate_sweep(d, shape),
                        loops::dtp_reverse(d, 784, shape),
                        loops::dtp_targets(d, 784, shape),
                        loops::step_stats(shape),
                    ];
                    // The GRU's kernels carry one sequence per workgroup and one lane per
                    // unit, but for the lanes of its forward pass and backward recursion; the
                    // tanh RNN's as many as fit its workgroup memory; both in workgroups
                    // matched to d.
                    for lanes in [1, 2, 4, 8, 16] {
                        let packing = Packing::new(1, lanes, d, 1024);
                        let fits =
                            |memory| lanes == 1 || (memory <= MAX_HIDDEN && lanes * d <= 1024);
                        if fits(3 * lanes * d) {
                            models.push(loops::forward(CellKind::Gru, d, 784, shape, packing));
                        }
                        if fits((3 + lanes) * d) {
                            models.push(loops::bptt(CellKind::Gru, d, shape, packing));
                        }
                    }
                    for seqs in [1, 2, 4, 8, 16] {
                        for lanes in [1, 2, 4, 8, 16] {
                            let packing = Packing::new(seqs, lanes, d, 1024);
                            let fits =
                                lanes * seqs * d <= MAX_HIDDEN && (lanes == 1 || lanes * d <= 1024);
                            if fits {
                                let tanh = CellKind::Tanh;
                                models.push(loops::forward(tanh, d, 784, shape, packing));
                                models.push(loops::bptt(tanh, d, shape, packing));
                                models.push(loops::target_sweep(d, 784, shape, packing));
                                for storage in [Storage::F32, Storage::F16] {
                                    let both = (packing, storage);
                                    models.push(loops::sweep_bptt(d, 784, shape, both));
                                }
                            }
                        }
                    }
                    for (gru, pc) in [(false, false), (true, false), (false, true), (true, true)] {
                        models.push(loops::solves(gru, d, shape, max_iter, pc));
                    }
                    for m in models {
                        // Only a worst case of over a million launches (T = 20 000 steps of
                        // 1000 CG iterations at d ≥ 1024) is refused.
                        let q = match seg.quota(&m) {
                            Ok(q) => q,
                            Err(e) if d >= 1024 && t == 20_000 => {
                                assert!(format!("{e}").contains("launches"), "{e}");
                                continue;
                            }
                            Err(e) => panic!("{} at d={d} T={t}: {e}", m.what),
                        };
                        assert!(
                            m.cost.loops(q) <= LLVMPIPE_LOOP_LIMIT,
                            "{} at d={d} T={t}: {q} units, {} loops",
                            m.what,
                            m.cost.loops(q)
                        );
                    }
                }
            }
        }
    }

    /// The quotas docs/PERFORMANCE.md quotes for the paper's size (T = 784, d = 100,
    /// B = 16, p = 1, cg_max_iter = 100): llvmpipe's, then the time budget's.
    #[test]
    fn quotas_at_the_papers_size() {
        let shape = Shape {
            batch: 16,
            steps: 784,
        };
        let models = [
            loops::forward(CellKind::Tanh, 100, 1, shape, Packing::one(100)),
            loops::forward(CellKind::Gru, 100, 1, shape, Packing::one(100)),
            loops::target_sweep(100, 1, shape, Packing::one(100)),
            loops::bptt(CellKind::Tanh, 100, shape, Packing::one(100)),
            loops::bptt(CellKind::Gru, 100, shape, Packing::one(100)),
            loops::inverse(100, 100),
            loops::solves(false, 100, shape, 100, false),
            loops::solves(true, 100, shape, 100, false),
            loops::reductions(784 * 16, 4),
        ];
        for (budget, want) in [
            (
                Budget::LoopCap,
                [784, 784, 783, 784, 635, 101, 779, 458, 784],
            ),
            (
                Budget::Time,
                [784, 784, 783, 784, 784, 101, 12_482, 7332, 784],
            ),
        ] {
            let seg = Segmenting {
                budget,
                steps: StepsPerDispatch::Auto,
                batch: 16,
            };
            let got: Vec<usize> = models.iter().map(|m| seg.quota(m).unwrap()).collect();
            assert_eq!(got, want, "{budget:?}");
        }
        // Unclamped by the loop's length: what fits under the cap.
        let cap = |m: &LoopModel| (LLVMPIPE_LOOP_LIMIT - m.cost.fixed) / m.cost.per_unit;
        let fits: Vec<usize> = models.iter().map(cap).collect();
        assert_eq!(fits, [1870, 2047, 1638, 1984, 635, 779, 779, 458, 2729]);
    }

    /// The quotas tests/gpu_segments.rs quotes for the kernels it runs past the cap on
    /// llvmpipe: the per-gate sweep at d = 100, DTP's target sweep at d = 33, p = 3, and the
    /// per-step losses at B = 1; DTP's reverse layer, whose loops do not grow with T, in
    /// one launch there and in waves of the time budget elsewhere.
    #[test]
    fn quotas_of_the_per_gate_dtp_and_head_loops() {
        let llvmpipe = Segmenting {
            budget: Budget::LoopCap,
            steps: StepsPerDispatch::Auto,
            batch: 1,
        };
        let shape = |steps| Shape { batch: 1, steps };
        let quota = |m: LoopModel| llvmpipe.quota(&m).unwrap();
        assert_eq!(quota(loops::per_gate_sweep(100, shape(1400))), 689);
        assert_eq!(quota(loops::dtp_targets(33, 3, shape(2000))), 1456);
        assert_eq!(quota(loops::step_stats(shape(70_000))), 65_433);
        let reverse = loops::dtp_reverse(
            100,
            1,
            Shape {
                batch: 16,
                steps: 784,
            },
        );
        assert_eq!(quota(reverse), 784);
        // At the paper's size (T = 784, d = 100, B = 16, p = 1), as docs/PERFORMANCE.md
        // quotes them: only the per-gate sweep is split, on llvmpipe (689 + 94 steps).
        let paper = Shape {
            batch: 16,
            steps: 784,
        };
        let models = [
            loops::per_gate_sweep(100, paper),
            loops::dtp_reverse(100, 1, paper),
            loops::dtp_targets(100, 1, paper),
            loops::step_stats(paper),
        ];
        for (budget, want) in [
            (Budget::LoopCap, [689, 784, 783, 784]),
            (Budget::Time, [783, 784, 783, 784]),
        ] {
            let seg = Segmenting {
                budget,
                steps: StepsPerDispatch::Auto,
                batch: 16,
            };
            let got: Vec<usize> = models.iter().map(|m| seg.quota(m).unwrap()).collect();
            assert_eq!(got, want, "{budget:?}");
        }
        // On a GPU: as many steps as keep the waves of 128 workgroups within the budget.
        let gpu = Segmenting {
            budget: Budget::Time,
            ..llvmpipe
        };
        let big = loops::dtp_reverse(
            100,
            1,
            Shape {
                batch: 16,
                steps: 1 << 20,
            },
        );
        let q = gpu.quota(&big).unwrap();
        let waves = (q * 16).div_ceil(CONCURRENT_WORKGROUPS);
        assert!(waves * big.cost.loops(q) <= TIME_BUDGET_LOOPS, "{q}");
        let waves = ((q + 1) * 16).div_ceil(CONCURRENT_WORKGROUPS);
        assert!(waves * big.cost.loops(q + 1) > TIME_BUDGET_LOOPS, "{q}");
    }

    #[test]
    fn time_budget_and_fixed_quotas() {
        let shape = Shape {
            batch: 16,
            steps: 784,
        };
        let model = loops::forward(CellKind::Tanh, 100, 1, shape, Packing::one(100));
        let auto = Segmenting {
            budget: Budget::Time,
            steps: StepsPerDispatch::Auto,
            batch: 16,
        };
        // The paper's size runs in one launch on a GPU.
        assert_eq!(auto.quota(&model).unwrap(), 784);
        let fixed = Segmenting {
            steps: StepsPerDispatch::Fixed(NonZeroUsize::new(7).unwrap()),
            ..auto
        };
        assert_eq!(fixed.quota(&model).unwrap(), 7);
        // K·B rows of the reductions, in stages of 16.
        let rows = loops::reductions(784 * 16, 4);
        assert_eq!(fixed.quota(&rows).unwrap(), 7);
        assert!("0".parse::<StepsPerDispatch>().is_err());
        assert_eq!(
            "auto".parse::<StepsPerDispatch>().unwrap(),
            StepsPerDispatch::Auto
        );
    }
}
