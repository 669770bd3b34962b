// The noise stream of DTP's reconstruction loss (twin of src/dtp.rs, NoiseKey; docs/
// ALGORITHM.md §14). gpu::kernel appends this file to dtp_reverse.wgsl, which draws each
// element where it adds it, so that nothing is uploaded and the GPU's noise is the
// reference's: the same 24-bit uniforms, then Box–Muller in f32.

// PCG's output permutation as a 32-bit hash (Jarzynski & Olano, JCGT 2020).
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// The standard normal draw of element n of the stream keyed (k0, k1).
fn noise_gaussian(n: u32, k0: u32, k1: u32) -> f32 {
    let s = pcg_hash(pcg_hash(n ^ k0) ^ k1);
    // Both uniforms have 24 bits: exact in f32. u1 ∈ (0, 1], u2 ∈ [0, 1).
    let u1 = f32((pcg_hash(s) >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = f32(pcg_hash(s ^ 0x9E3779B9u) >> 8u) * (1.0 / 16777216.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
