//! `tpri devices` and `tpri check`.

use anyhow::{bail, Result};
use clap::Args;

use tpri::check::{column_of, run_checks, CHECK_TOL, COLUMNS};
use tpri::cpu::CpuBackend;
use tpri::gpu::list_adapters;

use super::{open_gpu, BackendArgs};

/// Lists the adapters wgpu finds.
pub fn devices() -> Result<()> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        println!("no GPU adapter found (on Debian, `apt-get install mesa-vulkan-drivers` gives the software driver lavapipe)");
    }
    for a in adapters {
        println!("{a}");
    }
    Ok(())
}

/// Flags of `tpri check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Seeds the random problems.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Runs random problems on the GPU and on the f64 reference and prints the errors.
pub fn check(args: CheckArgs) -> Result<()> {
    let mut gpu = open_gpu(&args.backend)?;
    println!("checking {} against the f64 CPU reference (pass: every ‖gpu − ref‖/‖ref‖ ≤ {CHECK_TOL:.0e})", gpu.name());
    let rows = run_checks(gpu.as_mut(), &mut CpuBackend::new(), args.seed)?;
    let width = rows.iter().map(|(c, _)| c.name.len()).max().unwrap_or(0);
    print!("{:width$}", "case");
    for n in COLUMNS {
        print!(" {n:>9}");
    }
    println!("  result");
    let mut failed = 0;
    for (case, errs) in &rows {
        print!("{:width$}", case.name);
        let mut ok = true;
        // A quantity that has no column would go unchecked: count it as a failure.
        ok &= errs.iter().all(|(m, _)| COLUMNS.contains(&column_of(m)));
        for n in COLUMNS {
            match errs.iter().find(|(m, _)| column_of(m) == n) {
                Some((_, e)) => {
                    ok &= *e <= CHECK_TOL;
                    print!(" {e:>9.1e}");
                }
                None => print!(" {:>9}", "-"),
            }
        }
        println!("  {}", if ok { "ok" } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        bail!("{failed} of {} cases exceed {CHECK_TOL:.0e}", rows.len());
    }
    println!("all {} cases pass", rows.len());
    Ok(())
}
