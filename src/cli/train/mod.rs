//! `tpri train`: a training run on any task, with TP-RI or BP, in a run directory.
//!
//! Settings come in layers: a preset (or the defaults), then `--config FILE.toml`, then
//! the flags; the effective result is saved as the run's `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use tpri::config::{
    Inversion, Loss, Method, OptimizerKind, Preconditioner, Solver, TargetMode, TpGrad,
};
use tpri::figures::draw;
use tpri::init::Init;
use tpri::model::CellKind;
use tpri::presets::{preset, DEFAULT_CIFAR_DIR, DEFAULT_PIXEL_DIR, DEFAULT_PTB_DIR};
use tpri::run_dir::RunDir;
use tpri::tasks::{EvalSplit, PixelDataset, TaskSpec};
use tpri::train::{RunConfig, Session};

use super::{open_backend, BackendArgs};

mod console;
mod task_flags;
mod unread;

use console::{describe, Console};
pub(crate) use console::{warn, Out};
use task_flags::task_from_flags;
use unread::unread_flags;

/// The tasks of docs/ALGORITHM.md §6.
#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
pub enum TaskName {
    /// Classify which two bits were shown at two marked times among distractors.
    TemporalOrder,
    /// Regress the mean of the two values marked in a sequence.
    Adding,
    /// Pixel-by-pixel images: an MNIST-layout directory of IDX files, or CIFAR-10
    /// (--dataset).
    Pixel,
    /// Next-word prediction on a Penn Treebank-layout corpus, a head at every step.
    Lm,
}

/// The default a flag of `tpri train` falls back to when neither `--preset` nor
/// `--config` sets it.
fn defaults() -> RunConfig {
    RunConfig::default()
}

/// Flags of `tpri train`. Every setting is optional: unset ones come from `--config`,
/// then `--preset`, then the defaults (what each flag's help shows).
#[derive(Args, Debug, Default, Clone)]
pub struct TrainArgs {
    /// Start from a published setting (see `tpri presets`) [default: none, the defaults
    /// shown here].
    #[arg(long)]
    pub preset: Option<String>,
    /// A TOML file with any subset of the run's settings (the layout of a run's
    /// config.toml), applied over the preset [default: none].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where the run's config, logs, checkpoints and summary go [default: runs/NAME, or
    /// runs/NAME-2, -3, … when taken].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its saved
    /// settings (only --iterations and the backend flags may be given with it).
    #[arg(long, conflicts_with_all = ["preset", "config", "run_dir"])]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum, help = help("The task (docs/ALGORITHM.md §6)", task_name(&defaults().task)))]
    pub task: Option<TaskName>,
    /// Sequence length T of the synthetic tasks (at least 10) and the language model
    /// [default: 30 for adding, 60 for temporal order, 64 for the language model].
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Which files the pixel task reads (docs/ALGORITHM.md §6); naming another dataset
    /// than the preset's or config's starts the pixel task from that dataset's defaults
    /// [default: mnist].
    #[arg(long, value_enum)]
    pub dataset: Option<PixelDataset>,
    #[arg(long, visible_alias = "data", help = help(
        "Directory of the task's files: train-/t10k- images and labels (pixel task, mnist), CIFAR-10's binary version, data_batch_1.bin … data_batch_5.bin and test_batch.bin (pixel task, cifar10), or ptb.train.txt and ptb.test.txt (lm task)",
        format!("{DEFAULT_PIXEL_DIR} for mnist, {DEFAULT_CIFAR_DIR} for cifar10, {DEFAULT_PTB_DIR} for lm"),
    ))]
    pub data_dir: Option<PathBuf>,
    /// The most words the vocabulary holds, <unk> included: the head's size q (lm task)
    /// [default: 10000].
    #[arg(long)]
    pub vocab: Option<usize>,
    /// Size e of the word embedding, the input size p (lm task) [default: 1024].
    #[arg(long)]
    pub embedding_dim: Option<usize>,
    /// Train the embedding table E [V, e] as a parameter (`embed.weight`), from the table
    /// the frozen runs use; every method's gradient for it is the one flowing into the
    /// inputs (docs/ALGORITHM.md §13). `--train-embedding false` freezes it again (lm task)
    /// [default: frozen, as published].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub train_embedding: Option<bool>,
    /// Train on the first N tokens of ptb.train.txt only (lm task; the published setting
    /// takes 40000) [default: all].
    #[arg(long)]
    pub train_tokens: Option<usize>,
    /// Which file the held-out windows come from (lm task) [default: test].
    #[arg(long, value_enum)]
    pub eval_split: Option<EvalSplit>,
    /// Pixels per step k (pixel task; T = 784 / k, or 3072 / k for cifar10) [default: 1].
    #[arg(long)]
    pub chunk: Option<usize>,
    /// Standardize pixels per channel (pixel task): mnist with the training pixels' mean
    /// and deviation, cifar10 with the published per-channel constants [default: false
    /// for mnist, true for cifar10].
    #[arg(long)]
    pub standardize: Option<bool>,
    /// A fixed seeded permutation of the pixels (pixel task) [default: false].
    #[arg(long)]
    pub permuted: Option<bool>,
    /// Standardize pixels with this mean and standard deviation (of pixels in [0, 1])
    /// instead of the training set's, e.g. 0.2860,0.3202 as the published Fashion-MNIST
    /// experiment does (pixel task; implies --standardize true) [default: the training
    /// set's].
    #[arg(long, value_delimiter = ',', value_name = "MEAN,STD")]
    pub mean_std: Option<Vec<f64>>,
    #[arg(long, value_enum, help = help("The recurrent cell (docs/ALGORITHM.md §1, §5); the GRU takes --inversion jacobian and --init pytorch unless told otherwise", name(defaults().cell)))]
    pub cell: Option<CellKind>,
    /// How the recurrent cell's tensors start: every weight matrix (each GRU gate block
    /// alone) orthogonal and biases zero, or PyTorch's uniform ±1/√d; the head is
    /// orthogonal with a zero bias either way (docs/ALGORITHM.md §1) [default: orthogonal
    /// for the tanh RNN, pytorch for the GRU].
    #[arg(long, value_enum)]
    pub init: Option<Init>,
    #[arg(long, help = help("Hidden size d", defaults().hidden))]
    pub hidden: Option<usize>,
    #[arg(long, help = help("Sequences per batch B", defaults().batch_size))]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum, help = help("How the recurrent weights are trained: TP-RI (docs/ALGORITHM.md §2), BPTT (§3) or DTP with a learned reverse layer (§14)", name(defaults().hyper.method)))]
    pub method: Option<Method>,
    #[arg(long, value_enum, help = help("Target update rule of the backward sweep (docs/ALGORITHM.md §2, step 5)", name(defaults().hyper.tp.target_mode)))]
    pub target_mode: Option<TargetMode>,
    #[arg(long, help = help("Target step γ_h of the last target v_T = h_T − γ_h ∇ℓ (docs/ALGORITHM.md §2)", defaults().hyper.tp.lr_target))]
    pub lr_target: Option<f64>,
    #[arg(long, help = help("Regularization r > 0 of the inversion (docs/ALGORITHM.md §2, §4, §5)", defaults().hyper.tp.reg))]
    pub reg: Option<f64>,
    #[arg(long, value_enum, help = help("How the surrogate loss is differentiated (docs/ALGORITHM.md §2, step 6)", name(defaults().hyper.tp.tp_grad)))]
    pub tp_grad: Option<TpGrad>,
    /// Closed form through P (tanh RNN, docs/ALGORITHM.md §2), per-step CG on Jacobian
    /// products (any cell, §5), or the published GRU inversion through one P_g per gate
    /// (GRU, §5) [default: analytic for the tanh RNN, jacobian for the GRU].
    #[arg(long, value_enum)]
    pub inversion: Option<Inversion>,
    #[arg(long, value_enum, help = help("How P = (WᵀW + rI)⁻¹Wᵀ is applied in the analytic inversion (docs/ALGORITHM.md §4), or how the per-gate inversion forms its P_g (§5)", name(defaults().hyper.tp.solver)))]
    pub solver: Option<Solver>,
    #[arg(long, help = super::cg_tol_help())]
    pub cg_tol: Option<f64>,
    #[arg(long, help = help("Cap on CG iterations; a solve that has not reached --cg-tol by then is an error (docs/ALGORITHM.md §4)", defaults().hyper.tp.cg_max_iter))]
    pub cg_max_iter: Option<usize>,
    #[arg(long, value_enum, help = help("Preconditioner of the jacobian inversion's per-step CG: jacobi, 1 / (diag(JᵀJ) + r), none, plain CG, or auto, jacobi for the GRU and none for the tanh RNN; the same solution to the tolerance, in fewer iterations with jacobi on a trained GRU (docs/ALGORITHM.md §5)", name(defaults().hyper.tp.precondition)))]
    pub precondition: Option<Preconditioner>,
    #[arg(long, help = help("DTP: learning rate of the reverse layer's own optimizer step (docs/ALGORITHM.md §14)", defaults().hyper.dtp.lr_reverse))]
    pub lr_reverse: Option<f64>,
    #[arg(long, help = help("DTP: standard deviation σ of the noise of the reverse layer's reconstruction loss (docs/ALGORITHM.md §14)", defaults().hyper.dtp.noise))]
    pub noise: Option<f64>,
    #[arg(long, value_enum, help = help("The optimizer of every parameter", name(defaults().hyper.opt.kind)))]
    pub optimizer: Option<OptimizerKind>,
    #[arg(long, help = help("Learning rate γ_θ of the parameters", defaults().hyper.opt.lr))]
    pub lr: Option<f64>,
    #[arg(
        long,
        help = "Learning rate of the head's parameters (V, c), where it should differ from --lr (docs/ALGORITHM.md §8) [default: --lr, as published]"
    )]
    pub lr_head: Option<f64>,
    #[arg(
        long,
        value_name = "MAX",
        help = "Scale each step's gradient down to Euclidean norm MAX where it is larger, as PyTorch's clip_grad_norm_ (docs/ALGORITHM.md §8) [default: never, as published]"
    )]
    pub clip_norm: Option<f64>,
    #[arg(long, help = help("Momentum of the Nesterov optimizer", defaults().hyper.opt.momentum))]
    pub momentum: Option<f64>,
    #[arg(long, help = help("Training iterations in all (with --resume: the new total)", defaults().iterations))]
    pub iterations: Option<u64>,
    #[arg(long, help = help("Evaluate on the held-out set every this many iterations (and at the end)", defaults().eval_every))]
    pub eval_every: Option<u64>,
    #[arg(long, help = help("Log the training loss and diagnostics every this many iterations (a GPU waits for its work then)", defaults().log_every))]
    pub log_every: Option<u64>,
    #[arg(long, help = help("Write a checkpoint every this many iterations (and at the end)", defaults().checkpoint_every))]
    pub checkpoint_every: Option<u64>,
    #[arg(long, help = help("Held-out sequences (synthetic tasks; pixel tasks use at most this many test images)", defaults().eval_size))]
    pub eval_size: Option<usize>,
    #[arg(long, help = help("Seeds the initialisation and the data", defaults().seed))]
    pub seed: Option<u64>,
    /// At each evaluation, compare the method's gradient of the cell's tensors with BPTT's
    /// on the first held-out batch: cosine and length ratio into alignment.csv (TP, DTP;
    /// docs/ALGORITHM.md §10) [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub alignment: Option<bool>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// `what`, then the default.
fn help(what: &str, default: impl std::fmt::Display) -> String {
    format!("{what} [default: {default}]")
}

/// How `value` is written on the command line.
fn name(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_owned())
}

/// How `task`'s kind is written on the command line.
fn task_name(task: &TaskSpec) -> String {
    name(match task {
        TaskSpec::TemporalOrder { .. } => TaskName::TemporalOrder,
        TaskSpec::Adding { .. } => TaskName::Adding,
        TaskSpec::Pixel { .. } => TaskName::Pixel,
        TaskSpec::Lm { .. } => TaskName::Lm,
    })
}

/// Runs `tpri train`. Every check (flags, settings, resume compatibility, data, sizes, the
/// backend's own checks) comes before the run directory is touched, so a refused command
/// changes nothing there.
pub fn run(args: TrainArgs) -> Result<()> {
    if args.iterations == Some(0) {
        bail!("--iterations must be at least 1");
    }
    let out = Out::default();
    match &args.resume {
        Some(path) => {
            let extra = TrainArgs {
                resume: args.resume.clone(),
                iterations: args.iterations,
                backend: args.backend.clone(),
                ..TrainArgs::default()
            };
            if format!("{args:?}") != format!("{extra:?}") {
                bail!("--resume continues a run with its saved settings; only --iterations and the backend flags (--backend, --adapter, --storage, --steps-per-dispatch) may be given with it");
            }
            let (mut dir, saved, state) = RunDir::open(path)?;
            for note in dir.take_notes() {
                warn(&note);
            }
            let mut cfg = saved.clone();
            cfg.iterations = args.iterations.unwrap_or(cfg.iterations);
            let done = state.as_ref().map_or(0, |s| s.iteration);
            if cfg.iterations <= done {
                bail!(
                    "{} has completed {done} iterations{}: nothing to run (give --iterations \
                     above {done} to continue it)",
                    path.display(),
                    match args.iterations {
                        Some(n) => format!(", and --iterations {n} asks for no more"),
                        None => format!(" of its {}", saved.iterations),
                    }
                );
            }
            let mut backend = open_backend(&args.backend)?;
            let session = Session::prepare(backend.as_mut(), &cfg, state)?;
            dir.resume(&cfg, (done > 0).then_some(done))?;
            for note in dir.take_notes() {
                warn(&note);
            }
            if done > 0 {
                out.line(&format!(
                    "resuming {} from iteration {done}",
                    path.display()
                ));
            } else {
                out.line(&format!(
                    "{} has no checkpoint yet: starting it again",
                    path.display()
                ));
            }
            train_in(&out, dir, &cfg, session)
        }
        None => {
            let cfg = resolve(&args)?;
            for line in unread_flags(&args, &cfg) {
                warn(&line);
            }
            let name = args.preset.clone().unwrap_or_else(|| default_name(&cfg));
            let path = args.run_dir.clone().unwrap_or_else(|| fresh_dir(&name));
            RunDir::check_new(&path)?;
            let mut backend = open_backend(&args.backend)?;
            let session = Session::prepare(backend.as_mut(), &cfg, None)?;
            let mut dir = RunDir::create(&path, &cfg)?;
            for note in dir.take_notes() {
                warn(&note);
            }
            train_in(&out, dir, &cfg, session)
        }
    }
}

/// Trains `session` into `dir`, then writes the summary and the figures.
fn train_in(out: &Out, mut dir: RunDir, cfg: &RunConfig, session: Session) -> Result<()> {
    out.line(&format!(
        "training with {} on {}; run directory {}",
        method_name(cfg.hyper.method),
        session.backend_name(),
        dir.file("").display()
    ));
    let mut console = Console::new(out, &mut dir, cfg, session.first_iteration() - 1);
    let result = session.run(&mut console);
    console.finish();
    let summary = result?;
    dir.write_summary(&summary)?;
    let label = default_name(cfg);
    draw(
        &[(label, dir.path().to_path_buf())],
        dir.path(),
        cfg.task.loss() == Loss::Mse,
    )?;
    out.line(&format!(
        "done: {} iterations in {:.1} s ({:.2} ms an iteration, evaluations included; a step's median host time {:.2} ms: {}); {}",
        summary.iterations,
        summary.wall_seconds,
        summary.wall_seconds * 1e3 / summary.iterations.max(1) as f64,
        summary.median_step_seconds * 1e3,
        if summary.backend.starts_with("gpu") {
            "mostly submission, as the device runs asynchronously; `tpri bench` times the device"
        } else {
            "the whole step"
        },
        describe(&summary.last, cfg.hyper.loss.every_step())
    ));
    Ok(())
}

/// The effective configuration: preset or defaults, then the file, then the flags.
pub fn resolve(args: &TrainArgs) -> Result<RunConfig> {
    let mut cfg = match &args.preset {
        Some(name) => preset(name)?,
        None => RunConfig::default(),
    };
    if let Some(path) = &args.config {
        cfg = overlay_file(&cfg, path)?;
    }
    cfg.task = task_from_flags(&cfg.task, args)?;
    // The task decides the loss, unless the config file names one (then
    // `RunConfig::validate` refuses a loss the task cannot take).
    if !args.config.as_deref().is_some_and(file_sets_loss) {
        cfg.hyper.loss = cfg.task.loss();
    }
    if let Some(cell) = args.cell {
        if cell != cfg.cell {
            cfg.hyper.tp.inversion = Inversion::default_for(cell);
            cfg.init = None;
        }
        cfg.cell = cell;
    }
    if args.init.is_some() {
        cfg.init = args.init;
    }
    let h = &mut cfg.hyper;
    set(&mut h.tp.inversion, args.inversion);
    set(&mut h.method, args.method);
    set(&mut h.tp.target_mode, args.target_mode);
    set(&mut h.tp.lr_target, args.lr_target);
    set(&mut h.tp.reg, args.reg);
    set(&mut h.tp.tp_grad, args.tp_grad);
    set(&mut h.tp.solver, args.solver);
    set(&mut h.tp.cg_max_iter, args.cg_max_iter);
    set(&mut h.tp.precondition, args.precondition);
    if args.cg_tol.is_some() {
        h.tp.cg_tol = args.cg_tol;
    }
    set(&mut h.dtp.lr_reverse, args.lr_reverse);
    set(&mut h.dtp.noise, args.noise);
    set(&mut h.opt.kind, args.optimizer);
    set(&mut h.opt.lr, args.lr);
    if args.lr_head.is_some() {
        h.opt.lr_head = args.lr_head;
    }
    if args.clip_norm.is_some() {
        h.opt.clip_norm = args.clip_norm;
    }
    set(&mut h.opt.momentum, args.momentum);
    set(&mut cfg.hidden, args.hidden);
    set(&mut cfg.batch_size, args.batch_size);
    set(&mut cfg.iterations, args.iterations);
    set(&mut cfg.eval_every, args.eval_every);
    set(&mut cfg.log_every, args.log_every);
    set(&mut cfg.checkpoint_every, args.checkpoint_every);
    set(&mut cfg.eval_size, args.eval_size);
    set(&mut cfg.seed, args.seed);
    set(&mut cfg.alignment, args.alignment);
    cfg.validate()?;
    Ok(cfg)
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Deep-merges a (partial) TOML file over `base`. A task of another kind replaces the
/// base task whole rather than mixing their fields.
/// Whether the config file at `path` sets `[hyper] loss` (a file that cannot be read
/// says no: `overlay_file` reports it).
fn file_sets_loss(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .is_some_and(|file| file.get("hyper").and_then(|h| h.get("loss")).is_some())
}

fn overlay_file(base: &RunConfig, path: &Path) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: toml::Table = toml::from_str(&text)
        .with_context(|| format!("malformed config file {}", path.display()))?;
    let mut merged = toml::Table::try_from(base)?;
    let same_task = file
        .get("task")
        .and_then(|t| t.get("name"))
        .is_none_or(|n| merged.get("task").and_then(|t| t.get("name")) == Some(n));
    if !same_task {
        merged.remove("task");
    }
    merge(&mut merged, file);
    let cfg: RunConfig = merged
        .try_into()
        .with_context(|| format!("invalid settings in config file {}", path.display()))?;
    Ok(cfg)
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// `runs/NAME`, or the first of `runs/NAME-2`, `runs/NAME-3`, … that is free (missing or
/// empty), so
/// the same command can be run again.
fn fresh_dir(name: &str) -> PathBuf {
    let taken = |p: &Path| {
        p.exists() && std::fs::read_dir(p).map_or(true, |mut entries| entries.next().is_some())
    };
    let first = Path::new("runs").join(name);
    if !taken(&first) {
        return first;
    }
    (2..)
        .map(|i| Path::new("runs").join(format!("{name}-{i}")))
        .find(|p| !taken(p))
        .expect("an unbounded range yields a free name")
}

fn default_name(cfg: &RunConfig) -> String {
    let task = match &cfg.task {
        TaskSpec::TemporalOrder { seq_len } => format!("temporal-order-{seq_len}"),
        TaskSpec::Adding { seq_len } => format!("adding-{seq_len}"),
        TaskSpec::Pixel {
            dataset,
            chunk,
            permuted,
            ..
        } => format!(
            "pixel{}{}-k{chunk}",
            match dataset {
                PixelDataset::Mnist => "",
                PixelDataset::Cifar10 => "-cifar10",
            },
            if *permuted { "-permuted" } else { "" }
        ),
        TaskSpec::Lm { seq_len, .. } => format!("lm-{seq_len}"),
    };
    let method = match cfg.hyper.method {
        Method::Tp => "tp",
        Method::Bp => "bp",
        Method::Dtp => "dtp",
    };
    let cell = match cfg.cell {
        CellKind::Tanh => "",
        CellKind::Gru => "-gru",
    };
    format!("{task}{cell}-{method}-seed{}", cfg.seed)
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Tp => "TP-RI",
        Method::Bp => "BPTT",
        Method::Dtp => "DTP",
    }
}
