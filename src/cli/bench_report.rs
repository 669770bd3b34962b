//! What `tpri bench` prints and draws from its measurements: the per-iteration and
//! per-phase tables beside the cost model, the linear fits in T·B, and the regime map.

use std::path::PathBuf;

use anyhow::Result;

use tpri::bench::{
    cost_model, cost_model_per_step, sequences_per_workgroup, Case, Machine, Measurement,
    PhaseCost, Size,
};
use tpri::config::{Inversion, Method, Preconditioner};
use tpri::gpu::step_probe::ProbeTime;
use tpri::gpu::{Backward, SequencesPerWorkgroup, Storage};
use tpri::model::CellKind;
use tpri::plot::{heat_map_with, HeatAxes};

/// A count, or nothing where there is none.
fn count(n: Option<usize>) -> String {
    n.map_or(String::new(), |n| n.to_string())
}

/// Seconds as milliseconds with three decimals.
pub fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

/// The BP measurement matching `m` (same backend, cell and size), for TP/BP ratios.
fn bp_of<'a>(all: &'a [Measurement], m: &Measurement) -> Option<&'a Measurement> {
    all.iter().find(|o| {
        o.method == Method::Bp && o.backend == m.backend && o.cell == m.cell && o.size == m.size
    })
}

/// A cell's name in tables.
pub(super) fn cell_name(cell: CellKind) -> &'static str {
    match cell {
        CellKind::Tanh => "tanh",
        CellKind::Gru => "gru",
    }
}

/// A method's name in tables: `tp` with the cell's bench inversion, `tp-jacobian` and so on
/// with another, `tp-jacobian-plain` or `tp-jacobian-jacobi` where its per-step CG runs
/// with another preconditioner than the cell's default (`Preconditioner::Auto`).
pub(super) fn method_name(
    cell: CellKind,
    method: Method,
    (inversion, precondition): (Option<Inversion>, Option<Preconditioner>),
) -> String {
    let name = format!("{method:?}").to_lowercase();
    let name = match inversion {
        Some(i) if i != Case::bench_inversion(cell) => format!("{name}-{}", i.name()),
        _ => name,
    };
    match precondition {
        Some(p) if p != Preconditioner::Auto.resolve(cell) => match p {
            Preconditioner::None => format!("{name}-plain"),
            other => format!("{name}-{}", other.name()),
        },
        _ => name,
    }
}

pub fn print_iterations(all: &[Measurement]) {
    println!("\nper-iteration medians (optimizer step included)");
    let mut regs: Vec<f64> = all.iter().filter_map(|m| m.reg).collect();
    regs.dedup();
    if let [reg] = regs[..] {
        println!("TP-RI's regularization r = {reg}");
    }
    println!(
        "{:11} {:4} {:11} {:>5} {:>5} {:>4} {:>12} {:>14} {:>8} {:>6} {:>8} {:>7} {:>10}  clock",
        "backend",
        "cell",
        "method",
        "T",
        "d",
        "B",
        "median ms",
        "µs per T·B",
        "CG iters",
        "solves",
        "in all",
        "TP/BP",
        "CPU ms"
    );
    for m in all {
        let ratio = match m.method {
            Method::Tp => bp_of(all, m).map_or("-".into(), |bp| {
                format!("{:.2}", m.iteration_s / bp.iteration_s)
            }),
            Method::Bp | Method::Dtp => String::new(),
        };
        let s = m.size;
        println!(
            "{:11} {:4} {:11} {:>5} {:>5} {:>4} {:>12} {:>14.3} {:>8} {:>6} {:>8} {:>7} {:>10}  {}",
            m.backend,
            cell_name(m.cell),
            method_name(m.cell, m.method, (m.inversion, m.precondition)),
            s.steps,
            s.hidden,
            s.batch,
            ms(m.iteration_s),
            m.iteration_s * 1e6 / (s.steps * s.batch) as f64,
            count(m.cg_iterations),
            count(m.cg_solves),
            count(m.cg_iterations_total),
            ratio,
            m.process_cpu_s.map_or(String::new(), ms),
            m.clock
        );
    }
}

/// The backends measured in `all`, in order of first appearance.
fn backends(all: &[Measurement]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in all {
        if !out.contains(&m.backend) {
            out.push(m.backend.clone());
        }
    }
    out
}

/// The phase table of the largest case of each GPU configuration, cell and method (with
/// TP-RI's inversion), beside the cost model's floors.
pub fn print_phases(all: &[Measurement], machine: &Machine) {
    type Key = (
        String,
        CellKind,
        Method,
        Option<Inversion>,
        Option<Preconditioner>,
    );
    let mut tables: Vec<Key> = Vec::new();
    for m in all.iter().filter(|m| m.backend.starts_with("gpu")) {
        let key = (
            m.backend.clone(),
            m.cell,
            m.method,
            m.inversion,
            m.precondition,
        );
        if !tables.contains(&key) {
            tables.push(key);
        }
    }
    for (backend, cell, method, inversion, precondition) in tables {
        if let Some(m) = all
            .iter()
            .filter(|m| {
                m.backend == backend
                    && m.cell == cell
                    && m.method == method
                    && m.inversion == inversion
                    && m.precondition == precondition
            })
            .max_by_key(|m| m.size.steps * m.size.batch * m.size.hidden * m.size.hidden)
        {
            print_phases_beside_model(&backend, m, machine);
        }
    }
}

/// The phase table of measurement `m`, each phase beside its floor on `machine`.
fn print_phases_beside_model(backend: &str, m: &Measurement, machine: &Machine) {
    let method = m.method;
    let s = m.size;
    let k = m.cg_iterations.unwrap_or(0);
    let storage = m.storage.unwrap_or_default();
    // The run's sequences per workgroup when fixed; for `auto` what the kernels run on
    // a GPU (the assumed device, which the floors are of): 1 (gpu::forward's rule).
    let seqs = match m.sequences_per_workgroup.as_deref().map(str::parse) {
        Some(Ok(SequencesPerWorkgroup::Fixed(b))) if m.cell == CellKind::Tanh => b,
        _ => 1,
    };
    let what = method_name(m.cell, method, (m.inversion, m.precondition));
    let per_step = m.inversion == Some(Inversion::Jacobian);
    let (solves, seqs) = if per_step {
        let (n, all) = (count(m.cg_solves), count(m.cg_iterations_total));
        (
            format!("the most of a step {k}, {n} steps solved, {all} in all"),
            1,
        )
    } else {
        (k.to_string(), seqs)
    };
    println!(
        "\nGPU phases ({backend}: {storage} storage), {} {what} at T={} d={} B={} (CG iterations {solves}); model floor on {} with {seqs} sequence(s) per time-loop workgroup",
        cell_name(m.cell),
        s.steps,
        s.hidden,
        s.batch,
        describe(machine)
    );
    println!(
        "{:11} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "phase", "median ms", "floor ms", "× floor", "GFLOP/s", "GB/s"
    );
    // The run's backward pass: one loop unless the row is `-separate` (and where the
    // kernel applies, `fused_backward`).
    let backward = if backend.ends_with("-separate") {
        Backward::Separate
    } else {
        Backward::Fused
    };
    let costs = if per_step {
        let all = m.cg_iterations_total.unwrap_or(0);
        cost_model_per_step(s, m.cell, all, storage)
    } else {
        cost_model(s, m.cell, method, k, storage, seqs, backward)
    };
    let (mut total_floor, mut total_time) = (0.0, 0.0);
    for c in &costs {
        let time = m
            .phases_s
            .iter()
            .find(|(p, _)| *p == c.phase)
            .map_or(f64::NAN, |(_, t)| *t);
        let floor = c.floor_s(machine);
        total_floor += floor;
        total_time += time;
        println!(
            "{:11} {:>10} {:>10} {:>8.1} {:>8.2} {:>10.2}  ({})",
            c.phase.name(),
            ms(time),
            ms(floor),
            time / floor,
            c.flops / time * 1e-9,
            (c.bytes + c.cache_bytes) / time * 1e-9,
            c.binding(machine).name()
        );
    }
    println!(
        "{:11} {:>10} {:>10} {:>8.1}",
        "sum",
        ms(total_time),
        ms(total_floor),
        total_time / total_floor
    );
}

/// The assumed device in one line.
fn describe(m: &Machine) -> String {
    format!(
        "{:.0} GFLOP/s, {:.0} GB/s, cache {:.0} GB/s, {} workgroups at once, {:.1} µs/dispatch, {:.1} µs/time step",
        m.flops * 1e-9,
        m.bandwidth * 1e-9,
        m.cache_bandwidth * 1e-9,
        m.concurrent_workgroups,
        m.dispatch_s * 1e6,
        m.step_s * 1e6
    )
}

/// One row of the model's table: a phase's work, traffic, launches, floor and binding term.
fn print_phase(name: &str, c: &PhaseCost, machine: &Machine) {
    println!(
        "{:11} {:>10.1} {:>10.2} {:>10.1} {:>10} {:>10}  {}",
        name,
        c.flops * 1e-6,
        c.bytes * 1e-6,
        c.cache_bytes * 1e-6,
        c.dispatches,
        ms(c.floor_s(machine)),
        c.binding(machine).name()
    );
}

/// `--model-only`: the cost model of TP-RI (two warm CG iterations, as measured at the
/// paper's size) and BP of each cell at every size, each phase's floor and binding term,
/// and the ratio of the two floors.
pub fn print_model(sizes: &[Size], cells: &[CellKind], machine: &Machine) {
    println!("cost model on {}", describe(machine));
    for &s in sizes {
        for &cell in cells {
            print_model_of(s, cell, machine);
        }
    }
}

/// `print_model` at one size for one cell.
fn print_model_of(s: Size, cell: CellKind, machine: &Machine) {
    println!(
        "\n{} at T={} d={} B={} (p={}, q={})",
        cell_name(cell),
        s.steps,
        s.hidden,
        s.batch,
        s.input,
        s.output
    );
    println!(
        "{:11} {:>10} {:>10} {:>10} {:>10} {:>10}  binding term",
        "phase", "MFLOP", "MB", "cache MB", "dispatches", "floor ms"
    );
    // The tanh RNN's time loops with the sequences per workgroup the model picks on this
    // device, and, where that is not 1, each loop's and the whole iteration's floor with 1
    // beside them. (The kernels' `auto` runs 1 on a GPU whatever the model says: packing
    // measured slower on an H100. The GRU's loops carry one sequence.)
    let seqs = match cell {
        CellKind::Tanh => sequences_per_workgroup(machine, s, Storage::F32),
        CellKind::Gru => 1,
    };
    println!(
        "time loops: {seqs} sequence(s) per workgroup (the model's choice; the kernels' auto runs 1 on a GPU)"
    );
    let mut floors = [0.0; 2];
    let mut floors_1 = [0.0; 2];
    for (i, method) in [Method::Tp, Method::Bp].into_iter().enumerate() {
        println!("{method:?}");
        for c in cost_model(s, cell, method, 2, Storage::F32, seqs, Backward::Fused) {
            floors[i] += c.floor_s(machine);
            print_phase(c.phase.name(), &c, machine);
        }
        for c in cost_model(s, cell, method, 2, Storage::F32, 1, Backward::Fused) {
            floors_1[i] += c.floor_s(machine);
            let time_loop = matches!(
                c.phase,
                tpri::gpu::Phase::Forward | tpri::gpu::Phase::Sweep | tpri::gpu::Phase::Bptt
            );
            if seqs > 1 && time_loop {
                print_phase(&format!("{} b=1", c.phase.name()), &c, machine);
            }
        }
    }
    println!(
        "floor: TP {} ms, BP {} ms, TP/BP {:.2}",
        ms(floors[0]),
        ms(floors[1]),
        floors[0] / floors[1]
    );
    if seqs > 1 {
        println!(
            "floor with 1 sequence per workgroup: TP {} ms, BP {} ms",
            ms(floors_1[0]),
            ms(floors_1[1]),
        );
    }
}

/// The TP/BP ratio of `backend` at (T, d), if both were measured.
fn regime_ratio(all: &[Measurement], backend: &str, t: usize, d: usize) -> Option<f64> {
    let find = |method| {
        all.iter().find(|m| {
            m.backend == backend && m.method == method && m.size.steps == t && m.size.hidden == d
        })
    };
    Some(find(Method::Tp)?.iteration_s / find(Method::Bp)?.iteration_s)
}

/// Draws the regime map of each measured backend as `<stem>-<backend>.{svg,png}`.
pub fn plot_regimes(
    stem: &std::path::Path,
    all: &[Measurement],
    hidden: &[usize],
    batch: usize,
    gpu_name: Option<&str>,
) -> Result<()> {
    let ys: Vec<f64> = hidden.iter().map(|&d| d as f64).collect();
    let axes = HeatAxes {
        x_label: "sequence length T",
        y_label: "hidden size d",
        colour_label: "TP-RI / BP time per iteration",
        y_values: Some(&ys),
        annotate: true,
        names: &[],
    };
    for backend in backends(all) {
        let backend = backend.as_str();
        let mut steps: Vec<usize> = all
            .iter()
            .filter(|m| m.backend == backend)
            .map(|m| m.size.steps)
            .collect();
        if steps.is_empty() {
            continue;
        }
        steps.sort_unstable();
        steps.dedup();
        let rows: Vec<(f64, Vec<f64>)> = steps
            .iter()
            .map(|&t| {
                let column = hidden
                    .iter()
                    .map(|&d| regime_ratio(all, backend, t, d).unwrap_or(f64::NAN));
                (t as f64, column.collect())
            })
            .collect();
        let storage = match backend.strip_prefix("gpu-") {
            Some(s) => format!(", {s} storage"),
            None => String::new(),
        };
        let device = match (backend.starts_with("gpu"), gpu_name) {
            (true, Some(name)) => format!("GPU ({name}{storage})"),
            (true, None) => format!("GPU{storage}"),
            _ => "CPU reference".to_owned(),
        };
        let title = format!("TP-RI / BP time per iteration, {device}, B={batch}");
        let path = PathBuf::from(format!("{}-{backend}", stem.display()));
        heat_map_with(&path, &title, &rows, false, &axes)?;
        println!("wrote {}.svg and {}.png", path.display(), path.display());
    }
    Ok(())
}

pub fn print_regimes(all: &[Measurement], steps: &[usize], hidden: &[usize], batch: usize) {
    for backend in backends(all) {
        let backend = backend.as_str();
        println!("\nregime map ({backend}, B={batch}): TP/BP time ratio; < 1 means TP is cheaper per iteration");
        print!("{:>8}", "T \\ d");
        for d in hidden {
            print!("{d:>8}");
        }
        println!();
        for &t in steps {
            print!("{t:>8}");
            for &d in hidden {
                match regime_ratio(all, backend, t, d) {
                    Some(ratio) => print!("{ratio:>8.2}"),
                    None => print!("{:>8}", "-"),
                }
            }
            println!();
        }
    }
}

/// The step probes' medians a step, each beside the barrier-and-chain probe's.
pub(super) fn print_probes(probes: &[ProbeTime], steps: usize, groups: usize) {
    println!("\nstep probes ({steps} steps, {groups} workgroups of 128; medians a step):");
    let base = probes.first().map_or(0.0, |p| p.step_s);
    for p in probes {
        println!(
            "{:<22} {:>9.3} µs  {:>+9.3} µs",
            p.probe,
            p.step_s * 1e6,
            (p.step_s - base) * 1e6
        );
    }
}
