// The per-gate inversion's brackets (docs/ALGORITHM.md §5; cpu::gru_per_gate): what
// P_r, P_z and P_n multiply at step t. gpu::kernel appends this file to
// gru_per_gate_sweep.wgsl and gru_sweep_bptt.wgsl, the two loops that run the per-gate
// target sweep, so that their brackets and their order of products are one code. It uses
// include/gru.wgsl's Gates and include/activation.wgsl's sigmoid_slope.

// The gate blocks of W (and of the stacked P_gᵀ) in PyTorch's order.
const GATE_R: u32 = 0u;
const GATE_Z: u32 = 1u;
const GATE_N: u32 = 2u;

// The published order of the products: z, then r, then n.
fn gate_in_order(m: u32) -> u32 {
    return select(select(GATE_N, GATE_R, m == 1u), GATE_Z, m == 0u);
}

// The bracket of `gate` for one unit: its gates g, h_{t−1} = hp and δ = e (the unit's
// target offset dv_t = v_t − h_t).
fn bracket(gate: u32, g: Gates, hp: f32, e: f32) -> f32 {
    // δ through h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n into n's pre-activation.
    let dn = (1.0 - g.n * g.n) * g.z * e;
    if gate == GATE_R {
        return g.hn * dn / sigmoid_slope(g.r);
    }
    if gate == GATE_Z {
        return (g.n - hp) * e / sigmoid_slope(g.z);
    }
    return g.r * dn;
}
