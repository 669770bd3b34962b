//! tpri: target propagation with regularized inversion (Roulet & Harchaoui,
//! arXiv 2112.01453) for recurrent networks, on any GPU through wgpu, with an f64 CPU
//! reference that checks every number the GPU produces.
//!
//! # Embedding
//!
//! [`prelude`] brings in what a program needs to train: a [`backend::Backend`]
//! ([`cpu::CpuBackend`], or [`gpu::GpuBackend`] on a [`gpu::GpuContext`]), the settings
//! ([`config::Hyper`]; [`config::Hyper::for_cell`] picks the inversion the cell takes),
//! parameters ([`model::Params`]) and batches ([`tasks::Batch`], or a task generator such
//! as [`tasks::Adding`]). The matrices are [`nalgebra`]'s, re-exported here so that a
//! program uses the same version.
//!
//! ```
//! use tpri::prelude::*;
//!
//! # fn main() -> anyhow::Result<()> {
//! let task = Adding::new(10, 0, 8)?; // T = 10, seed 0, 8 held-out sequences
//! let dims = Dims { input: task.input_size(), hidden: 8, output: task.output_size() };
//! let hyper = Hyper { loss: task.loss(), ..Hyper::for_cell(CellKind::Tanh) };
//! let mut backend = CpuBackend::new();
//! backend.load(&Params::init(dims, 0)?, None, &hyper)?;
//! backend.step(&task.train_batch(0, 4)?)?; // one TP-RI iteration on 4 sequences
//! assert!(backend.last_stats()?.loss.is_finite());
//! # Ok(())
//! # }
//! ```
//!
//! `examples/embed.rs` trains on the GPU and the CPU side by side.
//!
//! # Errors
//!
//! Functions return `anyhow::Result`. The errors the library raises are [`Error`] values
//! inside it — shape mismatches, invalid values and settings, device and memory limits,
//! solves that did not converge, divergence, I/O and file formats — so a program matches
//! on the kind with `err.downcast_ref::<tpri::Error>()`, which sees through any context
//! added on the way. Messages name API fields (`Hyper::tp.reg`, `Params::w_hh`) and the
//! tensors of files by their names, never flags of the command line.
//!
//! No public function of the backends, the file readers, the tasks, the parameter
//! constructors or the settings panics on any input: what they cannot run is an `Err`
//! (property tests in `tests/robust_api.rs` hold them to it). Sizes are checked before
//! anything is allocated ([`limits`]; [`model::Params::init`] and
//! [`tasks::Task::train_batch`] check theirs against the memory available). The building blocks of
//! the CPU reference (`cpu::forward`, `cpu::bptt`, …) assume inputs the backend has
//! validated ([`validate`]).
//!
//! # Features
//!
//! - `cli` (default): the `tpri` binary and what only it needs — clap, indicatif, the
//!   figures (`tpri::plot`, `tpri::figures`, through plotters) and sweeps of runs
//!   (`tpri::sweep`). With `default-features = false` the library builds without them.

#![warn(missing_docs)]

pub(crate) mod arguments;
pub mod backend;
pub mod bench;
pub mod cg;
pub mod check;
pub mod config;
pub mod cpu;
pub mod dtp;
pub mod error;
#[cfg(feature = "cli")]
pub mod figures;
pub mod files;
pub mod gpu;
pub mod init;
pub mod kernel_io;
pub mod limits;
pub mod memory;
pub mod model;
pub mod optimizer_state;
pub mod plan;
#[cfg(feature = "cli")]
pub mod plot;
pub mod presets;
pub mod run_dir;
#[cfg(feature = "cli")]
pub mod sweep;
pub mod tasks;
pub mod tensor_file;
pub mod train;
pub mod validate;

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use error::Error;

/// The linear algebra crate of [`model::Params`], [`tasks::Batch`] and [`backend::Trace`].
pub use nalgebra;

/// What a program embedding tpri needs to train, in one `use tpri::prelude::*;`.
pub mod prelude {
    pub use crate::backend::LogPoint;
    pub use crate::backend::{Backend, Diagnostics, Eval, StepStats, Trace};
    pub use crate::cg::{CgError, CgReport};
    pub use crate::config::{
        Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Solver, TargetMode,
        TpConfig, TpGrad,
    };
    pub use crate::cpu::CpuBackend;
    pub use crate::gpu::{AdapterChoice, GpuBackend, GpuContext, Storage};
    pub use crate::model::{CellKind, Dims, Params};
    pub use crate::optimizer_state::OptState;
    pub use crate::tasks::{
        build_task, Adding, Batch, PixelDataset, PixelOptions, PixelTask, Targets, Task, TaskSpec,
        TemporalOrder,
    };
    pub use crate::train::{train, Record, RunConfig, RunSink, Summary, TrainState};
}
