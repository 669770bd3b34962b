//! The wgpu backend: the TP-RI iteration of SPEC §2–§4 in f32 WGSL compute shaders, the
//! histories h and v − h stored in f32 or f16 (`storage`).
//!
//! One file per kernel, named like its WGSL source in `shaders/` and its f64 twin in
//! `src/cpu/`: `forward`, `head`, `matmul`, `inverse` (the `cg_*` kernels), `target_sweep`,
//! `bptt`, `optimizer`; for the GRU `gru_forward` and `gru_bptt` (twins of `cpu::gru`);
//! and `jacobian` (the Jacobian products of either cell and the SPEC §5 sweep with its
//! per-step CG). Each wrapper also offers a one-shot function with its twin's
//! signature (plus the context) that uploads, runs and reads back — what the tests compare.
//! `iteration` wires the kernels into one command buffer per training step; `backend`
//! puts a `Backend` face on it.

pub mod backend;
pub mod bptt;
pub mod context;
pub mod forward;
pub mod gru_bptt;
pub mod gru_forward;
pub mod head;
pub mod inverse;
mod iteration;
pub mod jacobian;
mod kernel;
pub mod matmul;
mod norms;
pub mod optimizer;
pub mod profile;
pub mod storage;
pub mod target_sweep;
mod transpose;

pub use backend::GpuBackend;
pub use context::{list_adapters, AdapterChoice, AdapterSummary, GpuContext};
pub use inverse::GPU_CG_TOL;
pub use kernel::{
    F16_BITS_WGSL, F16_NATIVE_WGSL, HISTORY_WGSL, JACOBIAN_WORKGROUP_SIZES, NATIVE_F16_SHADERS,
    SHADERS,
};
pub use profile::{Phase, Profiler};
pub use storage::{F16Conversions, Storage};

/// Largest hidden size d the fused kernels accept: they keep at most two d-vectors in
/// workgroup memory (16 KiB at 2048, what WebGPU guarantees). The shaders declare the same.
pub const MAX_HIDDEN: usize = 2048;
