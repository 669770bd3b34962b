//! Times whole GPU training iterations of the paths that run in bounded segments since
//! issue 15's last round — the GRU's per-gate inversion, DTP, and the heads at every step
//! (TP-RI with the analytic inversion) — at the paper's size, T = 784, d = 100, B = 16
//! (p = 1, q = 10), with the adapter's own quotas (`--steps-per-dispatch auto`).
//!
//! `cargo run --example segment_paths -- [REPS]` prints, per path and repetition, the wall
//! time of one iteration (`step`, then `last_stats`, which waits for it) and the process's
//! CPU time over it (Linux only; on a software adapter such as lavapipe the CPU time is the
//! work done, which other jobs on the machine do not inflate). docs/PERFORMANCE.md runs it
//! from two builds in turn to compare them side by side.

use std::sync::Arc;
use std::time::Instant;

use tpri::backend::Backend;
use tpri::bench::{problem, Case, Size};
use tpri::config::{Inversion, Loss, Method, Solver};
use tpri::gpu::{AdapterChoice, GpuBackend, GpuContext};
use tpri::model::{CellKind, Dims, Params};
use tpri::tasks::Targets;

/// The process's user + system CPU time in seconds, from /proc (None elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(5);
    let ctx = Arc::new(GpuContext::new(&AdapterChoice::Auto)?);
    eprintln!("adapter: {}", ctx.describe());
    let size = Size::PAPER;
    let dims = Dims {
        input: size.input,
        hidden: size.hidden,
        output: size.output,
    };
    let (tanh, batch, base) = problem(size, Case::of(CellKind::Tanh, Method::Tp), 1)?;

    let mut per_gate = base.clone();
    per_gate.tp.inversion = Inversion::PerGate;
    per_gate.tp.solver = Solver::Cg;
    let gru = Params::init_of(CellKind::Gru, dims, 1).unwrap();

    let mut dtp = base.clone();
    dtp.method = Method::Dtp;
    let dtp_params = Params::init_dtp(dims, 1).unwrap();

    let mut every_step = base.clone();
    every_step.loss = Loss::CrossEntropySeq;
    every_step.tp.solver = Solver::Cg;
    let mut seq_batch = batch.clone();
    seq_batch.y = Targets::StepLabels(nalgebra::DMatrix::from_fn(
        size.batch,
        size.steps,
        |s, t| (s + t) % size.output,
    ));

    let cases = [
        ("per-gate GRU TP", &gru, &per_gate, &batch),
        ("DTP", &dtp_params, &dtp, &batch),
        ("heads at every step TP", &tanh, &every_step, &seq_batch),
    ];
    for (what, params, hyper, batch) in cases {
        let mut gpu = GpuBackend::new(ctx.clone());
        gpu.load(params, None, hyper)?;
        // Warm-up: pipelines compiled on first use, buffers allocated.
        gpu.step(batch)?;
        gpu.last_stats()?;
        for rep in 0..reps {
            let (wall, cpu) = (Instant::now(), cpu_seconds());
            gpu.step(batch)?;
            gpu.last_stats()?;
            let ms = wall.elapsed().as_secs_f64() * 1e3;
            let cpu_ms = cpu
                .zip(cpu_seconds())
                .map_or(f64::NAN, |(a, b)| (b - a) * 1e3);
            println!("{what}\t{rep}\t{ms:.1}\t{cpu_ms:.0}");
        }
    }
    Ok(())
}
