// The GRU's stored gates and the step backward through them (cpu::gru::gru_step_backward).
// gpu::kernel appends this file to gru_bptt.wgsl (the backward recursion: ∇ through each
// step), jacobian.wgsl (J_tᵀ w and J_t u of the GRU in the sweep's CG),
// gru_per_gate_sweep.wgsl (load_gates only) and gru_sweep_bptt.wgsl (both loops' steps in
// one), which linearize at the same gates with the same arithmetic.
//
// The kernel declares `gates`, the storage buffer gru_forward.wgsl writes: [T, B, 4d],
// the row of step t and sequence s at ((t − 1)·B + s)·4d holding r | z | n | hn, where
// hn = W_n h_{t−1} + b_hn (n = tanh(U_n x + b_in + r ⊙ hn)).

struct Gates {
    r: f32,
    z: f32,
    n: f32,
    hn: f32,
}

// The gates of unit i (of d) in the row of `gates` starting at `row`.
fn load_gates(row: u32, d: u32, i: u32) -> Gates {
    return Gates(gates[row + i], gates[row + d + i], gates[row + 2u * d + i], gates[row + 3u * d + i]);
}

// One unit's pre-activation gradients (da_r, da_z, da_n) from e = ∂/∂h_t, its gates and
// its h_{t−1}:
//
//     da_n = e (1 − z)(1 − n²),   da_r = da_n hn r (1 − r),   da_z = e (h_{t−1} − n) z (1 − z)
//
// They are the unit's dgi (of gi = U x_t + b_ih); its dgh (of gh = W h_{t−1} + b_hh) is
// (da_r, da_z, da_n r).
fn gru_step_backward(e: f32, g: Gates, h_prev: f32) -> vec3<f32> {
    let da_n = e * (1.0 - g.z) * (1.0 - g.n * g.n);
    let da_r = da_n * g.hn * g.r * (1.0 - g.r);
    let da_z = e * (h_prev - g.n) * g.z * (1.0 - g.z);
    return vec3<f32>(da_r, da_z, da_n);
}
