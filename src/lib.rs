//! tpri: target propagation with regularized inversion (Roulet & Harchaoui,
//! arXiv 2112.01453) for recurrent networks, with an f64 CPU reference.

pub mod backend;
pub mod bench;
pub mod cg;
pub mod check;
pub mod config;
pub mod cpu;
pub mod figures;
pub mod gpu;
pub mod kernel_io;
pub mod model;
pub mod optimizer_state;
pub mod plan;
pub mod plot;
pub mod presets;
pub mod run_dir;
pub mod tasks;
pub mod tensor_file;
pub mod train;
pub mod validate;
