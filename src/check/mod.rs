//! `tpri check`: random problems run on two backends, each quantity's relative error.
//! The self-test a user runs on a new GPU.

use anyhow::Result;
use nalgebra::DMatrix;

mod problems;

pub use problems::{cases, problem, Case};

use crate::backend::{Backend, Trace};
use crate::config::{Inversion, Method, CLAMP_EPS};
use crate::gpu::Storage;
use crate::model::CellKind;

/// The agreement `tpri check` requires of f32 against the f64 reference.
pub const CHECK_TOL: f64 = 1e-4;

/// How much the recursions can amplify relative perturbations of the stored hidden
/// states: `A = Σ_{t=1..T} max_i 2c²/(1 − c²)` over the reference's h_t, c = clamp(h_t,i).
/// A relative error ε on h_t,i becomes a relative error 2c²/(1 − c²)·ε on 1/(1 − c²) (the
/// linearized sweep) and on 1 − h² (BPTT).
pub fn amplification(h: &[DMatrix<f64>]) -> f64 {
    let kappa = |x: f64| {
        let c = x.clamp(-1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS);
        2.0 * c * c / (1.0 - c * c)
    };
    h.iter()
        .skip(1)
        .map(|m| m.iter().copied().map(kappa).fold(0.0, f64::max))
        .sum()
}

/// The bound on ‖gpu − ref‖/‖ref‖ for `quantity` (a name of `trace_errors`) of a GPU
/// backend with `storage`, given the amplification `amp` of the reference's h.
///
/// f32: `CHECK_TOL`. f16 adds, a priori and to first order in f16's unit roundoff
/// u = 2⁻¹¹ (round to nearest even stores x as x(1 + ε), |ε| ≤ u):
/// - h: u. Each value is rounded once; the forward recursion runs on f32 values.
/// - everything else: u·(4 + 2A). Every output is a smooth function of the stored values.
///   A stored h_t enters the sweep through 1/(1 − c²) and BPTT through 1 − h², where its
///   ε becomes at most κ_t·u, κ_t the step's largest 2c²/(1 − c²). The sweep and BPTT
///   carry an error through the same linear maps as the quantity itself, so the relative
///   errors of their steps add up: at most (1 + A)·u along each recursion (the 1 for g_T,
///   from the rounded h_T). On top come the rounding of the stored v − h and of h_{t−1}
///   in ∇W = Σ δ_t h_{t−1}ᵀ: 4 + 2A in all. The head (loss, ∇V, ∇c) reads only h_T and
///   lies far inside the bound.
pub fn storage_bound(storage: Storage, quantity: &str, amp: f64) -> f64 {
    let u = match storage {
        Storage::F32 => return CHECK_TOL,
        Storage::F16 => storage.unit_roundoff(),
    };
    match quantity {
        "h" => u + CHECK_TOL,
        _ => u * (4.0 + 2.0 * amp) + CHECK_TOL,
    }
}

/// ‖a − b‖ / ‖b‖ for each quantity of two traces (b the reference); NaN anywhere gives NaN.
pub fn trace_errors(a: &Trace, b: &Trace) -> Errors {
    fn rel(a: &[&DMatrix<f64>], b: &[&DMatrix<f64>]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            if x.shape() != y.shape() {
                return f64::NAN;
            }
            num += (*x - *y).norm_squared();
            den += y.norm_squared();
        }
        if den == 0.0 {
            num.sqrt()
        } else {
            (num / den).sqrt()
        }
    }
    let mut out = vec![(
        "h".to_string(),
        rel(
            &a.h.iter().collect::<Vec<_>>(),
            &b.h.iter().collect::<Vec<_>>(),
        ),
    )];
    if let (Some(va), Some(vb)) = (&a.v, &b.v) {
        // Row 0 of v is unspecified.
        out.push((
            "v".into(),
            rel(
                &va[1..].iter().collect::<Vec<_>>(),
                &vb[1..].iter().collect::<Vec<_>>(),
            ),
        ));
    }
    if let (Some(pa), Some(pb)) = (&a.p_inv, &b.p_inv) {
        out.push(("p_inv".into(), rel(&[pa], &[pb])));
    }
    // The per-gate inversion's P_r, P_z, P_n, stacked: one entry in the column of P.
    if let (Some(pa), Some(pb)) = (&a.p_gates, &b.p_gates) {
        let (pa, pb): (Vec<_>, Vec<_>) = pa.iter().zip(pb).unzip();
        out.push(("p_inv".into(), rel(&pa, &pb)));
    }
    out.push(("loss".into(), ((a.loss - b.loss) / b.loss).abs()));
    if !(a.step_losses.is_empty() && b.step_losses.is_empty()) {
        let column = |v: &[f64]| DMatrix::from_column_slice(v.len(), 1, v);
        let (sa, sb) = (column(&a.step_losses), column(&b.step_losses));
        out.push(("step_loss".into(), rel(&[&sa], &[&sb])));
    }
    for ((name, ga), (_, gb)) in a.grads.tensors().into_iter().zip(b.grads.tensors()) {
        out.push((format!("grad.{name}"), rel(&[ga], &[gb])));
    }
    out
}

/// Each quantity's relative error, by name (`h`, `v`, `p_inv`, `loss`, `step_loss` with
/// outputs at every step, and `grad.` with the tensor's name).
pub type Errors = Vec<(String, f64)>;

/// The columns of `tpri check`'s table: one per quantity, the gradients named without
/// their cell's prefix so that both cells share them (the GRU's b_ih under `b`), DTP's
/// reverse layer without `dtp.`, a trained embedding table as `embed.weight`.
pub const COLUMNS: [&str; 14] = [
    "h",
    "v",
    "p_inv",
    "loss",
    "step_loss",
    "w_hh",
    "w_ih",
    "b",
    "b_hh",
    "head.w",
    "head.b",
    "w_rev",
    "b_rev",
    "embed.weight",
];

/// The `COLUMNS` entry of a quantity named as in `Errors`.
pub fn column_of(name: &str) -> &str {
    let name = name.strip_prefix("grad.").unwrap_or(name);
    let name = name
        .strip_prefix("rnn.")
        .or_else(|| name.strip_prefix("gru."))
        .or_else(|| name.strip_prefix("dtp."))
        .unwrap_or(name);
    if name == "b_ih" {
        "b"
    } else {
        name
    }
}

/// Whether the GPU backend runs `case` with its histories in `storage`: f32 runs every
/// case, f16 the tanh RNN's with the analytic inversion (and BP) and a head at the last
/// step only, not DTP.
pub fn runs_with(storage: Storage, case: &Case) -> bool {
    let h = &case.hyper;
    storage == Storage::F32
        || (case.cell == CellKind::Tanh
            && !h.loss.every_step()
            && (h.method == Method::Bp
                || (h.method == Method::Tp && h.tp.inversion == Inversion::Analytic)))
}

/// One case of `run_checks`.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// The problem run.
    pub case: Case,
    /// Each quantity's relative error.
    pub errors: Errors,
    /// `amplification` of the reference's h (what `storage_bound` needs).
    pub amplification: f64,
}

/// Runs the cases of `cases()` that a GPU backend with `storage` runs (`runs_with`) on
/// `test` and `reference`. Case i of `cases()` gets seed `seed + i` whichever are run, so
/// a case's problem is the same for every storage.
pub fn run_checks(
    test: &mut dyn Backend,
    reference: &mut dyn Backend,
    storage: Storage,
    seed: u64,
) -> Result<Vec<CheckRow>> {
    cases()
        .into_iter()
        .enumerate()
        .filter(|(_, case)| runs_with(storage, case))
        .map(|(i, case)| {
            let (params, batch) = problem(&case, seed + i as u64)?;
            let a = test.trace(&params, &batch, &case.hyper)?;
            let b = reference.trace(&params, &batch, &case.hyper)?;
            Ok(CheckRow {
                case,
                errors: trace_errors(&a, &b),
                amplification: amplification(&b.h),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetMode;

    #[test]
    fn every_quantity_of_both_cells_has_a_column_and_cases_cover_both_cells() {
        for cell in [CellKind::Tanh, CellKind::Gru] {
            for name in cell.param_names() {
                let full = format!("grad.{name}");
                let col = column_of(&full);
                assert!(COLUMNS.contains(&col), "{name} → {col}");
            }
        }
        assert_eq!(column_of("grad.gru.b_ih"), "b");
        assert_eq!(column_of("grad.gru.b_hh"), "b_hh");
        assert_eq!(column_of("v"), "v");
        let all = cases();
        for (cell, inversion) in [
            (CellKind::Tanh, Inversion::Analytic),
            (CellKind::Tanh, Inversion::Jacobian),
            (CellKind::Gru, Inversion::Jacobian),
            (CellKind::Gru, Inversion::PerGate),
        ] {
            assert!(all.iter().any(|c| c.cell == cell
                && c.hyper.method == Method::Tp
                && c.hyper.tp.inversion == inversion));
        }
        assert!(all
            .iter()
            .any(|c| c.cell == CellKind::Gru && c.hyper.method == Method::Bp));
        assert!(all.iter().any(|c| c.hyper.method == Method::Dtp));
        assert_eq!(column_of("grad.dtp.w_rev"), "w_rev");
        // f16 storage: the tanh RNN's analytic and BP cases, which cover every target mode.
        let f16: Vec<_> = all.iter().filter(|c| runs_with(Storage::F16, c)).collect();
        assert!(all.iter().all(|c| runs_with(Storage::F32, c)));
        assert!(f16.iter().all(|c| c.cell == CellKind::Tanh
            && (c.hyper.method == Method::Bp
                || (c.hyper.method == Method::Tp && c.hyper.tp.inversion == Inversion::Analytic))));
        for mode in [
            TargetMode::Linearized,
            TargetMode::Difference,
            TargetMode::Plain,
        ] {
            assert!(f16
                .iter()
                .any(|c| c.hyper.method == Method::Tp && c.hyper.tp.target_mode == mode));
        }
        assert!(f16.iter().any(|c| c.hyper.method == Method::Bp));
        for c in &all {
            crate::plan::Plan::check(c.cell, &c.hyper, crate::plan::Device::Cpu).unwrap();
            let (params, batch) = problem(c, 1).unwrap();
            assert_eq!(params.cell, c.cell);
            crate::validate::check_batch(&params, &batch).unwrap();
        }
    }
}
