//! The batched conjugate gradient of every regularized inversion on the CPU
//! (docs/ALGORITHM.md §4, §5): one CG per column of the right-hand side, each with its own
//! step sizes, the columns sharing the operator's products at every iteration. `inverse`
//! forms P with it, `target_sweep` and `jacobian` solve each step with it; the GPU's twin
//! is the CG of `shaders/jacobian.wgsl`.

use anyhow::Result;

use crate::cg::CgReport;

/// When a batched solve stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All columns together, when ‖R‖_F / ‖B‖_F ≤ tol: forming P (§4).
    Batch,
    /// Each column on its own, when ‖r_j‖ / ‖b_j‖ ≤ tol: a column that gets there is left
    /// as it is while the others go on. Each column's solution is then the one it would
    /// get alone, however the columns are grouped over cores (the per-step solves of §4
    /// and §5, stopped per sequence as on the GPU).
    EachColumn,
}

/// The vectors of a batched CG, allocated once and reused from solve to solve.
#[derive(Debug, Default)]
pub struct CgVectors {
    r: Vec<f64>,
    p: Vec<f64>,
    ap: Vec<f64>,
    /// ‖r_j‖² and ‖b_j‖² per column.
    rs: Vec<f64>,
    rhs_sq: Vec<f64>,
    /// With a preconditioner M⁻¹: z = M⁻¹ r and r_jᵀ z_j per column.
    z: Vec<f64>,
    rz: Vec<f64>,
}

/// `A P` for all columns of P at once, into the second argument.
pub(crate) type Operator<'a> = dyn FnMut(&[f64], &mut [f64]) -> Result<()> + 'a;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// out = m ⊙ v, element by element.
fn scale(out: &mut [f64], m: &[f64], v: &[f64]) {
    for ((o, &m_i), &v_i) in out.iter_mut().zip(m).zip(v) {
        *o = m_i * v_i;
    }
}

/// The relative residual of one column, 0 for a zero right-hand side.
fn column_residual(rs: f64, rhs_sq: f64) -> f64 {
    if rhs_sq == 0.0 {
        0.0
    } else {
        rs.sqrt() / rhs_sq.sqrt()
    }
}

/// Solves `A X = B` for the column-major columns of width `d` of `rhs` = B into `x`, where
/// `apply(P, out)` writes `A P` for all columns at once (its error, if any, ends the
/// solve with that error). X starts from `x` when `warm`, from zero otherwise. With
/// `precond`, a positive diagonal M⁻¹ laid out as `rhs` is, the CG is preconditioned by
/// it: directions from z = M⁻¹ r and step sizes from rᵀz, the stopping rule still on the
/// residual r itself; without it, plain CG, whose z is r (`z` is then only work space the
/// columns' loop walks). Runs until `stop` is met or `max_iter` iterations have run, and
/// reports the iterations and the residual the stopping rule reads (with
/// [`Stop::EachColumn`], the largest column's; NaN when one turned NaN). A zero B gives
/// X = 0 at once. The right-hand side must be finite (the callers check it, naming what
/// diverged).
pub fn batched_cg(
    apply: &mut Operator,
    rhs: &[f64],
    d: usize,
    x: &mut [f64],
    (warm, precond): (bool, Option<&[f64]>),
    (tol, max_iter, stop): (f64, usize, Stop),
    work: &mut CgVectors,
) -> Result<CgReport> {
    let CgVectors {
        r,
        p,
        ap,
        rs,
        rhs_sq,
        z,
        rz,
    } = work;
    rhs_sq.clear();
    if d > 0 {
        rhs_sq.extend(rhs.chunks_exact(d).map(|c| dot(c, c)));
    }
    let rhs_norm = rhs_sq.iter().sum::<f64>().sqrt();
    if rhs_norm == 0.0 {
        // B = 0 (or no columns): X = 0, whatever the warm start.
        x.fill(0.0);
        return Ok(CgReport::one(0, 0.0));
    }
    for v in [&mut *r, &mut *p, &mut *ap] {
        v.resize(rhs.len(), 0.0);
    }
    r.copy_from_slice(rhs);
    if warm {
        apply(x, ap)?;
        for (r_i, &a_i) in r.iter_mut().zip(ap.iter()) {
            *r_i -= a_i;
        }
    } else {
        x.fill(0.0);
    }
    rs.clear();
    rs.extend(r.chunks_exact(d).map(|c| dot(c, c)));
    // rᵀz per column: ‖r‖² itself for plain CG, whose z is r.
    rz.clear();
    z.resize(rhs.len(), 0.0);
    match precond {
        Some(m) => {
            scale(z, m, r);
            p.copy_from_slice(z);
            rz.extend(
                r.chunks_exact(d)
                    .zip(z.chunks_exact(d))
                    .map(|(a, b)| dot(a, b)),
            );
        }
        None => {
            p.copy_from_slice(r);
            rz.extend_from_slice(rs);
        }
    }
    let residual = |rs: &[f64]| match stop {
        Stop::Batch => rs.iter().sum::<f64>().sqrt() / rhs_norm,
        // The largest, NaN if any is NaN (f64::max would pass over it).
        Stop::EachColumn => rs
            .iter()
            .zip(rhs_sq.iter())
            .map(|(&s, &b)| column_residual(s, b))
            .fold(0.0, |m, v| if v.is_nan() { v } else { m.max(v) }),
    };
    let mut iterations = 0;
    // Written so that a NaN residual (a NaN warm start) stops the solve, as not converged.
    while residual(rs) > tol && iterations < max_iter {
        apply(p, ap)?;
        let columns = x
            .chunks_exact_mut(d)
            .zip(r.chunks_exact_mut(d))
            .zip(p.chunks_exact_mut(d))
            .zip(ap.chunks_exact(d))
            .zip(z.chunks_exact_mut(d))
            .zip(rs.iter_mut().zip(rhs_sq.iter()).zip(rz.iter_mut()))
            .enumerate();
        for (j, (((((x_j, r_j), p_j), ap_j), z_j), ((rs_j, &b_j), rz_j))) in columns {
            if stop == Stop::EachColumn && column_residual(*rs_j, b_j) <= tol {
                continue;
            }
            let curv = dot(p_j, ap_j);
            // A column whose residual is exactly zero has p = 0: leave it where it is.
            let alpha = if curv > 0.0 { *rz_j / curv } else { 0.0 };
            for (xi, &pi) in x_j.iter_mut().zip(p_j.iter()) {
                *xi += alpha * pi;
            }
            for (ri, &api) in r_j.iter_mut().zip(ap_j) {
                *ri -= alpha * api;
            }
            *rs_j = dot(r_j, r_j);
            let (dir, rz_new): (&[f64], f64) = match precond {
                Some(m) => {
                    scale(z_j, &m[j * d..(j + 1) * d], r_j);
                    (z_j, dot(r_j, z_j))
                }
                None => (r_j, *rs_j),
            };
            let beta = if *rz_j > 0.0 { rz_new / *rz_j } else { 0.0 };
            for (pi, &zi) in p_j.iter_mut().zip(dir) {
                *pi = zi + beta * *pi;
            }
            *rz_j = rz_new;
        }
        iterations += 1;
    }
    Ok(CgReport::one(iterations, residual(rs)))
}
