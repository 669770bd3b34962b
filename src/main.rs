//! The `tpri` command line: a thin layer over the library (see `src/cli/`).

mod cli;

use std::io::Write;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        // Not eprintln!, which panics when stderr is a closed pipe.
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        std::process::exit(1);
    }
}
