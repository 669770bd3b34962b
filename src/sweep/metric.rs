//! The figures of merit a sweep ranks, heat-maps and compares its runs by.

use serde::{Deserialize, Serialize};

/// A per-run figure of merit, read from a run's summary.json and log.csv.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The training loss of the last iteration (lower is better).
    FinalTrainLoss,
    /// The held-out loss at the end (lower is better).
    FinalEvalLoss,
    /// The held-out accuracy at the end (higher is better).
    FinalEvalAccuracy,
    /// Area under the held-out accuracy curve over iterations (trapezoid), divided by the
    /// iteration span: the mean accuracy over the run (higher is better).
    AccuracyAuc,
    /// Area under the logged training loss curve over iterations (trapezoid), divided by
    /// the iteration span: the mean training loss over the run (lower is better); the
    /// published code's grid search ranks its runs by this area.
    TrainLossAuc,
    /// The highest held-out accuracy of any evaluation (higher is better).
    BestEvalAccuracy,
    /// The iteration of the first evaluation whose held-out accuracy reaches the spec's
    /// `reach` (lower is better); a run that never reaches it has none.
    ReachIteration,
    /// Seconds of training (lower is better).
    WallSeconds,
}

impl Metric {
    /// Every metric, in the order results.csv lists them.
    pub const ALL: [Metric; 8] = [
        Metric::FinalTrainLoss,
        Metric::FinalEvalLoss,
        Metric::FinalEvalAccuracy,
        Metric::AccuracyAuc,
        Metric::TrainLossAuc,
        Metric::BestEvalAccuracy,
        Metric::ReachIteration,
        Metric::WallSeconds,
    ];

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::FinalEvalAccuracy | Metric::AccuracyAuc | Metric::BestEvalAccuracy
        )
    }

    /// The name in specs and file names (`final-train-loss`, …).
    pub fn name(self) -> &'static str {
        match self {
            Metric::FinalTrainLoss => "final-train-loss",
            Metric::FinalEvalLoss => "final-eval-loss",
            Metric::FinalEvalAccuracy => "final-eval-accuracy",
            Metric::AccuracyAuc => "accuracy-auc",
            Metric::TrainLossAuc => "train-loss-auc",
            Metric::BestEvalAccuracy => "best-eval-accuracy",
            Metric::ReachIteration => "reach-iteration",
            Metric::WallSeconds => "wall-seconds",
        }
    }

    /// Whether figures colour it on a log scale (losses and times, which span decades).
    pub fn log_scale(self) -> bool {
        !self.higher_is_better()
    }
}
