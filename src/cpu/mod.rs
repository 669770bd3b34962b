//! The f64 CPU reference of docs/ALGORITHM.md §2–§5: one file per kernel, named like its WGSL twin
//! in `shaders/` and its GPU wrapper in `src/gpu/`.
//!
//! Conventions: sequences are rows, so every per-step quantity (h_t, v_t, x_t, g_t) is a
//! B×(size) matrix and `W h` for one sequence becomes `H Wᵀ` for the batch. The public
//! functions (the "row forms", which the tests compare with their GPU twins) check their
//! arguments first (`arguments`: a wrong shape is an error naming it, never a panic), then
//! convert to a transposed, all-steps-in-one layout (`steps`) and back. The working-layout
//! forms, the vector kernels (`simd`) and the solver (`batched_cg`) are the crate's own:
//! `iteration` stays in that layout from start to end, on inputs `validate` checked once.

pub mod backend;
pub(crate) mod batched_cg;
pub mod bptt;
pub(crate) mod cell;
pub(crate) mod dtp_reverse;
pub(crate) mod dtp_targets;
pub(crate) mod embedding;
pub mod forward;
pub mod gru;
pub mod gru_per_gate;
pub mod head;
pub mod inverse;
pub mod iteration;
pub mod jacobian;
pub mod optimizer;
pub mod seq_head;
pub(crate) mod simd;
pub(crate) mod steps;
pub mod target_sweep;
#[cfg(test)]
mod test_data;

pub use backend::CpuBackend;
