//! The phases of an iteration: what `iteration` records in order and `profile` times.

use crate::config::Method;

/// The phases of one iteration, in the order a step records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// h_1 … h_T.
    Forward,
    /// Loss, g_T, ∇V, ∇c.
    Head,
    /// P = (WᵀW + rI)⁻¹Wᵀ by CG (TP), or the reverse layer's gradient (DTP).
    Inverse,
    /// The backward target sweep (TP and DTP).
    Sweep,
    /// The backward recursion e_t, δ_t.
    Bptt,
    /// ∇W, ∇U, ∇b: products over all T·B rows of δ.
    Reductions,
    /// The parameter update.
    Optimizer,
}

impl Phase {
    /// Every phase, in recording order.
    pub const ALL: [Phase; 7] = [
        Phase::Forward,
        Phase::Head,
        Phase::Inverse,
        Phase::Sweep,
        Phase::Bptt,
        Phase::Reductions,
        Phase::Optimizer,
    ];

    /// The phases an iteration of `method` runs.
    pub fn of(method: Method) -> Vec<Phase> {
        Self::ALL
            .into_iter()
            .filter(|p| method != Method::Bp || !matches!(p, Phase::Inverse | Phase::Sweep))
            .collect()
    }

    /// Lower-case name, as in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Head => "head",
            Phase::Inverse => "inverse",
            Phase::Sweep => "sweep",
            Phase::Bptt => "bptt",
            Phase::Reductions => "reductions",
            Phase::Optimizer => "optimizer",
        }
    }
}
