//! `tpri export`: a run's parameters (or a parameter file) under PyTorch's names, or back.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use tpri::model::Params;
use tpri::run_dir::find_checkpoint;
use tpri::tensor_file::{
    params_from_tensors, read_tensors, save_params_as, ParamNames, CHECKPOINT_PARAMS_PREFIX,
};
use tpri::train::RunConfig;

/// The naming `tpri export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Naming {
    /// PyTorch's: `rnn.weight_hh_l0`, `rnn.weight_ih_l0`, `rnn.bias_ih_l0`,
    /// `rnn.bias_hh_l0` (`gru.*` for a GRU), `head.weight`, `head.bias` (and a trained
    /// embedding table's `embed.weight`).
    Torch,
    /// tpri's: `rnn.w_hh`, `rnn.w_ih`, `rnn.b_ih`, `rnn.b_hh` (`gru.*` for a GRU), `head.w`, `head.b`
    /// (and a trained embedding table's `embed.weight`).
    Tpri,
}

/// Flags of `tpri export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (its checkpoint.safetensors), a checkpoint, or a parameter file
    /// under either naming.
    input: PathBuf,
    /// Where to write the parameters (f64 safetensors).
    #[arg(long)]
    out: PathBuf,
    /// The names to write them under.
    #[arg(long, value_enum, default_value = "torch")]
    to: Naming,
}

/// Runs `tpri export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let params = read(&args.input)?;
    let names = match args.to {
        Naming::Torch => ParamNames::Torch,
        Naming::Tpri => ParamNames::Tpri,
    };
    save_params_as(&args.out, &params, names)?;
    let d = params.dims();
    println!(
        "wrote {} ({:?} cell, p = {}, d = {}, q = {}, {} names)",
        args.out.display(),
        params.cell,
        d.input,
        d.hidden,
        d.output,
        args.to
            .to_possible_value()
            .expect("no variant is skipped")
            .get_name()
    );
    Ok(())
}

/// The parameters of a run directory (its newest usable checkpoint, checksum verified,
/// the previous one where the newest is missing or damaged), a checkpoint or a parameter
/// file.
fn read(input: &Path) -> Result<Params> {
    if input.is_dir() {
        let cfg_path = input.join("config.toml");
        if !cfg_path.is_file() {
            bail!(
                "{} has no checkpoint.safetensors to export: it is not a run directory (no config.toml)",
                input.display()
            );
        }
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("cannot read {}", cfg_path.display()))?;
        let cfg: RunConfig =
            toml::from_str(&text).with_context(|| format!("malformed {}", cfg_path.display()))?;
        let found = find_checkpoint(input, &cfg)?;
        for note in &found.notes {
            eprintln!("note: {note}");
        }
        let Some(loaded) = found.loaded else {
            bail!("{} has no checkpoint.safetensors yet", input.display());
        };
        return Ok(loaded.state.params);
    }
    let tensors = read_tensors(input)?;
    let checkpoint = tensors
        .keys()
        .any(|k| k.starts_with(CHECKPOINT_PARAMS_PREFIX));
    if checkpoint {
        return params_from_tensors(&tensors, CHECKPOINT_PARAMS_PREFIX, input);
    }
    tpri::tensor_file::params_from_any_tensors(&tensors, input)
}
