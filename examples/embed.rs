//! Embedding tpri: train a small tanh RNN by TP-RI on the adding task, on the GPU (when wgpu
//! finds an adapter) and on the f64 CPU reference, from the same parameters and batches,
//! and print the held-out loss of each before and after.
//!
//! ```sh
//! cargo run --release --example embed
//! ```
//!
//! Only the library is needed: a program of its own can depend on tpri with
//! `default-features = false` (no clap, no plotters).

use std::sync::Arc;

use tpri::prelude::*;

/// Training iterations on each backend.
const STEPS: u64 = 50;
/// Sequences per training batch.
const BATCH: usize = 20;

fn main() -> anyhow::Result<()> {
    // The adding task at T = 20, seed 0, 100 held-out sequences.
    let task = Adding::new(20, 0, 100)?;
    let dims = Dims {
        input: task.input_size(),
        hidden: 16,
        output: task.output_size(),
    };
    let params = Params::init(dims, 0).unwrap();
    // TP-RI with the defaults (SGD lr 0.1, target step 0.1, r = 1); `for_cell` picks the
    // inversion the cell takes (the closed form here, the jacobian one for a GRU).
    let hyper = Hyper {
        loss: task.loss(),
        ..Hyper::for_cell(CellKind::Tanh)
    };
    let eval = task.eval_batches(100).unwrap();

    // A program that already has a wgpu device (next to a renderer) passes it in with
    // `GpuContext::from_device(device, queue)` instead; see `GpuContext` for what the
    // device must offer.
    let mut backends: Vec<(&str, Box<dyn Backend>)> = Vec::new();
    match GpuContext::new(&AdapterChoice::Auto) {
        Ok(ctx) => backends.push(("gpu", Box::new(GpuBackend::new(Arc::new(ctx))))),
        Err(e) => println!("no GPU ({e:#}); training on the CPU reference only"),
    }
    backends.push(("cpu", Box::new(CpuBackend::new())));

    for (label, backend) in &mut backends {
        backend.load(&params, None, &hyper)?;
        let before = backend.evaluate(&eval[0])?;
        for i in 0..STEPS {
            // One TP-RI iteration; on the GPU nothing is read back until asked.
            backend.step(&task.train_batch(i, BATCH).unwrap())?;
        }
        let last = backend.last_stats()?; // the last batch's loss and CG report
        let after = backend.evaluate(&eval[0])?;
        println!("{label}: trained on {}", backend.name());
        println!(
            "{label}: held-out loss {:.6e} -> {:.6e} after {STEPS} steps (last batch {:.6e}, CG {} iterations)",
            before.loss,
            after.loss,
            last.loss,
            last.cg.map_or(0, |c| c.iterations)
        );
    }
    Ok(())
}
