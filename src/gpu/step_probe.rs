//! Step probes (`tpri bench --probes`; `shaders/step_probe.wgsl`): what one step of a
//! time loop costs the device besides its arithmetic, one ingredient at a time — the
//! barrier and the chain through workgroup memory, a global load on the chain or a step
//! ahead, a store, a block's staged loads, a second barrier (docs/PERFORMANCE.md, "Step
//! probes"). The kernel's CPU twin is the check here: each mode's chain ends at `steps` in
//! every element it writes, and mode 3 stores t + 1 at step t.

use anyhow::{ensure, Result};
use serde::Serialize;

use crate::gpu::blocks::STAGE_LOADS;
use crate::gpu::buffers::poison;
use crate::gpu::context::GpuContext;
use crate::gpu::dispatch::Dispatch;
use crate::gpu::kernel;

/// step_probe.wgsl's modes, as reports name them.
pub const PROBES: [&str; 6] = [
    "barrier and chain",
    "+ load on the chain",
    "+ load a step ahead",
    "+ store",
    "+ staged loads",
    "+ second barrier",
];

/// step_probe.wgsl's workgroup size.
const WG: usize = 128;

/// step_probe.wgsl's uniform block.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Dims {
    steps: u32,
    groups: u32,
}

/// One probe's median time a step.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeTime {
    /// Which probe (`PROBES`).
    pub probe: &'static str,
    /// Its median time a step, in seconds.
    pub step_s: f64,
}

/// Times each probe over `steps` steps in `groups` workgroups, `reps` times after a
/// warm-up, by device timestamps where the device has them (else the host's clock, an
/// upper bound), and checks every value each wrote.
pub fn probe(ctx: &GpuContext, steps: usize, groups: usize, reps: usize) -> Result<Vec<ProbeTime>> {
    ensure!(
        (1..=1 << 24).contains(&steps),
        "probe steps must be 1 to 2^24 (its chain counts them in f32), not {steps}"
    );
    ensure!(
        (1..=65_535).contains(&groups),
        "probe workgroups must be 1 to 65 535, not {groups}"
    );
    ensure!(reps >= 1, "probe repetitions must be at least 1");
    let row = groups * WG;
    let none = wgpu::BufferUsages::empty();
    let src_len = (steps + STAGE_LOADS) * row;
    let dst_len = (steps + 1) * row;
    let src = ctx.storage("probe ones", 4 * src_len as u64, none)?;
    let dst = ctx.storage("probe values", 4 * dst_len as u64, none)?;
    ctx.write(&src, 0, &vec![1.0f32; src_len]);
    let timer = ctx.timer()?;
    let dims = Dims {
        steps: steps as u32,
        groups: groups as u32,
    };
    let mut times = Vec::with_capacity(PROBES.len());
    for (mode, &name) in PROBES.iter().enumerate() {
        let pipeline = ctx.checked(|| kernel::step_probe(&ctx.device, mode as u32))?;
        let bindings = [(1, src.as_entire_binding()), (2, dst.as_entire_binding())];
        let launch = Dispatch::new(ctx, &pipeline, &dims, &bindings, [groups as u32, 1, 1])?;
        poison(ctx, &dst, dst_len);
        let mut samples = (0..=reps)
            .map(|_| ctx.run_timed(timer.as_ref(), |pass| launch.record(pass)))
            .collect::<Result<Vec<f64>>>()?;
        // The first run warms the pipeline up.
        samples.remove(0);
        samples.sort_by(f64::total_cmp);
        check(ctx, &dst, (mode, steps, row))?;
        times.push(ProbeTime {
            probe: name,
            step_s: samples[samples.len() / 2] / steps as f64,
        });
    }
    Ok(times)
}

/// Every value probe `mode` wrote into `dst`: `steps` in the last row, and t + 1 in row t
/// where it stores every step (mode 3).
fn check(
    ctx: &GpuContext,
    dst: &wgpu::Buffer,
    (mode, steps, row): (usize, usize, usize),
) -> Result<()> {
    let first = if mode == 3 { 0 } else { steps };
    let values: Vec<f32> = ctx.read(dst, first * row, (steps + 1 - first) * row)?;
    for (i, &v) in values.iter().enumerate() {
        let t = first + i / row;
        let want = t.min(steps - 1) as f32 + 1.0;
        ensure!(
            v == want,
            "probe '{}' wrote {v} at step {t} where its chain gives {want}",
            PROBES[mode]
        );
    }
    Ok(())
}
