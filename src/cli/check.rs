//! `tpri devices` and `tpri check`.

use anyhow::{bail, Result};
use clap::Args;

use tpri::check::{column_of, run_checks, storage_bound, CHECK_TOL, COLUMNS};
use tpri::cpu::CpuBackend;
use tpri::gpu::list_adapters;

use tpri::gpu::Storage;

use super::{open_gpu, BackendArgs, BackendChoice};

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
///
/// It always compares the GPU with the CPU reference: `--backend gpu` and `auto` both
/// mean the GPU, and `--backend cpu`, which would leave nothing to compare, is refused.
pub fn check(args: CheckArgs) -> Result<()> {
    if args.backend.backend == BackendChoice::Cpu {
        bail!(
            "tpri check compares the GPU backend with the f64 CPU reference; --backend cpu \
             leaves nothing to compare (use --backend gpu or auto, with --adapter to pick the GPU)"
        );
    }
    let mut gpu = open_gpu(&args.backend)?;
    let storage = args.backend.gpu.storage;
    println!("checking {} against the f64 CPU reference", gpu.name());
    match storage {
        Storage::F32 => println!("pass: every ‖gpu − ref‖/‖ref‖ ≤ {CHECK_TOL:.0e}"),
        Storage::F16 => println!(
            "pass: ‖gpu − ref‖/‖ref‖ ≤ u + {CHECK_TOL:.0e} for h and ≤ u·(4 + 2A) + {CHECK_TOL:.0e} \
             for the rest (u = 2⁻¹¹, f16's unit roundoff; A, how much the recursions amplify \
             a relative error of h, from the reference's h: column \"bound\" gives the latter)"
        ),
    }
    if storage != Storage::F32 {
        println!(
            "{storage} storage: only the tanh RNN's cases with the analytic inversion (and BP) \
             run; the GRU and the jacobian inversion need f32 storage"
        );
    }
    let rows = run_checks(gpu.as_mut(), &mut CpuBackend::new(), storage, args.seed)?;
    let width = rows.iter().map(|r| r.case.name.len()).max().unwrap_or(0);
    print!("{:width$}", "case");
    for n in COLUMNS {
        print!(" {n:>9}");
    }
    if storage != Storage::F32 {
        print!(" {:>9}", "bound");
    }
    println!("  result");
    let mut failed = 0;
    for row in &rows {
        print!("{:width$}", row.case.name);
        let mut ok = true;
        // A quantity that has no column would go unchecked: count it as a failure.
        ok &= row
            .errors
            .iter()
            .all(|(m, _)| COLUMNS.contains(&column_of(m)));
        for n in COLUMNS {
            match row.errors.iter().find(|(m, _)| column_of(m) == n) {
                Some((_, e)) => {
                    ok &= *e <= storage_bound(storage, n, row.amplification);
                    print!(" {e:>9.1e}");
                }
                None => print!(" {:>9}", "-"),
            }
        }
        if storage != Storage::F32 {
            print!(" {:>9.1e}", storage_bound(storage, "", row.amplification));
        }
        println!("  {}", if ok { "ok" } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        bail!("{failed} of {} cases exceed their bound", rows.len());
    }
    println!("all {} cases pass", rows.len());
    Ok(())
}
