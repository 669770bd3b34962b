//! Per-kernel benchmarks at the paper's size (T = 784, d = 100, B = 16, p = 1, q = 10):
//! forward, P by CG (cold and warm), target sweep, BPTT, gradient reductions, on the GPU
//! backend (each phase submitted alone and waited for) and on the f64 CPU reference.
//!
//! `cargo bench --bench kernels`. Without a GPU adapter the GPU group is skipped with a
//! note. The warm CG runs after an optimizer step (the last gradient applied again), so
//! it starts from the previous P with a W that moved, as in training.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tpri::bench::{problem, Case, Size};
use tpri::config::{Method, CPU_CG_TOL};
use tpri::cpu;
use tpri::gpu::{AdapterChoice, GpuContext, Phase, Profiler, Storage};
use tpri::kernel_io::Injection;
use tpri::model::CellKind;

fn gpu(c: &mut Criterion) {
    let ctx = match GpuContext::new(&AdapterChoice::Auto) {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("skipping the GPU kernels: {e:#}");
            return;
        }
    };
    let (params, batch, hyper) =
        problem(Size::PAPER, Case::of(CellKind::Tanh, Method::Tp), 1).unwrap();
    let prof = Profiler::new(ctx.clone(), &params, &batch, &hyper, Storage::F32.into())
        .expect("GPU buffers");
    // Every phase once, so that each one's inputs exist (h, g_T, P, δ).
    prof.run(&Phase::of(Method::Tp), false)
        .expect("first iteration");
    let mut g = c.benchmark_group(format!("gpu {} T=784 d=100 B=16", ctx.describe()));
    g.sample_size(10);
    let mut bench = |name: &str, phases: &[Phase], warm: bool| {
        g.bench_function(name, |b| {
            b.iter(|| prof.run(phases, warm).expect("GPU run"))
        });
    };
    bench("forward", &[Phase::Forward], false);
    bench("head", &[Phase::Head], false);
    bench("P by CG, cold", &[Phase::Inverse], false);
    bench(
        "P by CG, warm (after an update)",
        &[Phase::Optimizer, Phase::Inverse],
        true,
    );
    bench("target sweep", &[Phase::Sweep], false);
    bench("bptt", &[Phase::Bptt], false);
    bench("gradient reductions", &[Phase::Reductions], false);
    g.finish();
}

fn cpu_reference(c: &mut Criterion) {
    let (params, batch, hyper) =
        problem(Size::PAPER, Case::of(CellKind::Tanh, Method::Tp), 1).unwrap();
    let tp = &hyper.tp;
    let h = cpu::forward::forward(&params, &batch.x).unwrap();
    let top = cpu::head::head(&params, &h[784], &batch.y, hyper.loss).expect("head");
    let cg = |warm| {
        cpu::inverse::inverse_cg(&params.w_hh, tp.reg, CPU_CG_TOL, tp.cg_max_iter, warm)
            .expect("CG")
            .0
    };
    let p_inv = cg(None);
    let moved = &params.w_hh * (1.0 - 1e-3);
    let v = cpu::target_sweep::target_sweep(
        &params,
        &p_inv,
        &batch.x,
        &h,
        &top.grad_h,
        tp.lr_target,
        tp.target_mode,
    )
    .unwrap();
    let mut g = c.benchmark_group("cpu f64 T=784 d=100 B=16");
    g.sample_size(10);
    g.bench_function("forward", |b| {
        b.iter(|| cpu::forward::forward(&params, &batch.x).unwrap())
    });
    g.bench_function("P by CG, cold", |b| b.iter(|| cg(None)));
    g.bench_function("P by CG, warm (after an update)", |b| {
        b.iter(|| {
            cpu::inverse::inverse_cg(&moved, tp.reg, CPU_CG_TOL, tp.cg_max_iter, Some(&p_inv))
                .expect("CG")
        })
    });
    g.bench_function("target sweep", |b| {
        b.iter(|| {
            cpu::target_sweep::target_sweep(
                &params,
                &p_inv,
                &batch.x,
                &h,
                &top.grad_h,
                tp.lr_target,
                tp.target_mode,
            )
            .unwrap()
        })
    });
    // The reference fuses the reductions into its BPTT loop.
    g.bench_function("bptt with gradient reductions", |b| {
        b.iter(|| cpu::bptt::bptt(&params, &batch.x, &h, Injection::Targets(&v), true).unwrap())
    });
    g.finish();
}

criterion_group!(kernels, gpu, cpu_reference);
criterion_main!(kernels);
