// The activations and the clamps before inverting them. gpu::kernel appends this file to
// forward.wgsl (the tanh RNN's step: safe_tanh), gru_forward.wgsl (the GRU's gates:
// sigmoid, safe_tanh), dtp_reverse.wgsl and dtp_targets.wgsl (the cell's step and DTP's
// reverse layer: safe_tanh), target_sweep.wgsl, sweep_bptt.wgsl and jacobian.wgsl
// (clamp_eps: the targets invert tanh, or divide by its derivative, at h clamped to
// ±(1 − ε)) and
// gru_per_gate_sweep.wgsl and gru_sweep_bptt.wgsl (sigmoid_slope, through
// include/gate_brackets.wgsl: they divide by the sigmoid's derivative at a gate clamped to
// [ε, 1 − ε]), so that the forward passes and the inversions agree on them.

// Clamp margin ε (config::CLAMP_EPS; tests/shaders.rs checks that the two agree).
const CLAMP_EPS: f32 = 1e-3;

// a clamped to [−1 + ε, 1 − ε], where atanh is finite and 1 − a² ≥ ε.
fn clamp_eps(a: f32) -> f32 {
    return clamp(a, -1.0 + CLAMP_EPS, 1.0 - CLAMP_EPS);
}

// tanh saturates to ±1 in f32 well before |a| = 15; clamping keeps implementations that
// go through exp(2a) from overflowing into NaN.
fn safe_tanh(a: f32) -> f32 {
    return tanh(clamp(a, -15.0, 15.0));
}

// σ(a) without overflow: exp is only ever taken of a non-positive number.
fn sigmoid(a: f32) -> f32 {
    let e = exp(-abs(a));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), a >= 0.0);
}

// The sigmoid's derivative σ'(·) = u(1 − u) at a gate value u clamped to [ε, 1 − ε], so
// that dividing by it stays finite (cpu::gru_per_gate::sigmoid_slope).
fn sigmoid_slope(u: f32) -> f32 {
    let c = clamp(u, CLAMP_EPS, 1.0 - CLAMP_EPS);
    return c * (1.0 - c);
}
