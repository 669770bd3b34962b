//! Tests of the f64 CPU reference against docs/ALGORITHM.md §1–§4: gradients by finite differences,
//! CG against Cholesky, properties of the target sweep, optimizers by hand, the head, and
//! the `Backend` trait. One test binary (one link) split into a module per topic.

#[path = "../support/mod.rs"]
mod support;

mod backend;
mod common;
mod gradients;
mod head;
mod inverse;
mod optimizer;
mod targets;
