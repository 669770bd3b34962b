use super::*;

#[test]
fn cost_model_counts_the_paper_forward() {
    let c = cost_model(
        Size::PAPER,
        CellKind::Tanh,
        Method::Bp,
        0,
        Storage::F32,
        1,
        Backward::Fused,
    );
    assert_eq!(c.len(), 5, "BP has no inverse and no sweep");
    // f16 halves the bytes of h: the forward pass's main traffic.
    let half = cost_model(
        Size::PAPER,
        CellKind::Tanh,
        Method::Bp,
        0,
        Storage::F16,
        1,
        Backward::Fused,
    );
    assert_eq!(c[0].bytes - half[0].bytes, 2.0 * 784.0 * 16.0 * 100.0);
    // 2·T·B·d·(d + p) = 2·784·16·100·101.
    assert_eq!(c[0].flops, 2.0 * 784.0 * 16.0 * 100.0 * 101.0);
    let m = Machine {
        flops: 1e12,
        bandwidth: 1e11,
        cache_bandwidth: 1e13,
        concurrent_workgroups: 16,
        dispatch_s: 0.0,
        step_s: 1e-6,
    };
    // The time loop, not the arithmetic, bounds the forward pass here.
    assert_eq!(c[0].floor_s(&m), 784e-6);
    assert_eq!(c[0].binding(&m), Bound::SerialSteps);
    // Twice the sequences of the workgroups that run at once: two waves of steps.
    let m8 = Machine {
        concurrent_workgroups: 8,
        ..m
    };
    assert_eq!(c[0].floor_s(&m8), 2.0 * 784e-6);
    // Every workgroup reads W at every step: T·B·d²·4 bytes from the cache.
    assert_eq!(c[0].cache_bytes, 784.0 * 16.0 * 1e4 * 4.0);
    let slow_cache = Machine {
        cache_bandwidth: 1e11,
        ..m
    };
    assert_eq!(c[0].binding(&slow_cache), Bound::CacheTraffic);
    // The reductions at this size are split as far as the 64-row minimum allows: each
    // block of ∇W, ∇U and both ∇b over 196 workgroups (4 stages of 16 rows); unsplit
    // each would walk all 784 stages.
    let r = c.iter().find(|p| p.phase == Phase::Reductions).unwrap();
    assert_eq!(r.serial_steps, 4 * 4);
    assert_eq!(r.dispatches, 8);
}

/// The fused backward loop: TP-RI's sweep phase takes the recursion's work and cache
/// traffic and one more transpose, and the bptt phase goes; the floors of the serial
/// steps count T once, with f16 storage too. Past d = 256 the two loops stay, and with f16
/// storage where the loop's six vectors do not fit (4 sequences a workgroup at d = 100).
#[test]
fn the_fused_backward_walks_time_once() {
    let m = Machine::H100;
    let of = |backward, storage| {
        cost_model(
            Size::PAPER,
            CellKind::Tanh,
            Method::Tp,
            2,
            storage,
            1,
            backward,
        )
    };
    let two = of(Backward::Separate, Storage::F32);
    let one = of(Backward::Fused, Storage::F32);
    let phase = |c: &[PhaseCost], p| c.iter().find(|c| c.phase == p).copied();
    assert!(phase(&one, Phase::Bptt).is_none());
    let (sweep, bptt) = (
        phase(&two, Phase::Sweep).unwrap(),
        phase(&two, Phase::Bptt).unwrap(),
    );
    let fused = phase(&one, Phase::Sweep).unwrap();
    assert_eq!(fused.flops, sweep.flops + bptt.flops);
    assert_eq!(fused.cache_bytes, 2.0 * sweep.cache_bytes);
    assert_eq!(fused.dispatches, 3);
    assert_eq!(fused.serial_steps, 784);
    let total = |c: &[PhaseCost]| c.iter().map(|c| c.floor_s(&m)).sum::<f64>();
    assert!(total(&one) < total(&two));
    assert_eq!(of(Backward::Fused, Storage::F16).len(), one.len());
    let packed = |storage| fused_backward(Size::PAPER, CellKind::Tanh, storage, 4, Backward::Fused);
    assert!(packed(Storage::F32) && !packed(Storage::F16));
    let wide = Size {
        hidden: 257,
        ..Size::PAPER
    };
    assert!(!fused_backward(
        wide,
        CellKind::Tanh,
        Storage::F32,
        1,
        Backward::Fused
    ));
}

/// Packing b sequences per workgroup of every time loop divides W's (and in the sweep
/// P's) cache traffic by b and the workgroups by b; the H100's choice at (784, 512, 512) is the most that fits (4),
/// at the paper's size 1 (serial steps bind whatever b).
#[test]
fn sequences_per_workgroup_divide_the_cache_traffic() {
    let size = Size {
        steps: 784,
        hidden: 512,
        batch: 512,
        input: 1,
        output: 10,
    };
    let forward = |b| {
        cost_model(
            size,
            CellKind::Tanh,
            Method::Bp,
            0,
            Storage::F32,
            b,
            Backward::Fused,
        )[0]
    };
    assert_eq!(forward(4).cache_bytes * 4.0, forward(1).cache_bytes);
    assert_eq!(forward(4).workgroups, 128);
    let tp = |b| {
        cost_model(
            size,
            CellKind::Tanh,
            Method::Tp,
            2,
            Storage::F32,
            b,
            Backward::Separate,
        )
    };
    for phase in [Phase::Forward, Phase::Sweep, Phase::Bptt] {
        let of = |b| *tp(b).iter().find(|c| c.phase == phase).unwrap();
        assert_eq!(of(4).cache_bytes * 4.0, of(1).cache_bytes, "{phase:?}");
        assert_eq!(of(4).workgroups, 128, "{phase:?}");
    }
    assert_eq!(
        sequences_per_workgroup(&Machine::H100, size, Storage::F32),
        4
    );
    let paper = sequences_per_workgroup(&Machine::H100, Size::PAPER, Storage::F32);
    assert_eq!(paper, 1);
    // Fewer workgroups than run at once leave the device's arithmetic idle.
    let one = Size { batch: 1, ..size };
    let c = cost_model(
        one,
        CellKind::Tanh,
        Method::Bp,
        0,
        Storage::F32,
        1,
        Backward::Fused,
    )[0];
    let m = Machine::H100;
    assert_eq!(c.terms(&m)[0].1, c.flops / m.flops * 132.0);
}

/// The GRU: three gate blocks of W in every time loop's products and cache traffic, its
/// gates and dgi, dgh stored, three P_g solved one after another, and the reductions over
/// 3d columns; its fused backward loop applies up to d = 341.
#[test]
fn the_gru_counts_three_gate_blocks() {
    let phase = |cell, method, backward, p| {
        cost_model(Size::PAPER, cell, method, 2, Storage::F32, 1, backward)
            .into_iter()
            .find(|c| c.phase == p)
    };
    let (rows, d) = (784.0 * 16.0, 100.0);
    let tanh = |p| phase(CellKind::Tanh, Method::Tp, Backward::Separate, p).unwrap();
    let gru = |p| phase(CellKind::Gru, Method::Tp, Backward::Separate, p).unwrap();
    // 2·T·B·3d·(d + p) and three times W's cache traffic.
    assert_eq!(gru(Phase::Forward).flops, 2.0 * rows * 3.0 * d * (d + 1.0));
    assert_eq!(
        gru(Phase::Forward).cache_bytes,
        3.0 * tanh(Phase::Forward).cache_bytes
    );
    // The gates [T, B, 4d] written.
    assert!(gru(Phase::Forward).bytes - tanh(Phase::Forward).bytes > rows * 4.0 * d * 4.0);
    for p in [Phase::Sweep, Phase::Bptt] {
        assert_eq!(gru(p).cache_bytes, 3.0 * tanh(p).cache_bytes, "{p:?}");
        assert!(gru(p).flops > 3.0 * 2.0 * rows * d * d, "{p:?}");
    }
    // Three solves in a row: three times the serial steps; copies, solve, stack each.
    assert_eq!(
        gru(Phase::Inverse).serial_steps,
        3 * tanh(Phase::Inverse).serial_steps
    );
    assert_eq!(gru(Phase::Inverse).dispatches, 15);
    assert_eq!(
        gru(Phase::Reductions).flops,
        3.0 * tanh(Phase::Reductions).flops
    );
    // The fused loop: the sweep takes the recursion, one more launch (W's copy).
    let fused = phase(CellKind::Gru, Method::Tp, Backward::Fused, Phase::Sweep).unwrap();
    assert!(phase(CellKind::Gru, Method::Tp, Backward::Fused, Phase::Bptt).is_none());
    assert_eq!(
        fused.flops,
        gru(Phase::Sweep).flops + gru(Phase::Bptt).flops
    );
    assert_eq!(fused.dispatches, 2);
    let at = |hidden| Size {
        hidden,
        ..Size::PAPER
    };
    assert!(fused_backward(
        at(341),
        CellKind::Gru,
        Storage::F32,
        1,
        Backward::Fused
    ));
    assert!(!fused_backward(
        at(342),
        CellKind::Gru,
        Storage::F32,
        1,
        Backward::Fused
    ));
    // BP: no inverse, no sweep, and the recursion injects g_T only.
    let bp = cost_model(
        Size::PAPER,
        CellKind::Gru,
        Method::Bp,
        0,
        Storage::F32,
        1,
        Backward::Fused,
    );
    assert_eq!(bp.len(), 5);
}

/// Per-step solves: no inverse phase, a backward loop of its own, and a sweep whose chain
/// is the T − 1 right-hand sides plus two products a CG iteration, the matrix read from the
/// cache for each product of each sequence.
#[test]
fn per_step_solves_cost_two_products_an_iteration() {
    let (rows, d, g) = (784.0 * 16.0, 100.0, 3.0);
    let phases = |k| cost_model_per_step(Size::PAPER, CellKind::Gru, k, Storage::F32);
    let names = |c: &[PhaseCost]| c.iter().map(|c| c.phase).collect::<Vec<_>>();
    let none = phases(0);
    assert_eq!(
        names(&none),
        [
            Phase::Forward,
            Phase::Head,
            Phase::Sweep,
            Phase::Bptt,
            Phase::Reductions,
            Phase::Optimizer
        ]
    );
    let sweep = |k| {
        phases(k)
            .into_iter()
            .find(|c| c.phase == Phase::Sweep)
            .unwrap()
    };
    // Without an iteration, one product a step (the right-hand side) for every sequence.
    assert_eq!(sweep(0).serial_steps, 783);
    assert_eq!(sweep(0).flops, 783.0 * 16.0 * 2.0 * g * d * d);
    assert_eq!(sweep(0).cache_bytes, 783.0 * 16.0 * g * d * d * 4.0);
    assert_eq!(sweep(0).workgroups, 16);
    // The GRU's 5 776 iterations in all at r = 0.25 (docs/PERFORMANCE.md): the chain of
    // 783 + 2·5 776 steps binds on an H100, far above BPTT's two loops of 784 steps.
    let s = sweep(5776);
    assert_eq!(s.serial_steps, 783 + 2 * 5776);
    assert_eq!(s.binding(&Machine::H100), Bound::SerialSteps);
    let floor = |c: &[PhaseCost]| c.iter().map(|c| c.floor_s(&Machine::H100)).sum::<f64>();
    let bp = cost_model(
        Size::PAPER,
        CellKind::Gru,
        Method::Bp,
        0,
        Storage::F32,
        1,
        Backward::Separate,
    );
    let ratio = floor(&phases(5776)) / floor(&bp);
    assert!(ratio > 5.0, "TP-RI / BPTT floors: {ratio}");
    // The rest of the iteration is the per-gate model's, less its inverse.
    let per_gate = cost_model(
        Size::PAPER,
        CellKind::Gru,
        Method::Tp,
        0,
        Storage::F32,
        1,
        Backward::Separate,
    );
    for c in none.iter().filter(|c| c.phase != Phase::Sweep) {
        let same = per_gate.iter().find(|p| p.phase == c.phase).unwrap();
        assert_eq!(
            (c.flops, c.bytes),
            (same.flops, same.bytes),
            "{:?}",
            c.phase
        );
    }
    assert_eq!(
        sweep(0).bytes,
        (2.0 * g * d * d + rows * 4.0 * d) * 4.0 + 2.0 * rows * d * 4.0
    );
}
