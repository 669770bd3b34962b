//! Whole TP-RI and BP iterations (optimizer step included) at the paper's size, on the
//! GPU backend (histories in f32 and in f16) and on the f64 CPU reference. `cargo bench --bench iterations`; `tpri
//! bench` covers grids of sizes and prints the cost model beside the times.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tpri::backend::Backend;
use tpri::bench::{problem, Case, Size};
use tpri::config::Method;
use tpri::cpu::CpuBackend;
use tpri::gpu::{AdapterChoice, GpuContext, Phase, Profiler, Storage};
use tpri::model::CellKind;

fn iterations(c: &mut Criterion) {
    let ctx = GpuContext::new(&AdapterChoice::Auto)
        .map(Arc::new)
        .map_err(|e| eprintln!("skipping the GPU iterations: {e:#}"))
        .ok();
    let mut g = c.benchmark_group("iteration T=784 d=100 B=16");
    g.sample_size(10);
    for method in [Method::Tp, Method::Bp] {
        let (params, batch, hyper) =
            problem(Size::PAPER, Case::of(CellKind::Tanh, method), 1).unwrap();
        for (ctx, storage) in ctx.iter().flat_map(|c| Storage::ALL.map(|s| (c, s))) {
            let prof = Profiler::new(ctx.clone(), &params, &batch, &hyper, storage.into())
                .expect("GPU buffers");
            let phases = Phase::of(method);
            prof.run(&phases, false).expect("first iteration");
            g.bench_function(format!("gpu {method:?} {storage} storage"), |b| {
                b.iter(|| prof.run(&phases, true).expect("GPU run"))
            });
        }
        let mut cpu = CpuBackend::new();
        cpu.load(&params, None, &hyper).expect("load");
        g.bench_function(format!("cpu {method:?}"), |b| {
            b.iter(|| cpu.step(&batch).expect("step"))
        });
    }
    g.finish();
}

criterion_group!(benches, iterations);
criterion_main!(benches);
