//! Every GPU kernel against its f64 CPU twin on fresh random inputs, outputs poisoned with
//! NaN first (the one-shot wrappers do it) so that an element a kernel fails to write fails.

mod gpu_support;

use gpu_support::{check, check_all, ctx, inputs, params, random, rng, TOL};
use tpri::config::{Loss, TargetMode};
use tpri::cpu;
use tpri::gpu;
use tpri::model::Dims;
use tpri::tasks::Targets;

fn dims(p: usize, d: usize, q: usize) -> Dims {
    Dims {
        input: p,
        hidden: d,
        output: q,
    }
}

/// (d, T, B) covering d ∈ {1, 7, 100, 257}, T ∈ {1, 2, 33}, B ∈ {1, 3, 16}.
const SHAPES: [(usize, usize, usize); 5] =
    [(1, 1, 1), (7, 2, 3), (100, 33, 16), (257, 2, 3), (7, 33, 1)];

#[test]
fn forward_matches_reference() {
    let ctx = ctx();
    for (i, &(d, t, b)) in SHAPES.iter().enumerate() {
        let params = params(dims(3, d, 2), i as u64);
        let x = inputs(t, b, 3, &mut rng(100 + i as u64));
        let e = check_all(
            &format!("h (d={d}, T={t}, B={b})"),
            &gpu::forward::forward(&ctx, &params, &x).unwrap(),
            &cpu::forward::forward(&params, &x),
            TOL,
        );
        eprintln!("forward d={d} T={t} B={b}: {e:.2e}");
    }
}
