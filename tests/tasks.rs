//! Tasks of docs/ALGORITHM.md §6: generator formulas and ranges, seeding, IDX reading, pixel sequences.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;
use rand::Rng;
use tpri::config::Loss;
use tpri::tasks::idx::{self, Images, Labeled};
use tpri::tasks::{build_task, Batch, PixelOptions, PixelTask, Targets, Task, TaskSpec};

mod support;

// ---------- helpers ----------

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tpri-tasks-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(data);
    bytes
}

fn images_bytes(images: &Images) -> Vec<u8> {
    let dims = [images.count, images.rows, images.cols].map(|d| d as u32);
    idx_bytes(0x803, &dims, &images.pixels)
}

fn labels_bytes(labels: &[u8]) -> Vec<u8> {
    idx_bytes(0x801, &[labels.len() as u32], labels)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Sequence `b` of a batch, flattened over steps then inputs.
fn sequence(batch: &Batch, b: usize) -> Vec<f64> {
    batch
        .x
        .iter()
        .flat_map(|step| step.row(b).iter().copied().collect::<Vec<_>>())
        .collect()
}

fn labels(batch: &Batch) -> &[usize] {
    match &batch.y {
        Targets::Labels(l) => l,
        Targets::Values(_) => panic!("expected labels"),
    }
}

fn values(batch: &Batch) -> Vec<f64> {
    match &batch.y {
        Targets::Values(v) => v.column(0).iter().copied().collect(),
        Targets::Labels(_) => panic!("expected values"),
    }
}

fn all_sequences(batches: &[Batch]) -> Vec<Vec<f64>> {
    batches
        .iter()
        .flat_map(|b| (0..b.batch_size()).map(move |i| sequence(b, i)))
        .collect()
}

fn assert_shape(batch: &Batch, task: &dyn Task, batch_size: usize) {
    assert_eq!(batch.seq_len(), task.seq_len());
    assert_eq!(batch.batch_size(), batch_size);
    for step in &batch.x {
        assert_eq!(
            (step.nrows(), step.ncols()),
            (batch_size, task.input_size())
        );
    }
}

fn synthetic(spec: TaskSpec, seed: u64, eval_size: usize) -> Box<dyn Task> {
    build_task(&spec, seed, eval_size).unwrap()
}

const SEQ_LENS: [usize; 7] = [10, 11, 19, 30, 57, 60, 120];

// ---------- temporal order ----------

#[test]
fn temporal_order_follows_spec_for_every_sequence() {
    for t_len in SEQ_LENS {
        // docs/ALGORITHM.md §6 ranges, written the way the spec states them.
        let k = t_len / 10;
        let half = t_len / 2;
        let (mut seen_p0, mut seen_p1, mut seen_labels) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut seen_distractors = BTreeSet::new();
        for seed in 0..12 {
            let task = synthetic(TaskSpec::TemporalOrder { seq_len: t_len }, seed, 30);
            assert_eq!(
                (task.input_size(), task.output_size(), task.seq_len()),
                (6, 4, t_len)
            );
            assert_eq!(task.loss(), Loss::CrossEntropy);
            let mut batches: Vec<Batch> = (0..4).map(|i| task.train_batch(i, 20)).collect();
            batches.extend(task.eval_batches(8));
            for batch in &batches {
                assert_shape(batch, task.as_ref(), batch.batch_size());
                for b in 0..batch.batch_size() {
                    let symbols: Vec<usize> = batch
                        .x
                        .iter()
                        .map(|step| {
                            let row: Vec<f64> = step.row(b).iter().copied().collect();
                            assert_eq!(row.iter().filter(|&&v| v == 1.0).count(), 1, "one-hot");
                            assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), 5, "one-hot");
                            row.iter().position(|&v| v == 1.0).unwrap()
                        })
                        .collect();
                    let marked: Vec<usize> = (0..t_len).filter(|&t| symbols[t] < 2).collect();
                    assert_eq!(
                        marked.len(),
                        2,
                        "T={t_len}: exactly two bit steps, got {marked:?}"
                    );
                    let (p0, p1) = (marked[0], marked[1]);
                    assert!((k..2 * k).contains(&p0), "T={t_len}: p0={p0}");
                    assert!((half..half + k).contains(&p1), "T={t_len}: p1={p1}");
                    assert_eq!(labels(batch)[b], symbols[p0] + 2 * symbols[p1]);
                    seen_p0.insert(p0);
                    seen_p1.insert(p1);
                    seen_labels.insert(labels(batch)[b]);
                    seen_distractors.extend(symbols.iter().filter(|&&s| s >= 2));
                }
            }
        }
        assert_eq!(seen_p0, (k..2 * k).collect(), "T={t_len}: every p0 occurs");
        assert_eq!(
            seen_p1,
            (half..half + k).collect(),
            "T={t_len}: every p1 occurs"
        );
        assert_eq!(seen_labels, (0..4).collect());
        assert_eq!(seen_distractors, (2..6).collect());
    }
}

// ---------- adding ----------

#[test]
fn adding_follows_spec_for_every_sequence() {
    for t_len in SEQ_LENS {
        let first = t_len / 10;
        let second = 2 * t_len / 5; // ⌊0.4T⌋
        let (mut seen_p0, mut seen_p1) = (BTreeSet::new(), BTreeSet::new());
        for seed in 0..12 {
            let task = synthetic(TaskSpec::Adding { seq_len: t_len }, seed, 30);
            assert_eq!(
                (task.input_size(), task.output_size(), task.seq_len()),
                (2, 1, t_len)
            );
            assert_eq!(task.loss(), Loss::Mse);
            let mut batches: Vec<Batch> = (0..4).map(|i| task.train_batch(i, 20)).collect();
            batches.extend(task.eval_batches(8));
            for batch in &batches {
                assert_shape(batch, task.as_ref(), batch.batch_size());
                let targets = values(batch);
                for b in 0..batch.batch_size() {
                    let marks: Vec<f64> = batch.x.iter().map(|s| s[(b, 0)]).collect();
                    let vals: Vec<f64> = batch.x.iter().map(|s| s[(b, 1)]).collect();
                    assert!(marks.iter().all(|&m| m == 0.0 || m == 1.0));
                    assert!(vals.iter().all(|v| (0.0..1.0).contains(v)));
                    let marked: Vec<usize> = (0..t_len).filter(|&t| marks[t] == 1.0).collect();
                    assert_eq!(marked.len(), 2, "T={t_len}: exactly two marks");
                    let (p0, p1) = (marked[0], marked[1]);
                    assert!((0..first).contains(&p0), "T={t_len}: p0={p0}");
                    assert!((first..first + second).contains(&p1), "T={t_len}: p1={p1}");
                    assert_eq!(targets[b], (vals[p0] + vals[p1]) / 2.0);
                    seen_p0.insert(p0);
                    seen_p1.insert(p1);
                }
            }
        }
        assert_eq!(seen_p0, (0..first).collect(), "T={t_len}: every p0 occurs");
        assert_eq!(
            seen_p1,
            (first..first + second).collect(),
            "T={t_len}: every p1 occurs"
        );
    }
}

#[test]
fn adding_targets_have_the_variance_spec_quotes() {
    // Predicting the mean scores MSE 1/24 (docs/ALGORITHM.md §6): Var((U + V)/2) = (1/12)/2.
    let task = synthetic(TaskSpec::Adding { seq_len: 10 }, 3, 0);
    let targets: Vec<f64> = (0..200)
        .flat_map(|i| values(&task.train_batch(i, 100)))
        .collect();
    let n = targets.len() as f64;
    let mean = targets.iter().sum::<f64>() / n;
    let var = targets.iter().map(|y| (y - mean).powi(2)).sum::<f64>() / n;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    assert!((var - 1.0 / 24.0).abs() < 0.002, "variance {var}");
}

#[test]
fn too_short_sequences_are_rejected() {
    for t_len in 0..10 {
        for spec in [
            TaskSpec::TemporalOrder { seq_len: t_len },
            TaskSpec::Adding { seq_len: t_len },
        ] {
            let message = build_task(&spec, 0, 10)
                .err()
                .expect("too short")
                .to_string();
            assert!(message.contains(&format!("T = {t_len}")), "{message}");
        }
    }
}

// ---------- seeding ----------

#[test]
fn synthetic_data_is_a_pure_function_of_seed_and_index() {
    for spec in [
        TaskSpec::TemporalOrder { seq_len: 60 },
        TaskSpec::Adding { seq_len: 30 },
    ] {
        let a = synthetic(spec.clone(), 5, 40);
        let b = synthetic(spec.clone(), 5, 40);
        let other = synthetic(spec.clone(), 6, 40);
        // A resumed run asks for batch 7 first; an uninterrupted one after 0..7.
        let late = a.train_batch(7, 20);
        let in_order: Vec<Batch> = (0..8).map(|i| b.train_batch(i, 20)).collect();
        assert_eq!(late, in_order[7]);
        assert_ne!(in_order[0], in_order[1], "batches differ by index");
        assert_ne!(other.train_batch(7, 20), late, "batches differ by seed");
        assert_eq!(a.eval_batches(16), b.eval_batches(16));
        assert_ne!(a.eval_batches(16), other.eval_batches(16));
        assert_eq!(a.train_batch(0, 0).batch_size(), 0);
    }
}

#[test]
fn eval_set_is_fixed_and_independent_of_batch_size() {
    for spec in [
        TaskSpec::TemporalOrder { seq_len: 20 },
        TaskSpec::Adding { seq_len: 20 },
    ] {
        let task = synthetic(spec, 1, 50);
        let small = task.eval_batches(7);
        let sizes: Vec<usize> = small.iter().map(Batch::batch_size).collect();
        assert_eq!(sizes, [7, 7, 7, 7, 7, 7, 7, 1]);
        let whole = task.eval_batches(100);
        assert_eq!(whole.len(), 1);
        assert_eq!(all_sequences(&small), all_sequences(&whole));
        assert_eq!(task.eval_batches(7), small, "evaluation data is fixed");
    }
    assert!(synthetic(TaskSpec::Adding { seq_len: 20 }, 1, 0)
        .eval_batches(4)
        .is_empty());
}

#[test]
fn eval_stream_is_disjoint_from_training_batches() {
    // Adding draws continuous values, so equal sequences would mean shared streams.
    let task = synthetic(TaskSpec::Adding { seq_len: 12 }, 9, 200);
    let eval: BTreeSet<Vec<u64>> = all_sequences(&task.eval_batches(50))
        .into_iter()
        .map(|s| s.iter().map(|v| v.to_bits()).collect())
        .collect();
    assert_eq!(eval.len(), 200);
    let train: Vec<Batch> = (0..300).map(|i| task.train_batch(i, 20)).collect();
    for seq in all_sequences(&train) {
        let bits: Vec<u64> = seq.iter().map(|v| v.to_bits()).collect();
        assert!(!eval.contains(&bits));
    }
    // Nor is the first eval sequence any batch's first sequence with another batch size.
    let first_eval = sequence(&task.eval_batches(1)[0], 0);
    for i in 0..50 {
        assert_ne!(sequence(&task.train_batch(i, 1), 0), first_eval);
    }
}

// ---------- config ----------

#[test]
fn task_spec_reads_and_writes_config_files() {
    let cases = [
        ("name = \"temporal-order\"\nseq_len = 60\n", TaskSpec::TemporalOrder { seq_len: 60 }),
        ("name = \"adding\"\nseq_len = 30\n", TaskSpec::Adding { seq_len: 30 }),
        (
            "name = \"pixel\"\ndir = \"/data/mnist\"\nchunk = 4\nstandardize = true\npermuted = false\n",
            TaskSpec::Pixel { dir: "/data/mnist".into(), chunk: 4, standardize: true, permuted: false },
        ),
    ];
    for (text, spec) in cases {
        assert_eq!(toml::from_str::<TaskSpec>(text).unwrap(), spec);
        let written = toml::to_string(&spec).unwrap();
        assert_eq!(toml::from_str::<TaskSpec>(&written).unwrap(), spec);
    }
    assert!(toml::from_str::<TaskSpec>("name = \"adding\"\nseq_len = 30\nextra = 1\n").is_err());
    assert!(toml::from_str::<TaskSpec>("name = \"copying\"\nseq_len = 30\n").is_err());
    assert!(toml::from_str::<TaskSpec>("name = \"adding\"\n").is_err());
}

// ---------- IDX ----------

fn small_images() -> Images {
    Images {
        count: 3,
        rows: 2,
        cols: 3,
        pixels: (0..18).map(|v| v * 14).collect(),
    }
}

#[test]
fn idx_round_trips_raw_and_gzipped() {
    let dir = TempDir::new("idx-round-trip");
    let images = small_images();
    let labels = vec![0u8, 9, 4];
    for (suffix, encode) in [("", false), (".gz", true)] {
        let maybe_gz = |b: Vec<u8>| if encode { gzip(&b) } else { b };
        let ip = dir.write(&format!("images{suffix}"), &maybe_gz(images_bytes(&images)));
        let lp = dir.write(&format!("labels{suffix}"), &maybe_gz(labels_bytes(&labels)));
        assert_eq!(idx::read_images(&ip).unwrap(), images);
        assert_eq!(idx::read_labels(&lp).unwrap(), labels);
        let both = idx::read_labeled(&ip, &lp).unwrap();
        assert_eq!(
            both,
            Labeled {
                images: images.clone(),
                labels: labels.clone()
            }
        );
    }
    // Compression is detected from the bytes, not the name.
    let gz_named_raw = dir.write("raw.gz", &images_bytes(&images));
    let raw_named_gz = dir.write("gz.idx", &gzip(&images_bytes(&images)));
    assert_eq!(idx::read_images(&gz_named_raw).unwrap(), images);
    assert_eq!(idx::read_images(&raw_named_gz).unwrap(), images);
    // Concatenated gzip members are one stream.
    let raw = images_bytes(&images);
    let multi = [gzip(&raw[..7]), gzip(&raw[7..])].concat();
    assert_eq!(
        idx::read_images(&dir.write("multi.gz", &multi)).unwrap(),
        images
    );
    let empty = Images {
        count: 0,
        rows: 28,
        cols: 28,
        pixels: vec![],
    };
    assert_eq!(
        idx::read_images(&dir.write("empty", &images_bytes(&empty))).unwrap(),
        empty
    );
}

#[test]
fn malformed_idx_files_are_errors_naming_the_file() {
    let dir = TempDir::new("idx-malformed");
    let good = images_bytes(&small_images());
    let good_labels = labels_bytes(&[1, 2, 3]);
    let cut_gz = gzip(&good);
    let image_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "wrong-magic",
            idx_bytes(0x802, &[3, 2, 3], &[0; 18]),
            "wrong magic",
        ),
        (
            "label-as-image",
            good_labels.clone(),
            "this is a label file",
        ),
        ("empty", vec![], "truncated header"),
        ("short-header", good[..9].to_vec(), "truncated header"),
        (
            "short-data",
            good[..good.len() - 1].to_vec(),
            "truncated data",
        ),
        (
            "overflow",
            idx_bytes(0x803, &[u32::MAX; 3], &[]),
            "overflow",
        ),
        (
            "trailing",
            [good.clone(), vec![0]].concat(),
            "trailing garbage",
        ),
        (
            "zero-cols",
            idx_bytes(0x803, &[3, 2, 0], &[]),
            "empty images",
        ),
        (
            "gz-short-data",
            gzip(&good[..good.len() - 2]),
            "truncated data",
        ),
        ("gz-cut", cut_gz[..cut_gz.len() / 2].to_vec(), "cannot read"),
        (
            "gz-trailing",
            [cut_gz.clone(), vec![1, 2, 3]].concat(),
            "cannot read",
        ),
    ];
    for (name, bytes, problem) in image_cases {
        let path = dir.write(name, &bytes);
        let message = idx::read_images(&path).expect_err(name).to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{name}: {message}"
        );
        assert!(message.contains(problem), "{name}: {message}");
    }
    let label_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("image-as-label", good.clone(), "this is an image file"),
        (
            "big-label",
            labels_bytes(&[0, 10, 3]),
            "label 10 at index 1",
        ),
        (
            "label-trailing",
            [good_labels.clone(), vec![7]].concat(),
            "trailing garbage",
        ),
    ];
    for (name, bytes, problem) in label_cases {
        let path = dir.write(name, &bytes);
        let message = idx::read_labels(&path).expect_err(name).to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{name}: {message}"
        );
        assert!(message.contains(problem), "{name}: {message}");
    }
    let images = dir.write("images", &good);
    let labels = dir.write("labels", &labels_bytes(&[1, 2]));
    let message = idx::read_labeled(&images, &labels).unwrap_err().to_string();
    assert!(
        message.contains("2 labels") && message.contains("3 images"),
        "{message}"
    );
    assert!(message.contains(&images.display().to_string()));
    assert!(message.contains(&labels.display().to_string()));
    let missing = dir.0.join("nothing-here");
    let message = format!("{:#}", idx::read_images(&missing).unwrap_err());
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
}

#[test]
fn no_byte_string_makes_the_idx_reader_panic() {
    let path = Path::new("fuzz");
    let mut rng = support::rng(0);
    let valid = [images_bytes(&small_images()), labels_bytes(&[1, 2, 3])];
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for bytes in &valid {
        let gz = gzip(bytes);
        for end in 0..=gz.len().max(bytes.len()) {
            inputs.push(bytes[..end.min(bytes.len())].to_vec());
            inputs.push(gz[..end.min(gz.len())].to_vec());
        }
        for _ in 0..300 {
            let mut flipped = gz.clone();
            let at = rng.random_range(0..flipped.len());
            flipped[at] ^= 1 << rng.random_range(0..8);
            inputs.push(flipped);
            let mut raw = bytes.clone();
            let at = rng.random_range(0..raw.len());
            raw[at] = rng.random();
            inputs.push(raw);
        }
    }
    for _ in 0..2000 {
        let len = rng.random_range(0..64);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Also reach past the magic check, with dimensions of every size.
        let prefix: &[u8] = match rng.random_range(0..4) {
            0 => &[0, 0, 8, 3],
            1 => &[0, 0, 8, 1],
            2 => &[0x1f, 0x8b],
            _ => &[],
        };
        bytes.splice(0..0, prefix.iter().copied());
        inputs.push(bytes);
    }
    for bytes in &inputs {
        let _ = idx::parse_images(&bytes[..], path);
        let _ = idx::parse_labels(&bytes[..], path);
    }
}

// ---------- pixel sequences ----------

const SIDE: usize = 28;
const SIZE: usize = SIDE * SIDE;

/// Image `i` of a test set; image 0 and 1 together name each pixel index (low, high byte).
fn test_image(i: usize) -> Vec<u8> {
    (0..SIZE)
        .map(|j| match i {
            0 => (j % 256) as u8,
            1 => (j / 256) as u8,
            _ => ((j * 7 + i * 31) % 256) as u8,
        })
        .collect()
}

fn test_set(count: usize) -> Labeled {
    let pixels = (0..count).flat_map(test_image).collect();
    let images = Images {
        count,
        rows: SIDE,
        cols: SIDE,
        pixels,
    };
    // Distinct labels identify the images in a batch.
    Labeled {
        images,
        labels: (0..count as u8).collect(),
    }
}

/// Writes an MNIST-layout directory: training files gzipped, held-out files raw.
fn mnist_dir(name: &str, train: &Labeled, eval: &Labeled) -> TempDir {
    let dir = TempDir::new(name);
    dir.write(
        "train-images-idx3-ubyte.gz",
        &gzip(&images_bytes(&train.images)),
    );
    dir.write(
        "train-labels-idx1-ubyte.gz",
        &gzip(&labels_bytes(&train.labels)),
    );
    dir.write("t10k-images-idx3-ubyte", &images_bytes(&eval.images));
    dir.write("t10k-labels-idx1-ubyte", &labels_bytes(&eval.labels));
    dir
}

fn pixel_spec(dir: &Path, chunk: usize, standardize: bool, permuted: bool) -> TaskSpec {
    TaskSpec::Pixel {
        dir: dir.to_path_buf(),
        chunk,
        standardize,
        permuted,
    }
}

fn options(chunk: usize, standardize: bool, permuted: bool) -> PixelOptions {
    PixelOptions {
        chunk,
        standardize,
        permuted,
    }
}

#[test]
fn pixel_sequences_are_chunks_of_scaled_pixels() {
    let dir = mnist_dir("pixel-chunks", &test_set(5), &test_set(3));
    for k in [1, 4, 7, 28, 112, 784] {
        let task = build_task(&pixel_spec(&dir.0, k, false, false), 0, 100).unwrap();
        assert_eq!(
            (task.input_size(), task.output_size(), task.seq_len()),
            (k, 10, SIZE / k)
        );
        assert_eq!(task.loss(), Loss::CrossEntropy);
        let batch = task.train_batch(0, 4);
        assert_shape(&batch, task.as_ref(), 4);
        for b in 0..4 {
            let image = test_image(labels(&batch)[b]);
            for (t, step) in batch.x.iter().enumerate() {
                for j in 0..k {
                    assert_eq!(step[(b, j)], f64::from(image[t * k + j]) / 255.0);
                }
            }
        }
    }
    for k in [0, 5, 10, 785] {
        let message = build_task(&pixel_spec(&dir.0, k, false, false), 0, 100)
            .err()
            .unwrap();
        let message = format!("{message:#}");
        assert!(
            message.contains(&format!("k = {k}")) && message.contains("784"),
            "{message}"
        );
    }
}

#[test]
fn pixel_epochs_are_seeded_shuffles_of_the_training_set() {
    let train = test_set(5);
    let task = PixelTask::new(train.clone(), test_set(2), options(28, false, false), 3).unwrap();
    // 10 batches of 3 cover 6 epochs of 5 images; batches straddle epoch boundaries.
    let stream: Vec<usize> = (0..10)
        .flat_map(|i| labels(&task.train_batch(i, 3)).to_vec())
        .collect();
    let epochs: Vec<&[usize]> = stream.chunks(5).collect();
    for epoch in &epochs {
        let mut sorted = epoch.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4], "each epoch shows every image once");
    }
    assert!(
        epochs.windows(2).any(|w| w[0] != w[1]),
        "epochs are reshuffled"
    );
    // Pure in (seed, index, batch size), whatever was asked before (the epoch cache).
    let fresh = PixelTask::new(train.clone(), test_set(2), options(28, false, false), 3).unwrap();
    for i in [7, 2, 9, 0] {
        assert_eq!(fresh.train_batch(i, 3), task.train_batch(i, 3));
    }
    let other = PixelTask::new(train, test_set(2), options(28, false, false), 4).unwrap();
    let other_stream: Vec<usize> = (0..10)
        .flat_map(|i| labels(&other.train_batch(i, 3)).to_vec())
        .collect();
    assert_ne!(other_stream, stream, "the shuffle depends on the seed");
}

#[test]
fn pixel_eval_set_is_the_t10k_files_in_order_and_truncated() {
    let dir = mnist_dir("pixel-eval", &test_set(4), &test_set(5));
    let task = build_task(&pixel_spec(&dir.0, 16, false, false), 0, 100).unwrap();
    let batches = task.eval_batches(2);
    let order: Vec<usize> = batches.iter().flat_map(|b| labels(b).to_vec()).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(
        batches.iter().map(Batch::batch_size).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    let truncated = build_task(&pixel_spec(&dir.0, 16, false, false), 0, 3).unwrap();
    assert_eq!(labels(&truncated.eval_batches(10)[0]), [0, 1, 2]);
    assert_eq!(truncated.eval_batches(10)[0], task.eval_batches(3)[0]);
}

#[test]
fn standardized_pixels_have_zero_mean_and_unit_variance_over_the_training_set() {
    let train = test_set(6);
    let task = PixelTask::new(train, test_set(2), options(4, true, false), 0).unwrap();
    // One batch of 6 is exactly one epoch: every training pixel once.
    let pixels: Vec<f64> = all_sequences(&[task.train_batch(0, 6)]).concat();
    let n = pixels.len() as f64;
    let mean = pixels.iter().sum::<f64>() / n;
    let var = pixels.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    assert!(
        mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12,
        "mean {mean}, variance {var}"
    );
    // The held-out set uses the training statistics: the same affine map of the raw pixel.
    let plain = PixelTask::new(test_set(6), test_set(2), options(4, false, false), 0).unwrap();
    let (raw, std) = (
        all_sequences(&plain.eval_batches(2)).concat(),
        all_sequences(&task.eval_batches(2)).concat(),
    );
    let slope = (std[1] - std[0]) / (raw[1] - raw[0]);
    for (r, s) in raw.iter().zip(&std) {
        assert!((s - (std[0] + slope * (r - raw[0]))).abs() < 1e-9);
    }
    let flat = Labeled {
        images: Images {
            count: 1,
            rows: 2,
            cols: 2,
            pixels: vec![9; 4],
        },
        labels: vec![0],
    };
    let message = PixelTask::new(flat.clone(), flat, options(1, true, false), 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("cannot standardize"), "{message}");
}

/// The pixel each sequence position shows, decoded from test images 0 and 1 in rows `b0`, `b1`.
fn decoded_order(batch: &Batch, b0: usize, b1: usize) -> Vec<usize> {
    let (low, high) = (sequence(batch, b0), sequence(batch, b1));
    low.iter()
        .zip(&high)
        .map(|(l, h)| (l * 255.0).round() as usize + 256 * (h * 255.0).round() as usize)
        .collect()
}

#[test]
fn permutation_is_a_fixed_seeded_bijection_shared_by_train_and_eval() {
    let dir = mnist_dir("pixel-permuted", &test_set(2), &test_set(2));
    let order_for = |seed: u64, permuted: bool| {
        let task = PixelTask::load(&dir.0, options(7, false, permuted), seed, 10).unwrap();
        let train = task.train_batch(0, 2);
        let rows = |l: &[usize], i: usize| l.iter().position(|&x| x == i).unwrap();
        let train_order = decoded_order(&train, rows(labels(&train), 0), rows(labels(&train), 1));
        let eval_order = decoded_order(&task.eval_batches(2)[0], 0, 1);
        assert_eq!(
            train_order, eval_order,
            "same permutation for train and eval"
        );
        assert_eq!(train_order, task.pixel_order());
        train_order
    };
    let identity: Vec<usize> = (0..SIZE).collect();
    assert_eq!(order_for(1, false), identity);
    let permutation = order_for(1, true);
    assert_ne!(permutation, identity);
    let mut sorted = permutation.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, identity, "a bijection of the 784 pixels");
    assert_eq!(order_for(1, true), permutation, "fixed by the seed");
    assert_ne!(
        order_for(2, true),
        permutation,
        "another seed, another permutation"
    );
}

#[test]
fn pixel_directories_accept_both_names_and_report_missing_files() {
    let dir = mnist_dir("pixel-names", &test_set(3), &test_set(2));
    std::fs::remove_file(dir.0.join("t10k-labels-idx1-ubyte")).unwrap();
    let message = format!(
        "{:#}",
        build_task(&pixel_spec(&dir.0, 1, false, false), 0, 10)
            .err()
            .unwrap()
    );
    for name in ["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"] {
        assert!(
            message.contains(&dir.0.join(name).display().to_string()),
            "{message}"
        );
    }
    dir.write("t10k-labels-idx1-ubyte.gz", &gzip(&labels_bytes(&[0, 1])));
    build_task(&pixel_spec(&dir.0, 1, false, false), 0, 10).unwrap();
    // A label file of the wrong length names both files.
    dir.write("train-labels-idx1-ubyte.gz", &labels_bytes(&[0, 1]));
    let message = format!(
        "{:#}",
        build_task(&pixel_spec(&dir.0, 1, false, false), 0, 10)
            .err()
            .unwrap()
    );
    assert!(
        message.contains("2 labels") && message.contains("3 images"),
        "{message}"
    );
}

#[test]
fn pixel_sets_of_different_image_sizes_are_rejected() {
    let small = Labeled {
        images: Images {
            count: 1,
            rows: 2,
            cols: 2,
            pixels: vec![0, 1, 2, 3],
        },
        labels: vec![1],
    };
    let message = PixelTask::new(test_set(2), small, options(1, false, false), 0)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("28×28") && message.contains("2×2"),
        "{message}"
    );
}

/// The real Fashion-MNIST of Debian's `dataset-fashion-mnist`, when installed
/// (`cargo test --test tasks -- --ignored`).
#[test]
#[ignore = "needs /usr/share/datasets/fashion-mnist"]
fn reads_debian_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let task = build_task(&pixel_spec(dir, 28, true, true), 0, usize::MAX).unwrap();
    assert_eq!(
        (task.seq_len(), task.input_size(), task.output_size()),
        (28, 28, 10)
    );
    let eval = task.eval_batches(1000);
    assert_eq!(eval.iter().map(Batch::batch_size).sum::<usize>(), 10_000);
    assert_eq!(task.train_batch(59_999 / 16, 16).batch_size(), 16);
}
