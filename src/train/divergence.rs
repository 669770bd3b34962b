//! When a run has diverged (docs/ALGORITHM.md §10): a rule that minibatch noise cannot
//! trip, and that says whether parameters are healthy enough to checkpoint.

use serde::{Deserialize, Serialize};

/// Weight of the old value in the smoothed training loss: `s ← 0.9 s + 0.1 ℓ` at each log
/// point (about the last 10 log points count).
pub const SMOOTHING: f64 = 0.9;

/// The smoothed loss is "far above its start" above `FACTOR × R`, where `R` is the larger
/// of the initial held-out loss and the first training loss.
pub const FACTOR: f64 = 10.0;

/// A checkpoint's parameters must have a held-out loss of at most `CHECKPOINT_FACTOR × R`,
/// half the divergence threshold.
pub const CHECKPOINT_FACTOR: f64 = FACTOR / 2.0;

/// Consecutive log points with the smoothed loss above the threshold that make a
/// divergence.
pub const PATIENCE: u32 = 3;

/// The state of the divergence rule: what a checkpoint keeps so that a resumed run
/// judges exactly as an uninterrupted one.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergenceCheck {
    /// ℓ_0, the held-out loss of the initial parameters.
    pub initial_loss: f64,
    /// R = max(ℓ_0, ℓ_1), with ℓ_1 the training loss at iteration 1 (the initial
    /// parameters on the first batch); `None` before the first log point.
    pub reference: Option<f64>,
    /// The smoothed training loss s; `None` before the first log point.
    pub smoothed: Option<f64>,
    /// Consecutive log points, up to the last one, with `s > FACTOR × R`.
    pub over: u32,
}

/// What one log point's training loss means.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Finite, and the smoothed loss is at or below the threshold.
    Healthy,
    /// The smoothed loss is above the threshold, for fewer than `PATIENCE` log points yet.
    Rising,
    /// Diverged, and why (in words, with the numbers).
    Diverged(String),
}

impl DivergenceCheck {
    /// The rule before any training, from the initial held-out loss ℓ_0.
    pub fn new(initial_loss: f64) -> Self {
        Self {
            initial_loss,
            reference: None,
            smoothed: None,
            over: 0,
        }
    }

    /// The threshold `FACTOR × R` (infinite before the first log point).
    pub fn threshold(&self) -> f64 {
        self.reference.map_or(f64::INFINITY, |r| FACTOR * r)
    }

    /// Takes the training loss of a log point. A non-finite loss diverges at once; the
    /// first log point of a run (iteration 1, before any update has been scored) sets the
    /// reference and never diverges otherwise; afterwards the smoothed loss must stay
    /// above the threshold for `PATIENCE` log points in a row.
    pub fn observe(&mut self, loss: f64) -> Verdict {
        if !loss.is_finite() {
            return Verdict::Diverged(format!("the training loss is {loss}"));
        }
        let Some(s) = self.smoothed else {
            let start = if self.initial_loss.is_finite() {
                self.initial_loss.max(loss)
            } else {
                loss
            };
            self.reference = Some(start);
            self.smoothed = Some(loss);
            self.over = 0;
            return Verdict::Healthy;
        };
        let s = SMOOTHING * s + (1.0 - SMOOTHING) * loss;
        self.smoothed = Some(s);
        if s > self.threshold() {
            self.over += 1;
        } else {
            self.over = 0;
        }
        if self.over >= PATIENCE {
            Verdict::Diverged(format!(
                "the smoothed training loss ({s:.4e}; this batch {loss:.4e}) has been above \
                 {FACTOR} × its start ({:.4e}) for {PATIENCE} log points in a row",
                self.reference.unwrap_or(f64::NAN)
            ))
        } else if self.over > 0 {
            Verdict::Rising
        } else {
            Verdict::Healthy
        }
    }

    /// Whether parameters whose held-out loss is `held_out` may be checkpointed: it is
    /// finite and at most `CHECKPOINT_FACTOR × R`, half the divergence threshold (so that
    /// the smoothed loss of those very parameters, whose mean the held-out loss
    /// estimates, stays clear of the threshold), and the smoothed training loss is at or
    /// below the threshold, with no streak running.
    pub fn healthy_with(&self, held_out: f64) -> bool {
        let Some(r) = self.reference else {
            return held_out.is_finite();
        };
        held_out.is_finite()
            && held_out <= CHECKPOINT_FACTOR * r
            && self.over == 0
            && self.smoothed.is_some_and(|s| s <= self.threshold())
    }
}
