//! `tpri trace`: one iteration at given parameters on one batch, every intermediate saved.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use tpri::config::{DtpConfig, Loss, Method};
use tpri::limits::Workload;
use tpri::plan::Device;
use tpri::tensor_file::{load_batch, load_params, save_trace};

use super::{
    errors, hyper, no_optimizer, open_backend, BackendArgs, BackendChoice, GpuArgs, TpArgs,
};

/// Flags of `tpri trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Parameters: rnn.w_hh [d,d], rnn.w_ih [d,p], rnn.b_ih [d], rnn.b_hh [d], head.w [q,d],
    /// head.b [q] (a single rnn.b, as earlier versions wrote, reads as rnn.b_ih), and for
    /// --method dtp the reverse layer dtp.w_rev [d,d], dtp.b_rev [d];
    /// or for a GRU gru.w_hh [3d,d], gru.w_ih [3d,p], gru.b_ih [3d], gru.b_hh [3d] and the
    /// head (gates r, z, n, as PyTorch stores them); or PyTorch's names, as `tpri export`
    /// writes them (rnn.weight_hh_l0, …, head.weight, head.bias); with --train-embedding
    /// also the embedding table embed.weight [V,p].
    #[arg(long)]
    params: PathBuf,
    /// Batch: x [B,T,p]; y [B] integer labels (ce), [B,q] floats (mse) or [B,T] integer
    /// labels, one per step (ce-seq); with --train-embedding the token ids tokens [B,T]
    /// (`tpri batch` writes them for the lm task).
    #[arg(long)]
    batch: PathBuf,
    /// The loss of the head, or of the heads at every step (ce-seq) (docs/ALGORITHM.md §1,
    /// §13); it must match the batch's y.
    #[arg(long, value_enum)]
    loss: Loss,
    /// Which iteration to trace: TP-RI (docs/ALGORITHM.md §2), BPTT (§3) or DTP (§14).
    #[arg(long, value_enum)]
    method: Method,
    #[command(flatten)]
    tp: TpArgs,
    /// DTP: standard deviation σ of the noise of the reverse layer's reconstruction loss
    /// (docs/ALGORITHM.md §14).
    #[arg(long, default_value_t = DtpConfig::default().noise)]
    noise: f64,
    /// DTP: the seed of the noise stream; the trace draws the noise of a run's first
    /// iteration (docs/ALGORITHM.md §14).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Trace the language model with a trained embedding table (docs/ALGORITHM.md §13):
    /// the parameters hold embed.weight [V,p], the batch its token ids tokens [B,T], the
    /// inputs are gathered from the table and the trace holds its gradient
    /// grad.embed.weight (ce-seq only).
    #[arg(long)]
    train_embedding: bool,
    /// Which backend computes the trace.
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendChoice,
    /// Adapter name (substring) or index from `tpri devices`, for the GPU backend
    /// [default: the best adapter].
    #[arg(long)]
    adapter: Option<String>,
    #[command(flatten)]
    gpu: GpuArgs,
    /// Where to write h, loss, grad.* (for dtp also grad.dtp.w_rev, grad.dtp.b_rev, with
    /// --train-embedding grad.embed.weight), for
    /// tp and dtp v, for tp, where formed, p_inv (P) or p_inv.r, p_inv.z, p_inv.n (the
    /// per-gate inversion's P_g), and for ce-seq the per-step losses step_losses (f64
    /// safetensors).
    #[arg(long)]
    out: PathBuf,
}

/// Runs `tpri trace`; the library's names of tensors and settings come back as the
/// file's tensors and the flags (`errors::trace_names`).
pub fn run(args: TraceArgs) -> Result<()> {
    run_trace(args).map_err(|e| {
        let names = errors::trace_names();
        let pairs: Vec<(&str, &str)> = names
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        errors::for_cli(e, &pairs)
    })
}

fn run_trace(args: TraceArgs) -> Result<()> {
    let params = load_params(&args.params)?;
    let batch = load_batch(&args.batch, params.dims())?;
    check_train_embedding(&args, params.embedding.is_some())?;
    let mut hyper = hyper(
        args.method,
        args.loss,
        &args.tp,
        params.cell,
        no_optimizer(),
    );
    hyper.dtp.noise = args.noise;
    hyper.dtp.noise_seed = args.seed;
    // Everything checkable before a device is opened: tensors, values, settings (those of
    // the device asked for; with `auto` the chosen backend checks its own when it runs).
    let device = match args.backend {
        BackendChoice::Gpu => args.gpu.storage.device(),
        BackendChoice::Cpu | BackendChoice::Auto => Device::Cpu,
    };
    tpri::validate::check_run(&params, &batch, &hyper, device)?;
    let mut backend = open_backend(&BackendArgs {
        backend: args.backend,
        adapter: args.adapter.clone(),
        gpu: args.gpu.clone(),
    })?;
    let (t, b) = (batch.seq_len(), batch.batch_size());
    backend.check_workload(
        &Workload::new(params.cell, params.dims(), t, b, &hyper)
            .with_embedding(params.vocabulary()),
    )?;
    let trace = backend
        .trace(&params, &batch, &hyper)
        .context("the iteration failed")?;
    let mut meta = HashMap::from([
        ("backend".to_string(), backend.name()),
        ("hyper".to_string(), serde_json::to_string(&hyper)?),
    ]);
    if args.method == Method::Dtp {
        meta.insert("noise_seed".into(), args.seed.to_string());
    }
    if let Some(cg) = trace.cg {
        meta.insert("cg_iterations".into(), cg.iterations.to_string());
        meta.insert("cg_residual".into(), format!("{:e}", cg.residual));
        meta.insert("cg_solves".into(), cg.solves.to_string());
        meta.insert(
            "cg_iterations_total".into(),
            cg.total_iterations.to_string(),
        );
    }
    save_trace(&args.out, &trace, meta)?;
    let cg = trace
        .cg
        .map(|c| {
            format!(
                ", CG {} iterations, residual {:.2e} ({} solves, {} iterations in all)",
                c.iterations, c.residual, c.solves, c.total_iterations
            )
        })
        .unwrap_or_default();
    println!("loss {:.10e}{cg}; wrote {}", trace.loss, args.out.display());
    Ok(())
}

/// Checks `--train-embedding` against the loss and the parameters: a trained table is the
/// language model's (`--loss ce-seq`), and it is in the parameters file exactly when the
/// flag asks for it.
fn check_train_embedding(args: &TraceArgs, in_params: bool) -> Result<()> {
    let file = args.params.display();
    match (args.train_embedding, in_params) {
        (true, _) if args.loss != Loss::CrossEntropySeq => bail!(
            "--train-embedding applies to the language model (--loss ce-seq) only: the other \
             tasks have no embedding table"
        ),
        (true, false) => {
            bail!("--train-embedding needs the embedding table embed.weight [V, p] in {file}")
        }
        (false, true) => bail!(
            "{file} holds a trained embedding table (embed.weight): pass --train-embedding to \
             trace it (the batch then needs its token ids, tokens [B, T])"
        ),
        _ => Ok(()),
    }
}
