//! Difference target propagation with a learned reverse layer (`Method::Dtp`,
//! docs/ALGORITHM.md §14), the paper's DTP baseline: the reverse layer's tensors and the
//! noise stream of its reconstruction loss. Both backends compute the same noise from
//! these functions (the GPU's twin is `shaders/include/noise.wgsl`), so their iterations
//! agree also with σ > 0.

use nalgebra::DMatrix;

/// Names of the reverse layer's tensors in files (`dtp.` after any prefix such as
/// `params.` or `grad.`), in the order [`ReverseLayer::tensors`] yields them.
pub const REVERSE_NAMES: [&str; 2] = ["dtp.w_rev", "dtp.b_rev"];

/// The fields of [`crate::model::Params`] that hold them, in [`REVERSE_NAMES`] order (what
/// the library's messages name).
pub const REVERSE_FIELDS: [&str; 2] = ["Params::dtp.w_rev", "Params::dtp.b_rev"];

/// The learned reverse layer `g(h, x) = tanh(V h + c + U x)` of DTP: V (`w_rev`, d×d) and
/// c (`b_rev`, d×1); U is the forward cell's input matrix, shared and not trained here.
#[derive(Clone, Debug, PartialEq)]
pub struct ReverseLayer {
    /// V: d×d, initialised orthogonal.
    pub w_rev: DMatrix<f64>,
    /// c: d×1, initialised to zero.
    pub b_rev: DMatrix<f64>,
}

impl ReverseLayer {
    /// All zeros for hidden size `d` (a gradient or an optimizer slot).
    pub fn zeros(d: usize) -> Self {
        Self {
            w_rev: DMatrix::zeros(d, d),
            b_rev: DMatrix::zeros(d, 1),
        }
    }

    /// The shapes its tensors have for hidden size `d`, in [`REVERSE_NAMES`] order.
    pub fn shapes(d: usize) -> [(usize, usize); 2] {
        [(d, d), (d, 1)]
    }

    /// The tensors in [`REVERSE_NAMES`] order.
    pub fn tensors(&self) -> [&DMatrix<f64>; 2] {
        [&self.w_rev, &self.b_rev]
    }

    /// The tensors to write, in [`REVERSE_NAMES`] order.
    pub fn tensors_mut(&mut self) -> [&mut DMatrix<f64>; 2] {
        [&mut self.w_rev, &mut self.b_rev]
    }
}

/// PCG's output permutation as a 32-bit hash (Jarzynski & Olano, "Hash Functions for GPU
/// Rendering", JCGT 2020): one LCG step, then PCG's RXS-M-XS output. A bijection of the
/// u32s; `shaders/include/noise.wgsl` has its twin.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// SplitMix64's finaliser: mixes the run's seed and the iteration into the stream's key.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The noise of one iteration: a counter-based stream keyed by the run's seed and the
/// iteration's number, so that any element is computed where it is needed (the GPU draws
/// it inside the kernel that uses it), and a resumed run draws exactly the noise the
/// uninterrupted run drew.
///
/// Element n (for the perturbation of h_{t−1}, sequence i, unit j of a batch of B
/// sequences and d units: `n = ((t−1)·B + i)·d + j`, modulo 2³²) is one Box–Muller
/// normal draw from two 24-bit uniforms:
///
/// ```text
/// s  = pcg(pcg(n ⊕ k0) ⊕ k1)
/// u1 = ((pcg(s) >> 8) + 1) / 2²⁴                  ∈ (0, 1]
/// u2 = (pcg(s ⊕ 0x9E3779B9) >> 8) / 2²⁴           ∈ [0, 1)
/// z  = √(−2 ln u1) · cos(2π u2)
/// ```
///
/// with `(k1, k0)` the high and low halves of `splitmix64(splitmix64(seed) ⊕ iteration)`.
/// The uniforms are exact in f32 and f64 alike, so the GPU's z differs from the
/// reference's only by the rounding of its f32 log, sqrt and cos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    /// The key's low word.
    pub k0: u32,
    /// The key's high word.
    pub k1: u32,
}

/// The constant that tells the second uniform's hash from the first's.
pub const SECOND_UNIFORM: u32 = 0x9E37_79B9;

impl NoiseKey {
    /// The key of iteration `iteration` (1 for the first) of a run seeded with `seed`.
    pub fn new(seed: u64, iteration: u64) -> Self {
        let k = splitmix64(splitmix64(seed) ^ iteration);
        Self {
            k0: k as u32,
            k1: (k >> 32) as u32,
        }
    }

    /// The two uniforms of element `n`: (u1 ∈ (0, 1], u2 ∈ [0, 1)).
    pub fn uniforms(self, n: u32) -> (f64, f64) {
        let s = pcg_hash(pcg_hash(n ^ self.k0) ^ self.k1);
        let scale = 1.0 / f64::from(1u32 << 24);
        let u1 = f64::from((pcg_hash(s) >> 8) + 1) * scale;
        let u2 = f64::from(pcg_hash(s ^ SECOND_UNIFORM) >> 8) * scale;
        (u1, u2)
    }

    /// The standard normal draw of element `n`.
    pub fn gaussian(self, n: u32) -> f64 {
        let (u1, u2) = self.uniforms(n);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The noise of one iteration's reconstruction loss: σ times the stream of `key`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    /// The standard deviation σ (0: no noise, and the stream is never evaluated).
    pub sigma: f64,
    /// The iteration's stream.
    pub key: NoiseKey,
}

impl Noise {
    /// The noise of iteration `iteration` (1 for the first) of a run seeded with `seed`.
    pub fn new(sigma: f64, seed: u64, iteration: u64) -> Self {
        Self {
            sigma,
            key: NoiseKey::new(seed, iteration),
        }
    }

    /// Element `n` of the stream (`NoiseKey`'s numbering, modulo 2³²), times σ.
    pub fn at(&self, n: usize) -> f64 {
        // The stream is numbered modulo 2³², as the GPU's u32 indices are.
        self.sigma * self.key.gaussian(n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcg_hash_is_the_published_one() {
        // The published formula evaluated independently (Python, 32-bit wrapping).
        assert_eq!(pcg_hash(0), 129_708_002);
        assert_eq!(pcg_hash(1), 2_831_084_092);
        assert_eq!(pcg_hash(12_345), 4_099_845_390);
    }

    #[test]
    fn the_noise_is_standard_normal_and_keyed() {
        let key = NoiseKey::new(3, 1);
        let n = 200_000u32;
        let draws: Vec<f64> = (0..n).map(|i| key.gaussian(i)).collect();
        let mean = draws.iter().sum::<f64>() / f64::from(n);
        let var = draws.iter().map(|z| (z - mean) * (z - mean)).sum::<f64>() / f64::from(n);
        let kurt = draws.iter().map(|z| (z - mean).powi(4)).sum::<f64>() / f64::from(n);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.1, "fourth moment {kurt}");
        // Neighbouring elements are uncorrelated.
        let lag: f64 = draws.windows(2).map(|w| w[0] * w[1]).sum::<f64>() / f64::from(n);
        assert!(lag.abs() < 0.01, "lag-1 correlation {lag}");
        assert_ne!(NoiseKey::new(3, 2), key);
        assert_ne!(NoiseKey::new(4, 1), key);
        assert_eq!(NoiseKey::new(3, 1).gaussian(17), key.gaussian(17));
    }
}
