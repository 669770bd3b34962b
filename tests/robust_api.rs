//! Issue 14, classes 4, 5 and 7 at the library: every size checked before anything is
//! allocated (`tpri::limits`), nonsense inputs refused with a typed error naming the
//! field or tensor, both backends validating alike, and no public function panicking on
//! any input (the property tests at the end: the library's API with the CPU backend, then
//! the GPU backend with random options; the kernels' own are tests/robust_kernels.rs and
//! tests/robust_gpu.rs).

mod gpu_support;
mod nasty;
mod support;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use tpri::config::{
    Hyper, Inversion, Loss, Method, OptimizerConfig, OptimizerKind, Preconditioner, Solver,
    TargetMode, TpConfig, TpGrad,
};
use tpri::gpu::{
    AdapterChoice, GpuOptions, LanesPerUnit, SequencesPerWorkgroup, StepsPerDispatch, Storage,
};
use tpri::limits::{GpuLimits, Workload};
use tpri::model::{CellKind, Params};
use tpri::optimizer_state::OptState;
use tpri::plan::{Device, Plan, Sizes};
use tpri::prelude::*;
use tpri::tasks::idx::{read_images, read_labels};
use tpri::tensor_file::{load_batch, load_params, read_tensors};
use tpri::train::check_run;
use tpri::Error;

use nasty::{mostly, nasty, no_panics, no_panics_within, pick, random_batch, random_params, size};
use support::dims;

fn corpus(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(path)
}

/// The error and its message, or a panic naming what should have failed.
fn failure<T>(what: &str, r: anyhow::Result<T>) -> (String, anyhow::Error) {
    match r {
        Ok(_) => panic!("{what} should fail"),
        Err(e) => (format!("{e:#}"), e),
    }
}

/// A good problem: tanh RNN p = 2, d = 3, q = 2; T = 4, B = 3, labels.
fn good() -> (Params, Batch, Hyper) {
    let params = Params::init(dims(2, 3, 2), 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = (0..4)
        .map(|_| DMatrix::from_fn(3, 2, |_, _| rng.random_range(-1.0..1.0)))
        .collect();
    let batch = Batch {
        tokens: None,
        x,
        y: Targets::Labels(vec![0, 1, 1]),
    };
    (params, batch, Hyper::default())
}

// ---- class 4: sizes ----

fn run_config(hidden: usize, seq_len: usize, batch: usize, eval: usize) -> RunConfig {
    RunConfig {
        task: TaskSpec::Adding { seq_len },
        hidden,
        batch_size: batch,
        eval_size: eval,
        ..RunConfig::default()
    }
}

/// The issue's sizes: each refused at once by the run's validation, with the estimate or
/// the overflow in the message, instead of a segfault, a "capacity overflow" panic or an
/// aborted allocation.
#[test]
fn the_issues_sizes_are_refused_before_any_allocation() {
    let cases = [
        (run_config(4_294_967_296, 30, 20, 100), "64 bits"),
        (run_config(3_037_000_500, 30, 20, 100), "64 bits"),
        (run_config(32, usize::MAX, 20, 100), "64 bits"),
        (run_config(100_000, 30, 20, 100), "parameters"),
        (run_config(32, 30, 1_000_000_000, 100), "batch"),
        (run_config(32, 1_000_000_000, 20, 100), "evaluation set"),
        (run_config(32, 30, 20, 1_000_000_000), "evaluation set"),
    ];
    for (cfg, needle) in cases {
        let start = Instant::now();
        let (msg, err) = failure("the sizes", cfg.validate());
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::DeviceLimit { .. })),
            "{msg}"
        );
        assert!(msg.contains(needle), "{needle:?} missing: {msg}");
        assert!(start.elapsed() < Duration::from_secs(1), "{msg}");
    }
    // Zero sizes name the setting.
    let (msg, _) = failure("seq_len 0", run_config(32, 0, 20, 100).validate());
    assert!(msg.contains("TaskSpec::seq_len"), "{msg}");
    let pixel = TaskSpec::Pixel {
        dir: "/nonexistent".into(),
        dataset: PixelDataset::Mnist,
        chunk: 0,
        standardize: false,
        permuted: false,
        mean_std: None,
    };
    let (msg, _) = failure(
        "chunk 0",
        check_run(&pixel, CellKind::Tanh, 8, 4, 4, &Hyper::default()),
    );
    assert!(msg.contains("TaskSpec::Pixel::chunk"), "{msg}");
    assert!(run_config(32, 30, 20, 100).validate().is_ok());
}

fn workload(d: usize, t: usize, b: usize) -> Workload {
    Workload::new(CellKind::Tanh, dims(2, d, 1), t, b, &Hyper::default()).with_eval_size(100)
}

#[test]
fn zero_sizes_name_the_field() {
    let msg = workload(0, 30, 20).check_cpu().unwrap_err().to_string();
    assert!(msg.starts_with("Dims::hidden: the hidden size d"), "{msg}");
    let msg = workload(4, 30, 0).check_cpu().unwrap_err().to_string();
    assert!(msg.starts_with("Workload::batch"), "{msg}");
    let msg = workload(4, 0, 3).check_cpu().unwrap_err().to_string();
    assert!(msg.starts_with("Workload::steps"), "{msg}");
    for d in [dims(0, 3, 1), dims(2, 0, 1), dims(2, 3, 0)] {
        let (msg, err) = failure("zero dims", Params::init_of(CellKind::Gru, d, 0));
        assert!(
            matches!(err.downcast_ref::<Error>(), Some(Error::InvalidSetting { field, .. }) if field.starts_with("Dims::")),
            "{msg}"
        );
    }
}

#[test]
fn size_products_that_overflow_are_refused_not_wrapped() {
    for w in [
        workload(1 << 32, 30, 20),
        workload(3_037_000_500, 30, 20),
        workload(32, usize::MAX, 20),
        workload(32, 30, usize::MAX),
    ] {
        let err = w.check_cpu().unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<Error>(),
                Some(Error::DeviceLimit { needed: None, .. })
            ),
            "{w:?}: {err:#}"
        );
    }
    for d in [1usize << 32, 3_037_000_500, usize::MAX] {
        let (msg, _) = failure("huge d", Params::init_of(CellKind::Tanh, dims(2, d, 1), 0));
        assert!(msg.contains("address") || msg.contains("memory"), "{msg}");
    }
}

#[test]
fn estimates_grow_with_the_sizes_and_fit_small_problems() {
    let small = workload(32, 30, 20).check_cpu().unwrap();
    assert!(small.total() < 10 << 20, "{small}");
    let big = workload(100_000, 30, 20).cpu_estimate().unwrap();
    assert!(big.parameters > 250 << 30, "{big}");
    let gpu = GpuLimits {
        max_hidden: 2048,
        max_buffer: 1 << 28,
        history_bytes: 4,
    };
    let start = Instant::now();
    let msg = workload(2049, 30, 20)
        .check_gpu(&gpu)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("2048") && start.elapsed() < Duration::from_millis(100),
        "{msg}"
    );
    let msg = workload(64, 1_000_000, 20)
        .check_gpu(&gpu)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("max_buffer_size"), "{msg}");
    assert!(workload(64, 30, 20).check_gpu(&gpu).is_ok());
    // The CPU backend's own check is the CPU estimate.
    let (msg, _) = failure(
        "d = 100000",
        CpuBackend::new().check_workload(&workload(100_000, 30, 20)),
    );
    assert!(
        msg.contains("MemAvailable") || msg.contains("64 bits"),
        "{msg}"
    );
}

/// `tpri trace` files whose tensors have a size of 0 (d = 0, p = 0) or a zero-size tensor
/// beside a huge dimension: refused from the shapes, before any allocation.
#[test]
fn zero_and_huge_tensor_shapes_are_refused_from_the_header() {
    for (file, needle) in [
        ("params/d0.safetensors", "rnn.w_hh"),
        ("params/p0.safetensors", "rnn.w_ih"),
        ("params/huge.safetensors", "rnn.w_hh"),
        ("params/w_ih_zero_rows_huge_p.safetensors", "rnn.w_ih"),
        ("params/torch_zero_huge.safetensors", "weight_ih_l0"),
    ] {
        let start = Instant::now();
        let (msg, err) = failure(file, load_params(&corpus(file)));
        assert!(msg.contains(needle), "{file}: {msg}");
        assert!(
            matches!(
                err.downcast_ref::<Error>(),
                Some(Error::ShapeMismatch { .. })
            ),
            "{file}: {msg}"
        );
        assert!(start.elapsed() < Duration::from_secs(1), "{file}");
    }
    for file in [
        "batch/b0.safetensors",
        "batch/x_zero_huge.safetensors",
        "batch/t_zero_huge.safetensors",
    ] {
        let (msg, _) = failure(file, load_batch(&corpus(file), dims(2, 3, 2)));
        assert!(
            msg.contains("tensor x") && msg.contains("at least 1"),
            "{file}: {msg}"
        );
    }
}

// ---- class 5: nonsense ----

#[test]
fn non_finite_values_and_empty_batches_are_refused_naming_the_tensor() {
    let (params, batch, hyper) = good();
    let mut inf = params.clone();
    inf.head_w[(1, 2)] = f64::INFINITY;
    let mut nan_x = batch.clone();
    nan_x.x[2][(1, 0)] = f64::NAN;
    let no_seqs = Batch {
        tokens: None,
        x: vec![DMatrix::zeros(0, 2); 4],
        y: Targets::Labels(vec![]),
    };
    let no_steps = Batch {
        tokens: None,
        x: vec![],
        y: batch.y.clone(),
    };
    let cases: [(&Params, &Batch, &str); 4] = [
        (&inf, &batch, "Params::head_w (head.w) holds inf"),
        (
            &params,
            &nan_x,
            "Batch::x holds NaN at step 3, sequence 1, input 0",
        ),
        (&params, &no_seqs, "B ≥ 1"),
        (&params, &no_steps, "T ≥ 1"),
    ];
    for (p, b, needle) in cases {
        let (msg, _) = failure(needle, CpuBackend::new().trace(p, b, &hyper));
        assert!(msg.contains(needle), "{msg}");
    }
    let mut cpu = CpuBackend::new();
    assert!(failure("inf load", cpu.load(&inf, None, &hyper))
        .0
        .contains("head.w"));
    cpu.load(&params, None, &hyper).unwrap();
    for (b, needle) in [(&nan_x, "Batch::x"), (&no_seqs, "B ≥ 1")] {
        assert!(failure("step", cpu.step(b)).0.contains(needle));
        assert!(failure("evaluate", cpu.evaluate(b)).0.contains(needle));
    }
    let mut inf_y = Batch {
        y: Targets::Values(DMatrix::zeros(3, 2)),
        ..batch.clone()
    };
    if let Targets::Values(v) = &mut inf_y.y {
        v[(0, 1)] = f64::NAN;
    }
    let mse = Hyper {
        loss: Loss::Mse,
        ..hyper.clone()
    };
    assert!(
        failure("nan y", CpuBackend::new().trace(&params, &inf_y, &mse))
            .0
            .contains("Batch::y holds NaN")
    );
}

#[test]
fn unknown_mixed_and_duplicate_tensors_are_refused() {
    for (file, needle) in [
        (
            "params/bhh.safetensors",
            "holds rnn.b beside rnn.b_ih or rnn.b_hh",
        ),
        ("params/junk.safetensors", "unknown tensor junk"),
        ("params/mixed.safetensors", "both rnn.* and gru.*"),
        ("params/dup.safetensors", "names tensor \"rnn.w_hh\" twice"),
        ("params/int_weights.safetensors", "must hold floats"),
        ("params/wrong_rank.safetensors", "must be matrices"),
        (
            "params/header_too_long.safetensors",
            "not a valid safetensors",
        ),
        (
            "params/shape_overflow.safetensors",
            "not a valid safetensors",
        ),
        ("params/empty.safetensors", "not a valid safetensors"),
    ] {
        let (msg, _) = failure(file, load_params(&corpus(file)));
        assert!(msg.contains(needle), "{file}: {msg}");
    }
    for (file, needle) in [
        ("batch/junk_tensor.safetensors", "unknown tensor junk"),
        ("batch/y_short.safetensors", "tensor y"),
        ("batch/negative_label.safetensors", "negative label -1"),
        ("batch/y_q_zero.safetensors", "tensor y"),
    ] {
        let (msg, _) = failure(file, load_batch(&corpus(file), dims(2, 3, 2)));
        assert!(msg.contains(needle), "{file}: {msg}");
    }
    for file in [
        "params/valid_tanh.safetensors",
        "params/valid_gru.safetensors",
        "params/valid_torch.safetensors",
    ] {
        load_params(&corpus(file)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn paths_that_are_not_files_are_named_for_what_they_are() {
    let dir = std::env::temp_dir().join(format!("tpri-robust-paths-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a_dir")).unwrap();
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let sym =
        |target: &Path, link: &str| std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
    sym(Path::new("/dev/zero"), "zero");
    sym(&dir.join("nowhere"), "dangling");
    sym(&dir.join("loop_b"), "loop_a");
    sym(&dir.join("loop_a"), "loop_b");
    let mut cases = vec![
        (dir.join("a_dir"), "a directory"),
        (dir.join("zero"), "a character device"),
        (dir.join("dangling"), "dangling symbolic link"),
        (dir.join("loop_a"), "loop of symbolic links"),
    ];
    if made.is_ok_and(|s| s.success()) {
        cases.push((fifo, "a FIFO"));
    }
    for (i, (path, kind)) in cases.into_iter().enumerate() {
        let start = Instant::now();
        for msg in [
            failure("images", read_images(&path)).0,
            failure("labels", read_labels(&path)).0,
            failure("tensors", read_tensors(&path)).0,
        ] {
            assert!(
                msg.contains(kind) && !msg.contains("missing"),
                "{kind}: {msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        assert!(start.elapsed() < Duration::from_secs(2), "{kind} blocked");
        // Through the pixel task's directory lookup too.
        let data = dir.join(format!("data-{i}"));
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink(&path, data.join("train-images-idx3-ubyte")).unwrap();
        std::os::unix::fs::symlink(&path, data.join("data_batch_1.bin")).unwrap();
        for dataset in [PixelDataset::Mnist, PixelDataset::Cifar10] {
            let options = PixelOptions {
                chunk: 1,
                standardize: false,
                permuted: false,
                mean_std: None,
                dataset,
            };
            let msg = format!("{:#}", PixelTask::load(&data, options, 0, 10).unwrap_err());
            assert!(
                msg.contains(kind) && !msg.contains("missing"),
                "{kind}: {msg}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_adapter_name_is_an_error() {
    for name in ["", "  "] {
        let err = name.parse::<AdapterChoice>().unwrap_err();
        assert!(matches!(err, Error::InvalidSetting { .. }), "{err}");
    }
    assert_eq!(
        "auto".parse::<AdapterChoice>().unwrap(),
        AdapterChoice::Auto
    );
}

// ---- class 7: the library API ----

/// Every tensor of the wrong shape: `load` refuses
/// them naming the field, where it used to accept them and panic in `step` or `trace`.
#[test]
fn cpu_load_refuses_malformed_parameters_naming_the_field() {
    let (good, batch, hyper) = good();
    type Edit = fn(&mut Params);
    let cases: [(&str, Edit); 6] = [
        ("Params::w_hh", |p| p.w_hh = DMatrix::zeros(3, 2)),
        ("Params::w_ih", |p| p.w_ih = DMatrix::zeros(2, 2)),
        ("Params::b", |p| p.b = DMatrix::zeros(4, 1)),
        ("Params::head_w", |p| p.head_w = DMatrix::zeros(2, 4)),
        ("Params::head_b", |p| p.head_b = DMatrix::zeros(2, 2)),
        ("Params::b_hh", |p| p.b_hh = DMatrix::zeros(2, 1)),
    ];
    for (field, edit) in cases {
        let mut p = good.clone();
        edit(&mut p);
        let mut cpu = CpuBackend::new();
        let (msg, err) = failure(field, cpu.load(&p, None, &hyper));
        assert!(msg.starts_with(field), "{field}: {msg}");
        assert!(
            matches!(
                err.downcast_ref::<Error>(),
                Some(Error::ShapeMismatch { .. })
            ),
            "{msg}"
        );
        // Nothing was loaded: the backend says so rather than running.
        assert!(cpu.step(&batch).is_err());
        let (msg, _) = failure(field, cpu.trace(&p, &batch, &hyper));
        assert!(msg.starts_with(field), "trace {field}: {msg}");
    }
}

#[test]
fn a_short_y_is_blamed_on_y() {
    let (params, mut batch, hyper) = good();
    batch.y = Targets::Labels(vec![0, 1]);
    let (msg, _) = failure("short y", CpuBackend::new().trace(&params, &batch, &hyper));
    assert!(
        msg.starts_with("Batch::y") && msg.contains("3 rows"),
        "{msg}"
    );
    batch.y = Targets::Values(DMatrix::zeros(2, 2));
    let mse = Hyper {
        loss: Loss::Mse,
        ..hyper
    };
    let (msg, _) = failure("short y", CpuBackend::new().trace(&params, &batch, &mse));
    assert!(msg.starts_with("Batch::y"), "{msg}");
}

/// The typed errors: kinds a program can match, messages naming API fields.
#[test]
fn errors_are_typed_and_name_api_fields() {
    let (params, batch, hyper) = good();
    let bad = |edit: fn(&mut Hyper)| {
        let mut h = hyper.clone();
        edit(&mut h);
        h
    };
    let cases: [(Hyper, &str); 6] = [
        (bad(|h| h.tp.reg = 0.0), "Hyper::tp.reg"),
        (bad(|h| h.opt.lr = f64::NAN), "Hyper::opt.lr"),
        (bad(|h| h.tp.cg_max_iter = 0), "Hyper::tp.cg_max_iter"),
        (bad(|h| h.opt.momentum = -1.0), "Hyper::opt.momentum"),
        (bad(|h| h.tp.cg_tol = Some(-1.0)), "Hyper::tp.cg_tol"),
        (bad(|h| h.loss = Loss::Mse), "Hyper::loss"),
    ];
    for (h, field) in cases {
        let (msg, err) = failure(field, CpuBackend::new().trace(&params, &batch, &h));
        match err.downcast_ref::<Error>() {
            Some(Error::InvalidSetting { field: f, .. }) => assert_eq!(f, field, "{msg}"),
            other => panic!("{field}: {other:?}"),
        }
        assert!(!msg.contains("--"), "a library message names a flag: {msg}");
    }
    // A solve that misses its tolerance carries its numbers.
    let tight = bad(|h| {
        h.tp.solver = Solver::Cg;
        h.tp.cg_max_iter = 1;
        h.tp.cg_tol = Some(1e-300);
    });
    let err = CpuBackend::new()
        .trace(&params, &batch, &tight)
        .unwrap_err();
    let cg = tpri::error::cg_error(&err).expect("NotConverged");
    assert_eq!(cg.max_iter, 1);
    assert!(format!("{err:#}").contains("Hyper::tp.cg_max_iter"));
    // A missing file is I/O, naming the path.
    let err = load_params(Path::new("/nonexistent/p.safetensors")).unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Io { path, .. }) if path == Path::new("/nonexistent/p.safetensors")),
        "{err:#}"
    );
    let err = load_params(&corpus("params/garbage.safetensors")).unwrap_err();
    assert!(
        matches!(err.downcast_ref::<Error>(), Some(Error::Format { .. })),
        "{err:#}"
    );
}

/// The GPU backend refuses d = 2049 from the sizes alone, at once (no 2049×2049 weights
/// are built first), and both backends refuse the same malformed parameters.
#[test]
fn gpu_refuses_like_the_cpu() {
    let ctx = gpu_support::ctx();
    let gpu = GpuBackend::new(ctx.clone());
    let start = Instant::now();
    let msg = gpu
        .check_workload(&workload(2049, 30, 20))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2048"), "{msg}");
    assert!(start.elapsed() < Duration::from_millis(200));
    let (good, batch, hyper) = good();
    let mut cases = Vec::new();
    for edit in 0..4 {
        let mut p = good.clone();
        match edit {
            0 => p.w_ih = DMatrix::zeros(2, 2),
            1 => p.b_hh = DMatrix::zeros(2, 1),
            2 => p.head_w[(0, 0)] = f64::NAN,
            _ => p.head_b = DMatrix::zeros(3, 1),
        }
        cases.push(p);
    }
    for p in &cases {
        let cpu_err = failure("cpu", CpuBackend::new().load(p, None, &hyper)).0;
        let gpu_err = failure("gpu", GpuBackend::new(ctx.clone()).load(p, None, &hyper)).0;
        assert_eq!(cpu_err, gpu_err);
        let cpu_err = failure("cpu", CpuBackend::new().trace(p, &batch, &hyper)).0;
        let gpu_err = failure("gpu", GpuBackend::new(ctx.clone()).trace(p, &batch, &hyper)).0;
        assert_eq!(cpu_err, gpu_err);
    }
}

// ---- no public function panics ----

fn random_hyper(rng: &mut ChaCha8Rng, cell: CellKind) -> Hyper {
    let inversion = if rng.random_bool(0.8) {
        Inversion::default_for(cell)
    } else {
        pick(
            rng,
            &[Inversion::Analytic, Inversion::Jacobian, Inversion::PerGate],
        )
    };
    Hyper {
        method: pick(rng, &[Method::Tp, Method::Bp]),
        loss: pick(rng, &[Loss::CrossEntropy, Loss::Mse]),
        tp: TpConfig {
            lr_target: mostly(rng, 0.1),
            reg: mostly(rng, 1.0),
            target_mode: if rng.random_bool(0.8) {
                TargetMode::Linearized
            } else {
                pick(rng, &[TargetMode::Difference, TargetMode::Plain])
            },
            tp_grad: pick(rng, &[TpGrad::ThroughTime, TpGrad::Local]),
            inversion,
            solver: pick(
                rng,
                &[Solver::Cg, Solver::Cholesky, Solver::PerStep, Solver::Auto],
            ),
            cg_tol: if rng.random_bool(0.8) {
                None
            } else {
                pick(rng, &[Some(1e-8), Some(0.0), Some(f64::NAN), Some(1e-300)])
            },
            cg_max_iter: if rng.random_bool(0.9) {
                50
            } else {
                pick(rng, &[0, 1])
            },
            precondition: pick(
                rng,
                &[
                    Preconditioner::Auto,
                    Preconditioner::Jacobi,
                    Preconditioner::None,
                ],
            ),
        },
        opt: OptimizerConfig {
            kind: pick(
                rng,
                &[
                    OptimizerKind::Sgd,
                    OptimizerKind::Nesterov,
                    OptimizerKind::Adam,
                ],
            ),
            lr: mostly(rng, 0.1),
            lr_head: if rng.random_bool(0.7) {
                None
            } else {
                Some(mostly(rng, 0.5))
            },
            clip_norm: if rng.random_bool(0.7) {
                None
            } else {
                Some(mostly(rng, 1.0))
            },
            momentum: mostly(rng, 0.9),
            beta1: mostly(rng, 0.9),
            beta2: 0.999,
            eps: mostly(rng, 1e-8),
        },
        dtp: Default::default(),
    }
}

/// How many calls of a kind returned Ok (so that the test is not vacuous).
#[derive(Debug, Default)]
struct Oks {
    traces: usize,
    loads: usize,
    steps: usize,
}

/// One random case over the public API: every call must return, Ok or Err.
fn one_case(rng: &mut ChaCha8Rng, oks: &mut Oks) {
    let params = random_params(rng);
    let hyper = random_hyper(rng, params.cell);
    let batch = random_batch(rng, &params, hyper.loss);
    let opt = rng.random_bool(0.3).then(|| {
        let like = random_params(rng);
        OptState {
            step: rng.random(),
            m: like.clone(),
            v: like,
        }
    });
    let mut cpu = CpuBackend::new();
    oks.traces += usize::from(cpu.trace(&params, &batch, &hyper).is_ok());
    let _ = cpu.step(&batch); // nothing loaded
    if cpu.load(&params, opt.as_ref(), &hyper).is_ok() {
        oks.loads += 1;
        for _ in 0..3 {
            oks.steps += usize::from(cpu.step(&batch).is_ok());
            let other = random_batch(rng, &params, hyper.loss);
            let _ = cpu.step(&other);
            let _ = cpu.evaluate(&other);
        }
        let _ = cpu.last_stats();
        let _ = cpu.last_diagnostics();
        let _ = cpu.evaluate(&batch);
        let _ = cpu.evaluate_all(&[batch.clone(), random_batch(rng, &params, hyper.loss)]);
        let _ = cpu.evaluate_all(&[]);
        let _ = cpu.log_point(true);
        let _ = cpu.state();
    }
    let _ = tpri::validate::check_run(&params, &batch, &hyper, Device::Cpu);
    let _ = OptState::for_params(opt.as_ref(), &params);
    let _ = hyper.validate();
    let sizes = Sizes {
        hidden: size(rng),
        steps: size(rng),
        batch: size(rng),
    };
    for device in [
        Device::Cpu,
        Device::Gpu {
            f16_histories: rng.random(),
        },
    ] {
        let _ = Plan::new(params.cell, &hyper, device, sizes);
    }
    let d = dims(size(rng), size(rng), size(rng));
    if d.input.max(d.hidden).max(d.output) > 3 {
        // Small sizes build real weights; only the refusals are exercised at large ones.
        let _ = Params::init_of(params.cell, d, 0);
    } else {
        let _ = Params::init_of(params.cell, d, 0).map(|p| p.check_dims(d));
    }
    let w = Workload::new(params.cell, d, size(rng), size(rng), &hyper).with_eval_size(size(rng));
    let _ = w.check_cpu();
    let _ = w.check_gpu(&GpuLimits {
        max_hidden: pick(rng, &[0, 2048, usize::MAX]),
        max_buffer: pick(rng, &[0, 1 << 28, u64::MAX]),
        history_bytes: pick(rng, &[2, 4]),
    });
    let (t, e) = (size(rng), size(rng));
    let _ = Adding::new(t, 0, e);
    let _ = TemporalOrder::new(t, 0, e);
    let spec = match rng.random_range(0..3) {
        0 => TaskSpec::Adding { seq_len: t },
        1 => TaskSpec::TemporalOrder { seq_len: t },
        _ => TaskSpec::Pixel {
            dir: "/nonexistent/tpri".into(),
            dataset: pick(rng, &[PixelDataset::Mnist, PixelDataset::Cifar10]),
            chunk: size(rng),
            standardize: rng.random(),
            permuted: rng.random(),
            mean_std: rng
                .random::<bool>()
                .then(|| [rng.random_range(-1.0..1.0), rng.random_range(-0.1..1.0)]),
        },
    };
    let _ = tpri::tasks::build_task(&spec, 0, e);
    let _ = check_run(&spec, params.cell, size(rng), size(rng), e, &hyper);
    let cfg = RunConfig {
        task: spec,
        cell: params.cell,
        hidden: size(rng),
        batch_size: size(rng),
        eval_size: e,
        hyper,
        ..RunConfig::default()
    };
    let _ = cfg.validate();
    let _ = Eval::weighted([(
        Eval {
            loss: nasty(rng),
            accuracy: nasty(rng),
        },
        size(rng),
    )]);
}

/// No public function of the library panics on any input: a few hundred random cases
/// (shapes of 0 and mismatched, NaN and huge values, nonsense settings and sizes), each
/// call returning Ok or Err. Bounded to a few seconds.
#[test]
fn no_public_function_panics_on_random_input() {
    let mut oks = Oks::default();
    let cases = no_panics(14, 1000, |rng| one_case(rng, &mut oks));
    eprintln!("Ok in {cases} cases: {oks:?}");
    assert!(
        oks.traces > 10 && oks.loads > 10 && oks.steps > 10,
        "too few cases get through: {oks:?}"
    );
}

/// No function of the GPU backend panics on any input either: random parameters, batches
/// and settings as above (wrong shapes, NaN, impossible solver settings) through `trace`,
/// `load`, `step` and `evaluate` on the adapter (lavapipe in CI), each call returning Ok or
/// an error. Fewer cases than the CPU's: each builds its buffers and pipelines.
#[test]
fn the_gpu_backend_does_not_panic_on_random_input() {
    let ctx = gpu_support::ctx();
    let (mut traces, mut steps) = (0, 0);
    let cases = no_panics_within(16, (600, 100), Duration::from_secs(10), |rng| {
        let params = random_params(rng);
        let hyper = random_hyper(rng, params.cell);
        let batch = random_batch(rng, &params, hyper.loss);
        let options = GpuOptions {
            storage: pick(rng, &[Storage::F32, Storage::F32, Storage::F16]),
            steps_per_dispatch: pick(
                rng,
                &[
                    StepsPerDispatch::Auto,
                    StepsPerDispatch::Fixed(NonZeroUsize::MIN),
                ],
            ),
            sequences_per_workgroup: SequencesPerWorkgroup::Fixed(pick(rng, &[1, 2, 3, 64])),
            lanes_per_unit: LanesPerUnit::Fixed(pick(rng, &[1, 2, 3, 4, 32])),
            ..GpuOptions::default()
        };
        let options = if rng.random_bool(0.5) {
            GpuOptions::default()
        } else {
            options
        };
        let mut gpu = GpuBackend::with_options(ctx.clone(), options);
        traces += usize::from(gpu.trace(&params, &batch, &hyper).is_ok());
        if gpu.load(&params, None, &hyper).is_ok() {
            steps += usize::from(gpu.step(&batch).is_ok());
            let other = random_batch(rng, &params, hyper.loss);
            let _ = gpu.step(&other);
            let _ = gpu.evaluate(&other);
            let _ = gpu.evaluate_all(&[batch.clone(), other]);
            let _ = gpu.state();
        }
    });
    eprintln!("Ok in {cases} cases: {traces} traces, {steps} steps");
    assert!(traces > 20 && steps > 20, "too few cases get through");
}

/// Tasks refuse a batch they cannot make, before allocating it, instead of panicking: an
/// evaluation batch size of 0, a batch too large to address or to hold; an image index
/// past the last image is `None`.
#[test]
fn tasks_refuse_batches_they_cannot_make() {
    let adding = Adding::new(10, 0, 8).unwrap();
    let order = TemporalOrder::new(12, 0, 8).unwrap();
    for task in [&adding as &dyn Task, &order] {
        let (msg, _) = failure("batch size 0", task.eval_batches(0));
        assert!(msg.contains("batch size of 0"), "{msg}");
        for b in [1usize << 40, usize::MAX] {
            let (msg, _) = failure("huge batch", task.train_batch(0, b));
            assert!(msg.contains("address") || msg.contains("memory"), "{msg}");
        }
        assert_eq!(task.train_batch(3, 5).unwrap().batch_size(), 5);
    }
    let set = read_images(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/idx/valid-images-idx3-ubyte"),
    )
    .unwrap();
    assert!(set.count > 0);
    assert!(set.image(set.count - 1).is_some());
    assert!(set.image(set.count).is_none());
    assert!(set.image(usize::MAX).is_none());
}
