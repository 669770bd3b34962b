//! The two inner loops of every recurrence, written for the vector units: the product of
//! one time step (a d×d matrix times the few columns one core carries) and tanh.
//!
//! Why not `gemm`: at one time step the product is small (d×d times about 8 columns), so
//! `matrixmultiply` spends as long re-packing the d×d matrix into its panel layout as
//! multiplying, at every one of the T steps. Here the matrix is read in place (column
//! k of a column-major matrix is contiguous), in register tiles of 8 rows × 4 columns.
//! Why not libm's tanh: it is a scalar call; ours vectorizes, and stays within a few ulp.
//!
//! Both are written once in plain Rust and compiled twice: for AVX2 + FMA, chosen at run
//! time when the CPU has them, and for the build's baseline target (every other machine).
//! Every entry of a product is the same chain of fused multiply-adds over k in order, in
//! every tile shape and both builds, so results do not depend on how columns are grouped
//! across cores.

/// Rows of a register tile (three AVX2 vectors of f64).
const MR: usize = 12;
/// Columns of a register tile.
const NR: usize = 4;

/// `C ← A X + (C if accumulate, else 0)` for a column-major m×k `a`, a column-major k×n
/// `x` and a column-major m×n `c`.
pub fn step_product(a: &[f64], m: usize, x: &[f64], accumulate: bool, c: &mut [f64]) {
    let k = a.len().checked_div(m).unwrap_or(0);
    assert_eq!(a.len(), m * k, "step_product: A is not m×k");
    let n = match x.len().checked_div(k) {
        Some(n) => n,
        None => c.len().checked_div(m).unwrap_or(0),
    };
    assert_eq!(x.len(), k * n, "step_product: X is not k×n");
    assert_eq!(c.len(), m * n, "step_product: C is not m×n");
    let product = Product {
        a,
        m,
        k,
        x,
        n,
        accumulate,
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { step_product_avx2(&product, c) };
        return;
    }
    product.run(c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn step_product_avx2(product: &Product, c: &mut [f64]) {
    product.run(c);
}

/// The operands of `step_product`, checked: A is m×k, X is k×n.
struct Product<'a> {
    a: &'a [f64],
    m: usize,
    k: usize,
    x: &'a [f64],
    n: usize,
    accumulate: bool,
}

impl Product<'_> {
    #[inline(always)]
    fn run(&self, c: &mut [f64]) {
        let (m, n) = (self.m, self.n);
        let mut j = 0;
        while j < n {
            let cols = if n - j >= NR { NR } else { 1 };
            let mut i = 0;
            while i < m {
                let rows = match m - i {
                    r if r >= MR => MR,
                    r if r >= 4 => 4,
                    _ => 1,
                };
                let at = Tile { p: self, i, j };
                match (rows, cols) {
                    (MR, NR) => at.run::<MR, NR>(c),
                    (4, NR) => at.run::<4, NR>(c),
                    (1, NR) => at.run::<1, NR>(c),
                    (MR, _) => at.run::<MR, 1>(c),
                    (4, _) => at.run::<4, 1>(c),
                    _ => at.run::<1, 1>(c),
                }
                i += rows;
            }
            j += cols;
        }
    }
}

/// Where a register tile of C starts: rows `i..`, columns `j..`.
struct Tile<'a> {
    p: &'a Product<'a>,
    i: usize,
    j: usize,
}

impl Tile<'_> {
    /// The R×C block of C at (i, j), accumulated in registers over all of k.
    // kk indexes A's columns and X's rows in lockstep: a range reads plainest.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    fn run<const R: usize, const C: usize>(&self, c: &mut [f64]) {
        let Product {
            a,
            m,
            k,
            x,
            accumulate,
            ..
        } = *self.p;
        let xs: [&[f64]; C] = std::array::from_fn(|q| &x[(self.j + q) * k..][..k]);
        let mut acc = [[0.0f64; R]; C];
        for kk in 0..k {
            let col: &[f64; R] = a[kk * m + self.i..][..R].try_into().expect("R entries");
            for q in 0..C {
                let xv = xs[q][kk];
                for r in 0..R {
                    acc[q][r] = col[r].mul_add(xv, acc[q][r]);
                }
            }
        }
        for (q, acc_q) in acc.iter().enumerate() {
            let out: &mut [f64; R] = (&mut c[(self.j + q) * m + self.i..][..R])
                .try_into()
                .expect("R entries");
            for r in 0..R {
                out[r] = if accumulate {
                    acc_q[r] + out[r]
                } else {
                    acc_q[r]
                };
            }
        }
    }
}

/// `tanh` of every entry, in place.
pub fn tanh_in_place(v: &mut [f64]) {
    map_in_place(v, tanh);
}

/// `f` of every entry, in place: the loop compiled for AVX2 + FMA where the CPU has them
/// (`f` inlined into it, so that it vectorizes), for the baseline target elsewhere.
#[inline(always)]
fn map_in_place(v: &mut [f64], f: impl Fn(f64) -> f64 + Copy) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { map_avx2(v, f) };
        return;
    }
    v.iter_mut().for_each(|e| *e = f(*e));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(v: &mut [f64], f: impl Fn(f64) -> f64 + Copy) {
    v.iter_mut().for_each(|e| *e = f(*e));
}

/// tanh to within a few ulp, branch-free so that loops over it vectorize:
/// `tanh|x| = −m / (2 + m)` with `m = expm1(−2|x|)`, the sign put back. `expm1` is exact
/// to the last bits near 0 (where `tanh x ≈ x` needs it) because the reduction
/// `u = k ln 2 + r` leaves k = 0 there and the polynomial then is the whole answer.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    // Beyond |x| = 20, tanh is 1 to f64 precision; the bound keeps 2^k normal. A NaN
    // fails the comparison and flows through.
    let u = -2.0 * x.abs();
    let u = if u < -40.0 { -40.0 } else { u };
    let m = expm1_reduced(u);
    (-m / (2.0 + m)).copysign(x)
}

/// `e^u − 1` for u in [−40, 0] (or NaN).
#[inline(always)]
fn expm1_reduced(u: f64) -> f64 {
    let (scale, p) = exp_parts(u);
    // 2^k (1 + p) − 1, where 2^k − 1 is exact for these k.
    scale.mul_add(p, scale - 1.0)
}

/// `e^u` for u in [−708, 0] (or NaN): 2^k (1 + p), with no cancellation however small.
#[inline(always)]
fn exp_reduced(u: f64) -> f64 {
    let (scale, p) = exp_parts(u);
    scale.mul_add(p, scale)
}

/// `(2^k, p)` with `e^u = 2^k (1 + p)`, for u in [−708, 0] (2^k stays normal) or NaN.
#[inline(always)]
fn exp_parts(u: f64) -> (f64, f64) {
    // Round-to-nearest by the 1.5·2^52 trick (no call, vectorizes): the low bits of
    // `shifted` hold k.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // ln 2 split so that k·LN2_HI is exact for |k| < 2^20 (fdlibm's constants: ln 2 to
    // 32 significant bits, and the rest).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    let shifted = u * std::f64::consts::LOG2_E + SHIFT;
    let kf = shifted - SHIFT;
    let k = shifted.to_bits() as i64 - SHIFT.to_bits() as i64;
    let r = (u - kf * LN2_HI) - kf * LN2_LO;
    // expm1(r) for |r| ≤ ln2/2 by its Taylor series to r^13/13! (remainder below 2e-17
    // relative), in Horner form.
    let mut p: f64 = 1.0 / 6_227_020_800.0;
    for n in (2..=12).rev() {
        p = p.mul_add(r, 1.0 / FACTORIALS[n]);
    }
    let p = (p * r).mul_add(r, r);
    (f64::from_bits(((k + 1023) as u64) << 52), p)
}

/// The logistic sigmoid `1 / (1 + e^{−x})` of every entry, in place (the GRU's gates r
/// and z).
pub fn sigmoid_in_place(v: &mut [f64]) {
    map_in_place(v, sigmoid);
}

/// The sigmoid to within a few ulp, branch-free so that loops over it vectorize: with
/// `e = e^{−|x|}` (`exp_reduced`, exact to the last bits however small), σ(|x|) = 1/(1 + e)
/// and σ(−|x|) = e/(1 + e), neither with a cancellation. Past |x| = 708, where e would
/// leave the normal range, e is taken as 0: σ(−|x|) is then 0 instead of a value below
/// 3.3e-308.
#[inline(always)]
pub fn sigmoid(x: f64) -> f64 {
    let u = -x.abs();
    let far = u < -708.0;
    let e = exp_reduced(if far { -708.0 } else { u });
    let e = if far { 0.0 } else { e };
    let num = if x < 0.0 { e } else { 1.0 };
    num / (1.0 + e)
}

/// n! for n = 0 … 12.
const FACTORIALS: [f64; 13] = [
    1.0,
    1.0,
    2.0,
    6.0,
    24.0,
    120.0,
    720.0,
    5040.0,
    40320.0,
    362_880.0,
    3_628_800.0,
    39_916_800.0,
    479_001_600.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn tanh_is_within_a_few_ulp_of_libm() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut xs: Vec<f64> = (0..200_000)
            .map(|i| {
                let scale = [1e-300, 1e-12, 1e-6, 1e-3, 0.1, 0.35, 1.0, 3.0, 20.0, 50.0][i % 10];
                rng.random_range(-scale..=scale)
            })
            .collect();
        xs.extend([
            0.0,
            -0.0,
            0.3465,
            -0.3466,
            19.06,
            -19.07,
            1e308,
            f64::INFINITY,
        ]);
        let mut ours = xs.clone();
        tanh_in_place(&mut ours);
        for (&x, &t) in xs.iter().zip(&ours) {
            let exact = x.tanh();
            let ulp = f64::EPSILON * exact.abs().max(f64::MIN_POSITIVE);
            assert!(
                (t - exact).abs() <= 3.0 * ulp,
                "tanh({x:e}) = {t:e}, libm {exact:e}"
            );
            assert_eq!(
                t.is_sign_negative(),
                exact.is_sign_negative(),
                "sign of tanh({x:e})"
            );
        }
        let mut special = [f64::NAN, f64::NEG_INFINITY];
        tanh_in_place(&mut special);
        assert!(special[0].is_nan());
        assert_eq!(special[1], -1.0);
    }

    #[test]
    fn sigmoid_is_within_a_few_ulp_of_libm() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut xs: Vec<f64> = (0..200_000)
            .map(|i| {
                let scale = [1e-300, 1e-8, 1e-3, 0.3, 1.0, 5.0, 30.0, 100.0, 700.0][i % 9];
                rng.random_range(-scale..=scale)
            })
            .collect();
        xs.extend([
            0.0, -0.0, 36.7, -36.7, 708.0, -708.0, 745.0, -745.0, 1e308, -1e308,
        ]);
        let mut ours = xs.clone();
        sigmoid_in_place(&mut ours);
        for (&x, &s) in xs.iter().zip(&ours) {
            // Without cancellation on either side, from libm's exp.
            let exact = if x < 0.0 {
                x.exp() / (1.0 + x.exp())
            } else {
                1.0 / (1.0 + (-x).exp())
            };
            // Below 3.3e-308 (x < −708) the sigmoid is 0 by design.
            let floor = if x < -708.0 { 3.3e-308 } else { 0.0 };
            let ulp = f64::EPSILON * exact.abs().max(f64::MIN_POSITIVE);
            assert!(
                (s - exact).abs() <= 4.0 * ulp + floor,
                "sigmoid({x:e}) = {s:e}, libm {exact:e}"
            );
        }
        let mut special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        sigmoid_in_place(&mut special);
        assert!(special[0].is_nan());
        assert_eq!(special[1..], [1.0, 0.0]);
    }

    #[test]
    fn step_product_matches_a_plain_sum_in_every_tile_shape() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 3),
            (13, 13, 9),
            (100, 100, 8),
            (33, 2, 5),
            (4, 0, 2),
        ] {
            let mut draw = |len: usize| -> Vec<f64> {
                (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
            };
            let (a, x, c0) = (draw(m * k), draw(k * n), draw(m * n));
            for accumulate in [false, true] {
                let mut c = c0.clone();
                step_product(&a, m, &x, accumulate, &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let sum: f64 = (0..k).map(|kk| a[kk * m + i] * x[j * k + kk]).sum();
                        let want = sum + if accumulate { c0[j * m + i] } else { 0.0 };
                        let got = c[j * m + i];
                        assert!(
                            (got - want).abs() <= 1e-14 * (1.0 + want.abs()),
                            "({m}, {k}, {n}) entry ({i}, {j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn step_product_entries_do_not_depend_on_the_grouping_of_columns() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (m, n) = (37, 11);
        let a: Vec<f64> = (0..m * m).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x: Vec<f64> = (0..m * n).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut all = vec![0.0; m * n];
        step_product(&a, m, &x, false, &mut all);
        for j in 0..n {
            let mut one = vec![0.0; m];
            step_product(&a, m, &x[j * m..(j + 1) * m], false, &mut one);
            assert_eq!(one, all[j * m..(j + 1) * m], "column {j}");
        }
    }
}
