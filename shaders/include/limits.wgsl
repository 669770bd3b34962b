// Limits the kernels share. gpu::kernel appends this file to forward.wgsl,
// gru_forward.wgsl, bptt.wgsl, gru_bptt.wgsl, target_sweep.wgsl, sweep_bptt.wgsl,
// jacobian.wgsl, gru_per_gate_sweep.wgsl, gru_sweep_bptt.wgsl, dtp_reverse.wgsl and
// dtp_targets.wgsl, which size their workgroup vectors by MAX_HIDDEN (and gru_bptt.wgsl,
// gru_per_gate_sweep.wgsl, gru_sweep_bptt.wgsl, jacobian.wgsl, dtp_targets.wgsl their
// per-invocation registers by SLOTS), to cg_check.wgsl for F32_MAX and to step_probe.wgsl
// for STAGE_LOADS. One declaration here rather than one per kernel, so that the host's
// limit has one WGSL twin.

// Largest hidden size d: the fused kernels keep at most two d-vectors in workgroup memory
// (16 KiB at 2048, what WebGPU guarantees). The host checks d against the same number,
// gpu::MAX_HIDDEN; tests/shaders.rs checks that the two agree.
const MAX_HIDDEN: u32 = 2048u;

// Most sequences one workgroup of the tanh RNN's time loops carries (their SEQS
// override): the size of include/dot.wgsl's columns_dot8 sums, one vec4 per sequence in
// registers. The host's twin is gpu::MAX_SEQUENCES_PER_WORKGROUP; tests/shaders.rs
// checks that the two agree.
const MAX_SEQS: u32 = 16u;

// Units one invocation owns at most in the kernels that keep their units' values in
// registers (gru_bptt.wgsl, gru_per_gate_sweep.wgsl, gru_sweep_bptt.wgsl, dtp_targets.wgsl):
// their workgroups have 256 invocations whenever d > 256 (below, those matched to d have at
// least d).
const SLOTS: u32 = MAX_HIDDEN / 256u;

// Values one invocation loads at most when a time loop stages a block of steps' loads in
// workgroup memory (forward.wgsl's stage_inputs, bptt.wgsl's and sweep_bptt.wgsl's
// stage_block): a constant count, so that the drivers
// unroll the loads and issue them together. The host's twin is gpu::blocks::STAGE_LOADS,
// which sizes the blocks by it; a unit test there checks that the two agree.
const STAGE_LOADS: u32 = 16u;

// The largest finite f32: `!(x <= F32_MAX)` holds exactly for x = +inf and NaN.
const F32_MAX: f32 = 3.40282347e38;
