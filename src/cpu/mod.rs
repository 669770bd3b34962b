//! The f64 CPU reference of docs/ALGORITHM.md §2–§5: one file per kernel, named like its WGSL twin
//! in `shaders/` and its GPU wrapper in `src/gpu/`.
//!
//! Conventions: sequences are rows, so every per-step quantity (h_t, v_t, x_t, g_t) is a
//! B×(size) matrix and `W h` for one sequence becomes `H Wᵀ` for the batch. Inside, the
//! functions work on a transposed, all-steps-in-one layout (`steps`), which the public
//! functions convert from and to; `iteration` stays in it from start to end.

pub mod backend;
pub mod batched_cg;
pub mod bptt;
pub mod cell;
pub mod dtp_reverse;
pub mod dtp_targets;
pub mod embedding;
pub mod forward;
pub mod gru;
pub mod gru_per_gate;
pub mod head;
pub mod inverse;
pub mod iteration;
pub mod jacobian;
pub mod optimizer;
pub mod seq_head;
pub mod simd;
pub mod steps;
pub mod target_sweep;

pub use backend::CpuBackend;
