//! Tasks of docs/ALGORITHM.md §6 read from files: IDX reading (raw and gzipped, malformed
//! and fuzzed input) and the pixel-sequence tasks built on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use flate2::write::GzEncoder;
use rand::Rng;
use tpri::config::Loss;
use tpri::tasks::idx::{self, Images, Labeled};
use tpri::tasks::{build_task, Batch, PixelDataset, PixelOptions, PixelTask, Task, TaskSpec};

mod support;
mod task_support;

use task_support::{all_sequences, assert_shape, labels, sequence};

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

// ---------- IDX ----------

fn small_images() -> Images {
    Images {
        count: 3,
        channels: 1,
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
        channels: 1,
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
        channels: 1,
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
        dataset: PixelDataset::Mnist,
        chunk,
        standardize,
        permuted,
        mean_std: None,
    }
}

fn options(chunk: usize, standardize: bool, permuted: bool) -> PixelOptions {
    PixelOptions {
        chunk,
        standardize,
        permuted,
        dataset: PixelDataset::Mnist,
        mean_std: None,
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
        let batch = task.train_batch(0, 4).unwrap();
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
        .flat_map(|i| labels(&task.train_batch(i, 3).unwrap()).to_vec())
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
        assert_eq!(
            fresh.train_batch(i, 3).unwrap(),
            task.train_batch(i, 3).unwrap()
        );
    }
    let other = PixelTask::new(train, test_set(2), options(28, false, false), 4).unwrap();
    let other_stream: Vec<usize> = (0..10)
        .flat_map(|i| labels(&other.train_batch(i, 3).unwrap()).to_vec())
        .collect();
    assert_ne!(other_stream, stream, "the shuffle depends on the seed");
}

#[test]
fn pixel_eval_set_is_the_t10k_files_in_order_and_truncated() {
    let dir = mnist_dir("pixel-eval", &test_set(4), &test_set(5));
    let task = build_task(&pixel_spec(&dir.0, 16, false, false), 0, 100).unwrap();
    let batches = task.eval_batches(2).unwrap();
    let order: Vec<usize> = batches.iter().flat_map(|b| labels(b).to_vec()).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    assert_eq!(
        batches.iter().map(Batch::batch_size).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    let truncated = build_task(&pixel_spec(&dir.0, 16, false, false), 0, 3).unwrap();
    assert_eq!(labels(&truncated.eval_batches(10).unwrap()[0]), [0, 1, 2]);
    assert_eq!(
        truncated.eval_batches(10).unwrap()[0],
        task.eval_batches(3).unwrap()[0]
    );
}

#[test]
fn standardized_pixels_have_zero_mean_and_unit_variance_over_the_training_set() {
    let train = test_set(6);
    let task = PixelTask::new(train, test_set(2), options(4, true, false), 0).unwrap();
    // One batch of 6 is exactly one epoch: every training pixel once.
    let pixels: Vec<f64> = all_sequences(&[task.train_batch(0, 6).unwrap()]).concat();
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
        all_sequences(&plain.eval_batches(2).unwrap()).concat(),
        all_sequences(&task.eval_batches(2).unwrap()).concat(),
    );
    let slope = (std[1] - std[0]) / (raw[1] - raw[0]);
    for (r, s) in raw.iter().zip(&std) {
        assert!((s - (std[0] + slope * (r - raw[0]))).abs() < 1e-9);
    }
    let flat = Labeled {
        images: Images {
            count: 1,
            channels: 1,
            rows: 2,
            cols: 2,
            pixels: vec![9; 4],
        },
        labels: vec![0],
    };
    let message = PixelTask::new(flat.clone(), flat.clone(), options(1, true, false), 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("cannot standardize"), "{message}");
    // Given constants (the published Fashion-MNIST ones) replace the training statistics,
    // even for a set where those do not exist; a zero deviation is refused.
    let fixed = |mean_std| PixelOptions {
        mean_std,
        ..options(1, true, false)
    };
    let [m, sd] = tpri::tasks::pixel::FASHION_MNIST_MEAN_STD;
    let task = PixelTask::new(flat.clone(), flat.clone(), fixed(Some([m, sd])), 0).unwrap();
    let pixels = all_sequences(&task.eval_batches(1).unwrap()).concat();
    assert!(
        pixels.iter().all(|&v| v == (9.0 / 255.0 - m) / sd),
        "{pixels:?}"
    );
    let message = format!(
        "{:#}",
        PixelTask::new(flat.clone(), flat, fixed(Some([m, 0.0])), 0).unwrap_err()
    );
    assert!(message.contains("TaskSpec::Pixel::mean_std"), "{message}");
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
        let train = task.train_batch(0, 2).unwrap();
        let rows = |l: &[usize], i: usize| l.iter().position(|&x| x == i).unwrap();
        let train_order = decoded_order(&train, rows(labels(&train), 0), rows(labels(&train), 1));
        let eval_order = decoded_order(&task.eval_batches(2).unwrap()[0], 0, 1);
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
            channels: 1,
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
/// (`cargo test --test pixel_tasks -- --ignored`).
#[test]
#[ignore = "needs /usr/share/datasets/fashion-mnist"]
fn reads_debian_fashion_mnist() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    let task = build_task(&pixel_spec(dir, 28, true, true), 0, usize::MAX).unwrap();
    assert_eq!(
        (task.seq_len(), task.input_size(), task.output_size()),
        (28, 28, 10)
    );
    let eval = task.eval_batches(1000).unwrap();
    assert_eq!(eval.iter().map(Batch::batch_size).sum::<usize>(), 10_000);
    assert_eq!(task.train_batch(59_999 / 16, 16).unwrap().batch_size(), 16);
}
