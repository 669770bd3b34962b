//! Pixel-by-pixel CIFAR-10 (docs/ALGORITHM.md §6) on files the tests write: the reader of
//! the binary version and its malformed files, the sequences (channel-major, standardized
//! per channel, chunked, permuted), and `tpri train` / `tpri batch` / `tpri trace` end to
//! end on both backends, checked against an independent NumPy reading of the files.

use std::path::{Path, PathBuf};
use std::process::Command;

use tpri::tasks::cifar::{self, MEAN, PIXELS, RECORD, STD, TEST_FILE};
use tpri::tasks::{build_task, PixelDataset, Task, TaskSpec};

mod cli_support;
mod support;
mod task_support;

use cli_support::{floats, ok, python_agrees, scratch, tpri, write_tiny_cifar};
use support::{check, column};
use task_support::{assert_shape, labels, sequence};

/// Records per training file and in the test file of the tests' directories.
const TRAIN: [usize; 5] = [3, 2, 4, 2, 3];
const TEST: usize = 5;

fn spec(dir: &Path, chunk: usize, standardize: bool, permuted: bool) -> TaskSpec {
    TaskSpec::Pixel {
        dir: dir.to_path_buf(),
        dataset: PixelDataset::Cifar10,
        chunk,
        standardize,
        permuted,
        mean_std: None,
    }
}

/// The raw bytes of test image `i` of a directory written by `write_tiny_cifar`.
fn test_image(dir: &Path, i: usize) -> Vec<u8> {
    let bytes = std::fs::read(dir.join(TEST_FILE)).unwrap();
    bytes[i * RECORD + 1..(i + 1) * RECORD].to_vec()
}

/// The input value of byte `v` of channel `c`.
fn value(v: u8, c: usize, standardize: bool) -> f64 {
    let scaled = f64::from(v) / 255.0;
    if standardize {
        (scaled - MEAN[c]) / STD[c]
    } else {
        scaled
    }
}

// ---------- the reader ----------

#[test]
fn the_files_read_as_channel_major_colour_images_in_file_order() {
    let dir = scratch("cifar-read");
    write_tiny_cifar(&dir, TRAIN, TEST);
    let train = cifar::read_train(&dir).unwrap();
    train.check().unwrap();
    let n: usize = TRAIN.iter().sum();
    let images = &train.images;
    assert_eq!(
        (images.count, images.channels, images.rows, images.cols),
        (n, 3, 32, 32)
    );
    assert_eq!(
        (images.image_size(), images.shape()),
        (PIXELS, "3×32×32".into())
    );
    // Records n = 0 … 13 in the order of data_batch_1 … data_batch_5.
    let want: Vec<u8> = (0..n).map(|i| (3 * i % 10) as u8).collect();
    assert_eq!(train.labels, want);
    assert_eq!(
        images.image(5).unwrap()[1024],
        ((31 * 5 + 7 * 1024 + 50) % 256) as u8
    );
    let test = cifar::read_test(&dir).unwrap();
    assert_eq!(test.images.count, TEST);
    assert_eq!(test.images.image(2).unwrap(), test_image(&dir, 2));
    assert_eq!(test.labels[0], (3 * n % 10) as u8);
    // The same bytes parsed from memory.
    let bytes = std::fs::read(dir.join(TEST_FILE)).unwrap();
    assert_eq!(
        cifar::parse_batch(&bytes[..], Path::new("t")).unwrap(),
        test
    );
}

/// The error of reading `dir` as a CIFAR-10 task, with all its causes.
fn load_error(dir: &Path) -> String {
    format!(
        "{:#}",
        build_task(&spec(dir, 1, true, false), 0, 10).err().unwrap()
    )
}

#[test]
fn malformed_files_are_errors_naming_the_file_and_the_problem() {
    let root = scratch("cifar-malformed");
    let good = root.join("good");
    write_tiny_cifar(&good, TRAIN, TEST);
    let record = std::fs::read(good.join(TEST_FILE)).unwrap()[..RECORD].to_vec();
    let with_label = |label: u8| [&[label][..], &record[1..]].concat();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            "data_batch_2.bin",
            [record.clone(), record[..100].to_vec()].concat(),
            "1 records of 3073 bytes and 100 bytes more",
        ),
        (
            "one-byte-long",
            TEST_FILE,
            [record.clone(), vec![0]].concat(),
            "and 1 bytes more",
        ),
        ("empty", "data_batch_5.bin", vec![], "the file is empty"),
        (
            "bad-label",
            "data_batch_4.bin",
            [record.clone(), with_label(10)].concat(),
            "label 10 at index 1 is not a class in 0..10",
        ),
        (
            "label-255",
            TEST_FILE,
            with_label(255),
            "label 255 at index 0",
        ),
    ];
    for (name, file, bytes, problem) in cases {
        let dir = root.join(name);
        write_tiny_cifar(&dir, TRAIN, TEST);
        std::fs::write(dir.join(file), bytes).unwrap();
        let msg = load_error(&dir);
        let path = dir.join(file).display().to_string();
        assert!(
            msg.contains(&path) && msg.contains(problem),
            "{name}: {msg}"
        );
    }
    // More records than a file of the layout holds: refused from its size alone (a sparse
    // file of 30 MB, never read).
    let dir = root.join("too-long");
    write_tiny_cifar(&dir, TRAIN, TEST);
    let file = std::fs::File::options()
        .write(true)
        .open(dir.join("data_batch_3.bin"))
        .unwrap();
    file.set_len((cifar::MAX_RECORDS as u64 + 1) * RECORD as u64)
        .unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("longer than"),
        "{msg}"
    );
    // A missing file, an empty directory, a directory in place of a file, no directory.
    let dir = root.join("missing");
    write_tiny_cifar(&dir, TRAIN, TEST);
    std::fs::remove_file(dir.join("data_batch_3.bin")).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains(&dir.join("data_batch_3.bin").display().to_string())
            && msg.contains("missing CIFAR-10 file")
            && msg.contains("cifar-10-binary.tar.gz"),
        "{msg}"
    );
    let empty = root.join("empty-dir");
    std::fs::create_dir_all(&empty).unwrap();
    let msg = load_error(&empty);
    assert!(
        msg.contains(&empty.join("data_batch_1.bin").display().to_string()),
        "{msg}"
    );
    let dir = root.join("a-directory");
    write_tiny_cifar(&dir, TRAIN, TEST);
    std::fs::remove_file(dir.join(TEST_FILE)).unwrap();
    std::fs::create_dir(dir.join(TEST_FILE)).unwrap();
    let msg = load_error(&dir);
    assert!(
        msg.contains(TEST_FILE) && msg.contains("a directory"),
        "{msg}"
    );
    let msg = load_error(&root.join("nowhere"));
    assert!(msg.contains("nowhere/data_batch_1.bin"), "{msg}");
    // From memory: the same checks, and at most one file's worth is read.
    let long = vec![0u8; (cifar::MAX_RECORDS + 1) * RECORD];
    let msg = format!(
        "{:#}",
        cifar::parse_batch(&long[..], Path::new("mem.bin")).unwrap_err()
    );
    assert!(
        msg.contains("mem.bin") && msg.contains("longer than"),
        "{msg}"
    );
}

// ---------- the sequences ----------

#[test]
fn sequences_are_channel_major_values_standardized_per_channel_then_chunked() {
    let dir = scratch("cifar-sequences");
    write_tiny_cifar(&dir, TRAIN, TEST);
    for standardize in [true, false] {
        for k in [1, 3, 32, 1024, 3072] {
            let task = build_task(&spec(&dir, k, standardize, false), 0, 100).unwrap();
            assert_eq!(
                (task.input_size(), task.output_size(), task.seq_len()),
                (k, 10, PIXELS / k)
            );
            let sizes = spec(&dir, k, standardize, false).sizes().unwrap();
            assert_eq!(sizes, (k, 10, PIXELS / k));
            let eval = task.eval_batches(2).unwrap();
            assert_shape(&eval[0], task.as_ref(), 2);
            for (b, i) in [(0, 0), (1, 1)] {
                let image = test_image(&dir, i);
                let want: Vec<f64> = (0..PIXELS)
                    .map(|j| value(image[j], j / 1024, standardize))
                    .collect();
                // Step t, input j is pixel t·k + j of the stored (channel-major) image.
                assert_eq!(sequence(&eval[0], b), want, "k = {k}");
            }
            assert_shape(&task.train_batch(3, 4).unwrap(), task.as_ref(), 4);
        }
    }
    for k in [0, 5, 7, 3073] {
        let msg = format!(
            "{:#}",
            build_task(&spec(&dir, k, true, false), 0, 100)
                .err()
                .unwrap()
        );
        assert!(msg.contains("3072"), "k = {k}: {msg}");
    }
}

#[test]
fn the_held_out_set_is_test_batch_in_order_and_training_covers_every_file() {
    let dir = scratch("cifar-split");
    write_tiny_cifar(&dir, TRAIN, TEST);
    let n: usize = TRAIN.iter().sum();
    let task = build_task(&spec(&dir, 96, true, false), 7, 3).unwrap();
    let eval: Vec<usize> = task
        .eval_batches(2)
        .unwrap()
        .iter()
        .flat_map(|b| labels(b).to_vec())
        .collect();
    let want: Vec<usize> = (n..n + 3).map(|i| 3 * i % 10).collect();
    assert_eq!(eval, want, "the first 3 test images, in order");
    // One epoch of the training set: every training image once, in a seeded shuffle.
    let epoch = task.train_batch(0, n).unwrap();
    let mut seen: Vec<Vec<f64>> = (0..n).map(|b| sequence(&epoch, b)).collect();
    let all = build_task(&spec(&dir, 96, true, false), 7, 3).unwrap();
    let first = sequence(&all.train_batch(0, 1).unwrap(), 0);
    assert_eq!(first, seen[0], "batches are a function of (seed, index)");
    seen.sort_by(|a, b| a.partial_cmp(b).unwrap());
    seen.dedup();
    assert_eq!(seen.len(), n, "every training image once per epoch");
}

#[test]
fn permuted_pixels_are_one_seeded_bijection_across_channels_shared_with_evaluation() {
    let dir = scratch("cifar-permuted");
    write_tiny_cifar(&dir, TRAIN, TEST);
    let task = tpri::tasks::PixelTask::load(
        &dir,
        tpri::tasks::PixelOptions {
            chunk: 4,
            standardize: true,
            permuted: true,
            mean_std: None,
            dataset: PixelDataset::Cifar10,
        },
        3,
        10,
    )
    .unwrap();
    let order = task.pixel_order().to_vec();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..PIXELS).collect::<Vec<_>>());
    assert_ne!(order, sorted);
    assert!(
        order[..1024].iter().any(|&p| p >= 1024),
        "the permutation mixes channels, as the published one does"
    );
    // Each position shows its pixel with that pixel's channel statistics.
    let eval = &task.eval_batches(1).unwrap()[0];
    let image = test_image(&dir, 0);
    let want: Vec<f64> = order
        .iter()
        .map(|&p| value(image[p], p / 1024, true))
        .collect();
    assert_eq!(sequence(eval, 0), want);
    // Training sequences go through the same permutation: as values, each is a
    // rearrangement of an unpermuted training sequence by `order`.
    let plain = build_task(&spec(&dir, 4, true, false), 3, 10).unwrap();
    let (permuted, unpermuted) = (
        task.train_batch(2, 3).unwrap(),
        plain.train_batch(2, 3).unwrap(),
    );
    for b in 0..3 {
        let raw = sequence(&unpermuted, b);
        let want: Vec<f64> = order.iter().map(|&p| raw[p]).collect();
        assert_eq!(sequence(&permuted, b), want);
    }
}

// ---------- the command line ----------

/// Checks a batch file against `tests/independent/cifar_numpy.py`.
fn numpy_agrees(data: &Path, batch: &Path, chunk: usize, standardize: bool, rows: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/independent/cifar_numpy.py");
    let (data, batch) = (data.to_str().unwrap(), batch.to_str().unwrap());
    let (chunk, standardize) = (chunk.to_string(), if standardize { "1" } else { "0" });
    let what = format!("{batch} ({rows}, k = {chunk})");
    python_agrees(&script, &[data, batch, &chunk, standardize, rows], &what);
}

/// `tpri train --task pixel --dataset cifar10` with the published presets on the CPU and
/// on the GPU (lavapipe in CI), `--chunk 4` (T = 768) to keep it short: both train, and
/// agree to f32's precision; `tpri batch` writes the batches they fed the model, which
/// NumPy reads from the files alike; `tpri trace` runs on them on both backends.
#[test]
fn train_batch_and_trace_run_end_to_end_on_both_backends() {
    let root = scratch("cifar-cli");
    let data = root.join("cifar-10-batches-bin");
    write_tiny_cifar(&data, TRAIN, TEST);
    let data_s = data.to_str().unwrap();
    let run = |preset: &str, backend: &str| -> PathBuf {
        let dir = root.join(format!("{preset}-{backend}"));
        let log = ok(&[
            "train",
            "--task",
            "pixel",
            "--dataset",
            "cifar10",
            "--data",
            data_s,
            "--preset",
            preset,
            "--chunk",
            "4",
            "--hidden",
            "6",
            "--batch-size",
            "4",
            "--iterations",
            "4",
            "--eval-every",
            "2",
            "--log-every",
            "2",
            "--backend",
            backend,
            "--run-dir",
            dir.to_str().unwrap(),
        ]);
        assert!(log.contains("done: 4 iterations"), "{log}");
        dir
    };
    let eval_loss = |dir: &Path| -> f64 {
        let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
        let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
        summary["last"]["eval"]["loss"].as_f64().unwrap()
    };
    for preset in ["cifar10-tp", "cifar10-bp"] {
        let (cpu, gpu) = (run(preset, "cpu"), run(preset, "gpu"));
        let (c, g) = (eval_loss(&cpu), eval_loss(&gpu));
        assert!(
            (c - g).abs() <= 1e-3 * c.abs(),
            "{preset}: cpu {c}, gpu {g}"
        );
    }
    let cpu_run = root.join("cifar10-tp-cpu");
    let config = std::fs::read_to_string(cpu_run.join("config.toml")).unwrap();
    assert!(config.contains("dataset = \"cifar10\""), "{config}");
    // The batches the run fed the model, against NumPy's reading of the files.
    let batch = root.join("batch.safetensors");
    let run_s = cpu_run.to_str().unwrap();
    let batch_s = batch.to_str().unwrap();
    ok(&["batch", run_s, "--iteration", "3", "--out", batch_s]);
    numpy_agrees(&data, &batch, 4, true, "train");
    let held_out = root.join("held-out.safetensors");
    ok(&[
        "batch",
        run_s,
        "--held-out",
        "2",
        "--out",
        held_out.to_str().unwrap(),
    ]);
    numpy_agrees(&data, &held_out, 4, true, "test:4");
    // A trace at the run's parameters on that batch, on both backends.
    let params = root.join("params.safetensors");
    ok(&[
        "export",
        run_s,
        "--to",
        "tpri",
        "--out",
        params.to_str().unwrap(),
    ]);
    let trace = |backend: &str| -> PathBuf {
        let out = root.join(format!("trace-{backend}.safetensors"));
        ok(&[
            "trace",
            "--params",
            params.to_str().unwrap(),
            "--batch",
            batch_s,
            "--loss",
            "ce",
            "--method",
            "tp",
            "--lr-target",
            "0.01",
            "--reg",
            "10",
            "--solver",
            "cg",
            "--backend",
            backend,
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    };
    let (cpu, gpu) = (trace("cpu"), trace("gpu"));
    for name in ["loss", "h", "grad.rnn.w_hh", "grad.rnn.w_ih", "grad.head.w"] {
        let (g, c) = (floats(&gpu, name), floats(&cpu, name));
        check(name, &column(&g), &column(&c), 1e-4);
    }
}

/// The layouts NumPy checks without a run: one value per step (T = 3072, the published
/// setting), one image per step, and unstandardized values; from config files.
#[test]
fn held_out_batches_agree_with_numpy_at_every_chunk() {
    let root = scratch("cifar-numpy");
    let data = root.join("data");
    write_tiny_cifar(&data, TRAIN, TEST);
    for (k, standardize) in [(1, true), (3072, true), (8, false)] {
        let config = root.join(format!("k{k}.toml"));
        let text = format!(
            "batch_size = 3\n[task]\nname = \"pixel\"\ndataset = \"cifar10\"\ndir = {:?}\n\
             chunk = {k}\nstandardize = {standardize}\npermuted = false\n",
            data.to_str().unwrap()
        );
        std::fs::write(&config, text).unwrap();
        let batch = root.join(format!("k{k}.safetensors"));
        let args = ["--held-out", "1", "--out", batch.to_str().unwrap()];
        ok(&[&["batch", config.to_str().unwrap()][..], &args].concat());
        numpy_agrees(&data, &batch, k, standardize, "test:0");
    }
}

#[test]
fn bad_data_and_flags_are_clear_errors() {
    let root = scratch("cifar-errors");
    let (data, good) = (root.join("data"), root.join("good"));
    write_tiny_cifar(&data, TRAIN, TEST);
    write_tiny_cifar(&good, TRAIN, TEST);
    std::fs::write(data.join("data_batch_2.bin"), vec![0u8; RECORD + 17]).unwrap();
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let base = [
        "train",
        "--task",
        "pixel",
        "--dataset",
        "cifar10",
        "--backend",
        "cpu",
    ];
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--data", data.to_str().unwrap()],
            data.join("data_batch_2.bin").display().to_string(),
        ),
        (
            vec!["--data-dir", empty.to_str().unwrap()],
            empty.join("data_batch_1.bin").display().to_string(),
        ),
        (
            vec!["--data", good.to_str().unwrap(), "--chunk", "5"],
            "3072".into(),
        ),
        (vec!["--seq-len", "30"], "3072 / k".into()),
    ];
    for (extra, needle) in cases {
        let args = [&base[..], &extra].concat();
        let out = tpri(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(&needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    let out = tpri(&["train", "--task", "adding", "--dataset", "cifar10"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pixel task only"));
    // The default directory is the archive's, relative to the working directory.
    let out = Command::new(env!("CARGO_BIN_EXE_tpri"))
        .args(["train", "--preset", "cifar10-tp", "--backend", "cpu"])
        .current_dir(&root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cifar-10-batches-bin/data_batch_1.bin"),
        "{err}"
    );
    assert!(!root.join("runs").exists(), "a refused run writes nothing");
    let presets = ok(&["presets"]);
    for name in ["cifar10-tp", "cifar10-bp"] {
        assert!(presets.contains(name), "{presets}");
    }
}
