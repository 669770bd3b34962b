//! The wgpu backend: the TP-RI iteration of docs/ALGORITHM.md §2–§5 in f32 WGSL compute
//! shaders, the histories h and v − h stored in f32 or f16 (`storage`).
//!
//! Layers, each importing only those below it:
//! 1. `layout` (shapes, the flat parameter layout, conversions), `storage` (f16/f32
//!    histories), `packing` (how a time loop spreads over a workgroup: sequences, lanes,
//!    registers), `blocks` (how many steps a time loop stages its loads for), `loops` (the
//!    loop-count model of the kernels), `phase` (the phases of an iteration), `kernel`
//!    (the sources and the pipeline cache), `adapters` (finding the GPU), `context` (the
//!    device), `segments` (how many steps one launch of a long loop runs), `options`,
//!    `dispatch` (one launch, or the launches of a loop's segments), `history` (a
//!    history's buffer);
//! 2. `buffers`: the model's and the batch's buffers, allocated once per shape (with
//!    `tokens`, a trained embedding table's);
//!    `readback`: every result of a log point read in one copy and one map;
//! 3. one wrapper per kernel, named like its WGSL source in `shaders/` and its f64 twin in
//!    `src/cpu/`, that only builds its dispatches: `forward`, `gru_forward`, `head`,
//!    `seq_head` (the heads at every step),
//!    `inverse` (P, with `cg_check`, and the GRU's per-gate P_g), `target_sweep`,
//!    `sweep_bptt` (the sweep and the surrogate's `bptt` in one loop),
//!    `jacobian` (the Jacobian products and the §5 sweep with its per-step CG),
//!    `gru_per_gate_sweep` (§5's per-gate sweep), `gru_sweep_bptt` (that sweep and the
//!    surrogate's `gru_bptt` in one loop), `bptt`, `gru_bptt`, `matmul`,
//!    `optimizer`, `transpose`, `norms`, `embedding_gather` and `embedding_grad` (a
//!    trained embedding table), `dtp_reverse` and `dtp_targets` (DTP's reverse layer and
//!    its targets), `step_probe` (what a time-loop step costs, for `tpri bench --probes`);
//! 4. `iteration`, which records a whole step into one command buffer, and `cg_record`
//!    (where its CG report lies on the device);
//! 5. `backend` (the `Backend` face), `profile` (timing phase by phase) and `one_shot`
//!    (each kernel run once with its CPU twin's signature, for the tests).

mod adapters;
pub mod backend;
pub(crate) mod blocks;
mod bptt;
mod buffers;
mod cg_record;
pub mod context;
mod dispatch;
mod dtp_reverse;
mod dtp_targets;
mod embedding_gather;
mod embedding_grad;
mod forward;
mod gru_bptt;
mod gru_forward;
mod gru_per_gate_sweep;
mod gru_sweep_bptt;
mod head;
mod history;
mod inverse;
mod iteration;
mod jacobian;
mod kernel;
mod layout;
pub(crate) mod loops;
pub(crate) mod matmul;
mod norms;
pub mod one_shot;
mod optimizer;
mod options;
mod packing;
mod phase;
pub mod profile;
mod readback;
pub(crate) mod segments;
mod seq_head;
pub mod step_probe;
pub mod storage;
mod sweep_bptt;
mod target_sweep;
mod tokens;
mod transpose;

pub use adapters::{list_adapters, AdapterChoice, AdapterSummary};
pub use backend::{gpu_limits, GpuBackend};
pub use context::GpuContext;
pub use inverse::GPU_CG_TOL;
pub use kernel::{F16_BITS_WGSL, F16_NATIVE_WGSL, HISTORY_WGSL, NATIVE_F16_SHADERS, SHADERS};
pub use layout::MAX_HIDDEN;
pub use options::{
    Backward, GpuOptions, LanesPerUnit, SequencesPerWorkgroup, StepsPerBlock, MAX_LANES_PER_UNIT,
    MAX_SEQUENCES_PER_WORKGROUP,
};
pub use packing::{LANES_PER_UNIT, MAX_STEPS_PER_BLOCK, SEQUENCES_PER_WORKGROUP, WORKGROUP_SIZES};
pub use phase::Phase;
pub use profile::Profiler;
pub use segments::StepsPerDispatch;
pub use storage::{F16Conversions, Storage};
