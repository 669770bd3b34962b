//! The cost model of a GPU iteration: per phase its FLOPs, compulsory bytes, the time
//! loops' cache reads, serial steps and launches, and the floor they imply on an assumed
//! device (`Machine`), with the term that binds. `tpri bench` prints it beside the
//! measured phases; docs/PERFORMANCE.md states the figures assumed.

use serde::Serialize;

use super::Size;
use crate::config::Method;
use crate::gpu::blocks::sweep_bptt_vectors;
use crate::gpu::loops::REDUCTION_STAGE;
use crate::gpu::matmul;
use crate::gpu::segments::REDUCTION_WORKGROUPS;
use crate::gpu::{Backward, Phase, Storage, MAX_HIDDEN, MAX_SEQUENCES_PER_WORKGROUP};
use crate::model::CellKind;

/// What the device is assumed to sustain, for the floors of the cost model.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Machine {
    /// Peak f32 FLOP/s.
    pub flops: f64,
    /// Memory bandwidth, bytes/s.
    pub bandwidth: f64,
    /// Bandwidth of the last-level cache (L2) to the compute units, bytes/s: what every
    /// workgroup's reading of the whole d×d matrix at every time step draws on.
    pub cache_bandwidth: f64,
    /// Workgroups of the time loops that run at once (compute units × resident
    /// workgroups per unit); B sequences take ⌈B / this⌉ waves of serial steps.
    pub concurrent_workgroups: usize,
    /// Fixed cost of one kernel launch, seconds.
    pub dispatch_s: f64,
    /// Latency of one step of a recursion over time (a d-long dot product and two
    /// workgroup barriers), seconds: the fused time loops cannot go faster than T of them.
    pub step_s: f64,
}

impl Machine {
    /// A mid-range discrete GPU: 10 TFLOP/s, 500 GB/s, an L2 of 2 TB/s, 40 workgroups at
    /// once, 5 µs a launch, 2 µs a time step (the default of `tpri bench`).
    pub const MIDRANGE: Machine = Machine {
        flops: 10e12,
        bandwidth: 500e9,
        cache_bandwidth: 2e12,
        concurrent_workgroups: 40,
        dispatch_s: 5e-6,
        step_s: 2e-6,
    };

    /// An NVIDIA H100 SXM as assumed here: 67 TFLOP/s f32 without tensor cores, 3.35 TB/s
    /// of HBM3, an L2 of 7 TB/s, 132 SMs each holding one 256-thread time-loop
    /// workgroup's worth of the matrix traffic at a time, 3 µs a launch (Vulkan, inside
    /// one command buffer, with a barrier), 1 µs a time step. The last three are
    /// assumptions, not datasheet figures.
    pub const H100: Machine = Machine {
        flops: 67e12,
        bandwidth: 3.35e12,
        cache_bandwidth: 7e12,
        concurrent_workgroups: 132,
        dispatch_s: 3e-6,
        step_s: 1e-6,
    };
}

/// Which term of a phase's floor is the largest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Bound {
    /// FLOPs at the peak rate.
    Arithmetic,
    /// Compulsory bytes at the memory bandwidth.
    Traffic,
    /// The matrix read by every workgroup at every step, at the cache bandwidth.
    CacheTraffic,
    /// Serial time steps, in waves of concurrent workgroups.
    SerialSteps,
    /// Kernel launches.
    Launches,
}

impl Bound {
    /// The name reports print.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Arithmetic => "arithmetic",
            Bound::Traffic => "traffic",
            Bound::CacheTraffic => "cache",
            Bound::SerialSteps => "serial",
            Bound::Launches => "launches",
        }
    }
}

/// The modelled cost of one phase.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PhaseCost {
    /// The phase modelled.
    pub phase: Phase,
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: f64,
    /// Compulsory memory traffic: every input read once, every output written once.
    pub bytes: f64,
    /// Traffic from the cache: every workgroup of a time loop reads the whole d×d matrix
    /// (W, or P in the target sweep) at every step, once for the b sequences it carries
    /// (T·⌈B/b⌉·d² values).
    pub cache_bytes: f64,
    /// Workgroups of the phase's time loop (⌈B/b⌉), or of its widest reduction launch, or
    /// 0 for a phase without either.
    pub workgroups: usize,
    /// Kernel launches recorded.
    pub dispatches: usize,
    /// Dependent steps in sequence inside the phase's kernels (T for the time loops).
    pub serial_steps: usize,
}

impl PhaseCost {
    /// Each term of the floor on `m`, in seconds. The arithmetic runs at the peak rate
    /// only when the phase has a workgroup for every one `m` runs at once: fewer leave
    /// the rest of the device idle (what bounds packing many sequences into few
    /// workgroups).
    pub fn terms(&self, m: &Machine) -> [(Bound, f64); 5] {
        let concurrent = m.concurrent_workgroups.max(1);
        let waves = self.workgroups.div_ceil(concurrent).max(1);
        let busy = match self.workgroups {
            0 => 1.0,
            w => w.min(concurrent) as f64 / concurrent as f64,
        };
        [
            (Bound::Arithmetic, self.flops / (m.flops * busy)),
            (Bound::Traffic, self.bytes / m.bandwidth),
            (Bound::CacheTraffic, self.cache_bytes / m.cache_bandwidth),
            (
                Bound::SerialSteps,
                (self.serial_steps * waves) as f64 * m.step_s,
            ),
            (Bound::Launches, self.dispatches as f64 * m.dispatch_s),
        ]
    }

    /// The fastest this phase can run on `m`: the largest of its compute, memory, cache
    /// and recursion-latency bounds, plus its launches.
    pub fn floor_s(&self, m: &Machine) -> f64 {
        let terms = self.terms(m);
        let bound = terms[..4].iter().map(|t| t.1).fold(0.0, f64::max);
        bound + terms[4].1
    }

    /// The largest term of the floor on `m`.
    pub fn binding(&self, m: &Machine) -> Bound {
        let terms = self.terms(m);
        terms
            .iter()
            .copied()
            .reduce(|a, b| if b.1 > a.1 { b } else { a })
            .map_or(Bound::Launches, |t| t.0)
    }
}

/// Whether TP-RI's backward pass runs as one loop with `backward` at `size`, as the
/// kernels decide on a GPU: for the tanh RNN (sweep_bptt.wgsl) with their automatic lanes
/// (one or two lanes per unit: d ≤ 256) and `seqs` sequences per workgroup, for the
/// published linearized targets, where the loop's vectors fit its workgroup memory with
/// the histories stored as `storage` says (`gpu::sweep_bptt::fits`); for the GRU
/// (gru_sweep_bptt.wgsl, the per-gate inversion, f32 storage) where a step's six vectors
/// fit (`gpu::gru_sweep_bptt::fits`: 6d ≤ `MAX_HIDDEN`).
pub fn fused_backward(
    size: Size,
    cell: CellKind,
    storage: Storage,
    seqs: usize,
    backward: Backward,
) -> bool {
    let vectors = sweep_bptt_vectors(storage);
    backward == Backward::Fused
        && match cell {
            CellKind::Tanh => {
                size.hidden <= 256 && vectors * 2 * seqs.max(1) * size.hidden <= 2 * MAX_HIDDEN
            }
            CellKind::Gru => storage == Storage::F32 && 6 * size.hidden <= MAX_HIDDEN,
        }
}

/// The cost model of one GPU iteration of `cell` (docs/ALGORITHM.md §2–§5) with
/// `cg_iters` CG iterations run (the most of any column of P, or of the GRU's three P_g),
/// the histories h and v − h stored as `storage` says (every other value is an f32),
/// `seqs` sequences per workgroup in the tanh RNN's time loops (forward pass, target
/// sweep, backward recursion: `gpu::SequencesPerWorkgroup`; 0 counts as 1; the GRU's carry
/// one) and TP-RI's backward pass as `backward` says: where `fused_backward`, the sweep
/// phase holds the sweep and the recursion in one loop (their work, both matrices' cache
/// traffic, one more transpose, T serial steps once) and there is no bptt phase. The GRU
/// (g = 3 gate blocks) reads W [3d, d] and forms 3d pre-activations a step, stores its
/// gates [T, B, 4d] for the backward loops and dgi, dgh [T, B, 3d] for the reductions, and
/// inverts with the per-gate P_g: three solves and three products a step in the sweep.
pub fn cost_model(
    size: Size,
    cell: CellKind,
    method: Method,
    cg_iters: usize,
    storage: Storage,
    seqs: usize,
    backward: Backward,
) -> Vec<PhaseCost> {
    let (t, d, b, p, q) = (
        size.steps as f64,
        size.hidden as f64,
        size.batch as f64,
        size.input as f64,
        size.output as f64,
    );
    let g = cell.gates() as f64;
    let gru = cell == CellKind::Gru;
    let seqs = if gru { 1 } else { seqs };
    let k = cg_iters as f64;
    let f = 4.0; // bytes per f32
    let hb = storage.bytes() as f64; // bytes per value of h or v − h
    let rows = t * b; // every (step, sequence) pair
                      // W, U, b (and the GRU's b_hh), then the head.
    let params = g * (d * d + d * p + d) + if gru { g * d } else { 0.0 } + q * d + q;
    // Per (step, sequence) the GRU's stored gates (r, z, n, hn) and its dgi, dgh.
    let (gates, dg) = if gru { (4.0 * d, 6.0 * d) } else { (0.0, 0.0) };
    // `values`: f32 values moved; `history`: values of h or v − h moved.
    // A time loop runs ⌈B/b⌉ workgroups of b sequences, each reading its g·d×d matrix (W,
    // or the P_g stacked) from the cache once a step for all of them.
    let workgroups = size.batch.div_ceil(seqs.max(1));
    let cost = |phase, flops, values: f64, history: f64, dispatches, serial_steps| {
        let time_loop = matches!(phase, Phase::Forward | Phase::Sweep | Phase::Bptt);
        PhaseCost {
            phase,
            flops,
            bytes: values * f + history * hb,
            cache_bytes: if time_loop {
                t * workgroups as f64 * g * d * d * f
            } else {
                0.0
            },
            workgroups: if time_loop { workgroups } else { 0 },
            dispatches,
            serial_steps,
        }
    };
    let all = [
        // W h + U x + b, tanh (or the gates): read W, U, b, x; write h (and the gates).
        // Plus the transpose of W.
        cost(
            Phase::Forward,
            2.0 * rows * g * d * (d + p),
            2.0 * g * d * d + g * d * p + g * d + rows * (p + gates),
            rows * d,
            2,
            size.steps,
        ),
        cost(
            Phase::Head,
            4.0 * b * d * q,
            q * d * 2.0 + b * q,
            b * d * 2.0,
            2,
            0,
        ),
        // One workgroup per column of P: per CG iteration two d×d matrix-vector products
        // and the update, each a dependent step (a d-long dot product and barriers); the
        // warm start adds one product. W and Wᵀ stay in cache: read once, P read (the
        // warm start) and written once. The GRU solves for its three P_g one after
        // another, each after copying W_g and W_gᵀ out (two transposes) and before
        // stacking P_gᵀ (one more).
        cost(
            Phase::Inverse,
            g * ((k + 1.0) * 4.0 * d * d * d + k * 10.0 * d * d),
            g * if gru { 10.0 } else { 4.0 } * d * d,
            0.0,
            if gru { 15 } else { 2 },
            cell.gates() * 2 * (cg_iters + 1),
        ),
        // P s per step and sequence (the GRU: P_z, P_r, P_n on three brackets): read h (and
        // the gates), P, write dv. Plus the transpose of P (the GRU's P_gᵀ are stacked by
        // the inverse phase).
        cost(
            Phase::Sweep,
            2.0 * rows * g * d * d + 4.0 * g * rows * d,
            g * d * d * if gru { 1.0 } else { 2.0 } + rows * gates,
            2.0 * rows * d,
            if gru { 1 } else { 2 },
            size.steps,
        ),
        // Wᵀδ (the GRU: Wᵀ dgh over 3d rows) per step and sequence: read h and dv (TP) or
        // g_T (and the gates), write δ and e (the GRU: dgi, dgh and e).
        cost(
            Phase::Bptt,
            2.0 * rows * g * d * d + 3.0 * g * rows * d,
            g * d * d + 2.0 * rows * d + rows * (gates + dg),
            rows * d * if method == Method::Tp { 2.0 } else { 1.0 },
            1,
            size.steps,
        ),
        reductions(size, cell, hb),
        // Read the gradient, read and write θ and two optimizer slots.
        cost(Phase::Optimizer, 10.0 * params, 7.0 * params, 0.0, 1, 0),
    ];
    let phases = Phase::of(method);
    let mut costs: Vec<PhaseCost> = all
        .into_iter()
        .filter(|c| phases.contains(&c.phase))
        .collect();
    if method == Method::Tp && fused_backward(size, cell, storage, seqs, backward) {
        if let Some(bptt) = costs.iter().position(|c| c.phase == Phase::Bptt) {
            let b = costs.remove(bptt);
            if let Some(sweep) = costs.iter_mut().find(|c| c.phase == Phase::Sweep) {
                sweep.flops += b.flops;
                sweep.bytes += b.bytes;
                sweep.cache_bytes += b.cache_bytes;
                sweep.dispatches += 1;
            }
        }
    }
    costs
}

/// The cost model of a GPU iteration of TP-RI whose targets come from per-step solves
/// (the jacobian inversion, docs/ALGORITHM.md §5, or P applied by per-step solves, §4):
/// `cost_model`'s phases with no inverse phase, the backward recursion a loop of its own,
/// and the sweep of `jacobian.wgsl`: one workgroup a sequence, at each step T … 2 the
/// right-hand side J_tᵀ(v_t − h_t) (one product), then per CG iteration J_t p and J_tᵀ of
/// it, each reading the cell's g·d×d matrix from the cache and each one dependent step;
/// the iteration's two workgroup sums are not counted. `cg_iterations_total` (the CG
/// report's `total_iterations`) sums each step's slowest sequence, so the serial term is the slowest workgroup's chain when the
/// sequences of a step stop together (within an iteration of each other in 97 % of the
/// GRU's updates measured on the CPU, docs/PERFORMANCE.md) and above it otherwise.
pub fn cost_model_per_step(
    size: Size,
    cell: CellKind,
    cg_iterations_total: usize,
    storage: Storage,
) -> Vec<PhaseCost> {
    let (t, d, b) = (size.steps as f64, size.hidden as f64, size.batch as f64);
    let g = cell.gates() as f64;
    let k = cg_iterations_total as f64;
    let rhs_steps = size.steps.saturating_sub(1);
    let rows = t * b;
    let gates = if cell == CellKind::Gru { 4.0 * d } else { 0.0 };
    let products = rhs_steps as f64 + 2.0 * k;
    let sweep = PhaseCost {
        phase: Phase::Sweep,
        flops: products * b * 2.0 * g * d * d + k * b * 10.0 * d,
        bytes: (2.0 * g * d * d + rows * gates) * 4.0 + 2.0 * rows * d * storage.bytes() as f64,
        cache_bytes: products * b * g * d * d * 4.0,
        workgroups: size.batch,
        dispatches: 1,
        serial_steps: rhs_steps.saturating_add(cg_iterations_total.saturating_mul(2)),
    };
    cost_model(size, cell, Method::Tp, 0, storage, 1, Backward::Separate)
        .into_iter()
        .filter(|c| c.phase != Phase::Inverse)
        .map(|c| if c.phase == Phase::Sweep { sweep } else { c })
        .collect()
}

/// The sequences per workgroup of the time loops whose floors on `m` add up to the
/// lowest at `size` (the smallest count among equals): the forward pass, the target sweep
/// and the backward recursion, which all take the same count (TP-RI runs all three; they
/// cost alike, so BP's two choose the same). Each count b a power of two up to
/// `MAX_SEQUENCES_PER_WORKGROUP` whose vectors fit the kernels' workgroup memory
/// (b·d ≤ `MAX_HIDDEN`) and that does not exceed B rounded up to a power of two. More
/// sequences divide the cache traffic of W and P by b but leave ⌈B/b⌉ workgroups to share
/// the arithmetic (`PhaseCost::terms`). The kernels' `auto` no longer follows this count on
/// a GPU (it runs 1, `gpu::forward`): the model leaves out the serial work packing adds to
/// every step, and on an H100 one sequence per workgroup beat the model's 4 by 3.7× at
/// d = 100, B = 256 and by 1.9× at d = 512, B = 256. `tpri bench --model-only` prints it.
pub fn sequences_per_workgroup(m: &Machine, size: Size, storage: Storage) -> usize {
    let floor = |b: usize| {
        cost_model(
            size,
            CellKind::Tanh,
            Method::Tp,
            0,
            storage,
            b,
            Backward::Separate,
        )
        .iter()
        .filter(|c| matches!(c.phase, Phase::Forward | Phase::Sweep | Phase::Bptt))
        .map(|c| c.floor_s(m))
        .sum::<f64>()
    };
    let mut best = (1, floor(1));
    let mut b = 2;
    while b <= MAX_SEQUENCES_PER_WORKGROUP
        && b.saturating_mul(size.hidden) <= MAX_HIDDEN
        && b <= size.batch.next_power_of_two()
    {
        let f = floor(b);
        if f < best.1 {
            best = (b, f);
        }
        b *= 2;
    }
    best.0
}

/// The reductions Δᵀ H, Δᵀ X, Δᵀ 1 (∇b_ih) and Δᵀ 1 (∇b_hh), one after another, Δ with
/// g·d columns (the GRU's δ is dgh for H and ∇b_hh, dgi for X and ∇b_ih): read Δ, h and x,
/// write the gradients; each split over workgroups as `matmul::splits` picks on a GPU,
/// then its slices written and read again. Each workgroup walks its rows in stages of 16,
/// a stage (two barriers, a short chain of multiply-adds) counted as one serial step.
fn reductions(size: Size, cell: CellKind, history_bytes: f64) -> PhaseCost {
    let (t, d, b) = (size.steps as f64, size.hidden as f64, size.batch as f64);
    let m = cell.gates() * size.hidden;
    let (rows, k) = (t * b, size.steps * size.batch);
    let (mut bytes, mut serial, mut dispatches, mut workgroups) = (0.0, 0, 0, 0);
    for n in [size.hidden, size.input, 1, 1] {
        let splits = matmul::splits(m, n, k, REDUCTION_WORKGROUPS);
        let [x, y, _] = matmul::groups(m, n);
        let slices = if splits > 1 { 2 * splits * m * n } else { 0 };
        bytes += (slices + m * n) as f64 * 4.0;
        serial += k.div_ceil(splits * REDUCTION_STAGE);
        dispatches += 1 + usize::from(splits > 1);
        workgroups = workgroups.max((x * y) as usize * splits);
    }
    let n_total = d + size.input as f64 + 2.0;
    // Each Δ read once: δ, or the GRU's dgh and dgi.
    let deltas = (if cell == CellKind::Gru { 2 * m } else { m }) as f64;
    PhaseCost {
        phase: Phase::Reductions,
        flops: 2.0 * rows * m as f64 * n_total,
        bytes: bytes + rows * deltas * 4.0 + rows * d * history_bytes + rows * (n_total - d) * 4.0,
        cache_bytes: 0.0,
        workgroups,
        dispatches,
        serial_steps: serial,
    }
}

#[cfg(test)]
mod tests;
