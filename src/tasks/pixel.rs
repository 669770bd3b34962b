//! Pixel sequences (docs/ALGORITHM.md §6): each image of an MNIST-layout directory read as
//! T = rows·cols/k steps of k pixels.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nalgebra::DMatrix;

use super::idx::{self, Labeled, CLASSES};
use super::stream::{rng, shuffled, Purpose};
use super::{Batch, Targets, Task};
use crate::config::Loss;
use crate::error::Error;
use crate::files::not_a_file;

/// How images become sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelOptions {
    /// Pixels per step, k; must divide the image size.
    pub chunk: usize,
    /// Subtract the training-pixel mean and divide by their standard deviation (or
    /// `mean_std`'s).
    pub standardize: bool,
    /// With `standardize`: the mean and standard deviation to use instead of the training
    /// pixels' (of pixels scaled to [0, 1]; the published Fashion-MNIST experiment's are
    /// `FASHION_MNIST_MEAN_STD`).
    pub mean_std: Option<[f64; 2]>,
    /// Read the pixels in a fixed seeded order instead of row-major.
    pub permuted: bool,
}

/// Pixel-sequence classification over a training set and a held-out set.
///
/// Images stay u8 and become f64 per batch, so the training set costs one byte per pixel.
pub struct PixelTask {
    train: Labeled,
    eval: Labeled,
    chunk: usize,
    /// Step t shows pixels `order[t·k .. (t+1)·k]`; the same for training and evaluation.
    order: Vec<usize>,
    /// Input value of each u8 pixel value (scaled to [0, 1], maybe standardized).
    value: [f64; 256],
    seed: u64,
    /// The image order of the last epoch used, since consecutive batches share it.
    epoch: Mutex<Option<(u64, Arc<Vec<usize>>)>>,
}

/// Finds `train` (or `t10k`) images and labels in `dir`, under the MNIST file names
/// with or without `.gz`.
pub fn read_split(dir: &Path, split: &str) -> Result<Labeled> {
    let images = locate(dir, &format!("{split}-images-idx3-ubyte"))?;
    let labels = locate(dir, &format!("{split}-labels-idx1-ubyte"))?;
    idx::read_labeled(&images, &labels)
}

/// The regular file `name` or `name.gz` in `dir`; when neither is one, what is there
/// instead (a directory, a FIFO, a dangling link, …) or that both are missing.
fn locate(dir: &Path, name: &str) -> Result<PathBuf> {
    let candidates = [dir.join(name), dir.join(format!("{name}.gz"))];
    let kinds = candidates.clone().map(|p| not_a_file(&p));
    if let Some(i) = kinds.iter().position(Option::is_none) {
        return Ok(candidates[i].clone());
    }
    for (path, kind) in candidates.iter().zip(&kinds) {
        if let Some(kind) = kind.as_deref().filter(|&k| k != "missing") {
            return Err(
                Error::format(path, format!("the IDX file is {kind}, not a regular file")).into(),
            );
        }
    }
    bail!(
        "missing IDX file: looked for {} and {}",
        candidates[0].display(),
        candidates[1].display()
    )
}

/// Pixels of an MNIST image, 28×28: what the pixel task's sizes are checked with before
/// its files are read.
pub(crate) const MNIST_PIXELS: usize = 28 * 28;

impl PixelTask {
    /// Reads `dir` (training files `train-*`, held-out files `t10k-*`, the latter
    /// truncated to `eval_size` images); `seed` keys the permutation and the epoch shuffles.
    pub fn load(dir: &Path, options: PixelOptions, seed: u64, eval_size: usize) -> Result<Self> {
        let train = read_split(dir, "train")?;
        let mut eval = read_split(dir, "t10k")?;
        eval.truncate(eval_size);
        Self::new(train, eval, options, seed)
            .map_err(|e| anyhow!("pixel task from {}: {e:#}", dir.display()))
    }

    /// The task over already-read data.
    pub fn new(train: Labeled, eval: Labeled, options: PixelOptions, seed: u64) -> Result<Self> {
        train.check().context("the training set")?;
        eval.check().context("the held-out set")?;
        let size = train.images.image_size();
        let k = options.chunk;
        ensure!(
            k > 0 && size.is_multiple_of(k),
            "chunk k = {k} does not divide the image size {size} ({}×{} pixels)",
            train.images.rows,
            train.images.cols
        );
        ensure!(train.images.count > 0, "the training set is empty");
        let (train_shape, eval_shape) = (shape(&train), shape(&eval));
        ensure!(
            eval.images.count == 0 || train_shape == eval_shape,
            "training images are {}×{} but held-out images are {}×{}",
            train_shape.0,
            train_shape.1,
            eval_shape.0,
            eval_shape.1
        );
        let order = if options.permuted {
            shuffled(size, &mut rng(seed, Purpose::Permutation, 0))
        } else {
            (0..size).collect()
        };
        check_mean_std(options.standardize, options.mean_std)?;
        let value = pixel_values(&train, options.standardize, options.mean_std)?;
        Ok(Self {
            train,
            eval,
            chunk: k,
            order,
            value,
            seed,
            epoch: Mutex::new(None),
        })
    }

    /// Which pixel (row-major index) each sequence position shows.
    pub fn pixel_order(&self) -> &[usize] {
        &self.order
    }

    /// The shuffled image order of training epoch `epoch`.
    fn epoch_order(&self, epoch: u64) -> Arc<Vec<usize>> {
        let mut cache = self
            .epoch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*cache {
            Some((e, order)) if *e == epoch => order.clone(),
            _ => {
                let n = self.train.images.count;
                let order = Arc::new(shuffled(n, &mut rng(self.seed, Purpose::Shuffle, epoch)));
                *cache = Some((epoch, order.clone()));
                order
            }
        }
    }

    /// The sequences of images `indices` of `set`.
    fn batch(&self, set: &Labeled, indices: &[usize]) -> Batch {
        let k = self.chunk;
        let mut x = vec![DMatrix::zeros(indices.len(), k); self.seq_len()];
        for (b, &i) in indices.iter().enumerate() {
            let image = set.images.image(i);
            for (step, pixels) in x.iter_mut().zip(self.order.chunks_exact(k)) {
                for (j, &p) in pixels.iter().enumerate() {
                    step[(b, j)] = self.value[usize::from(image[p])];
                }
            }
        }
        let labels = indices
            .iter()
            .map(|&i| usize::from(set.labels[i]))
            .collect();
        Batch {
            x,
            y: Targets::Labels(labels),
        }
    }
}

/// Sizes only: a derived `Debug` would print every pixel.
impl fmt::Debug for PixelTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PixelTask")
            .field("train_images", &self.train.images.count)
            .field("eval_images", &self.eval.images.count)
            .field("shape", &shape(&self.train))
            .field("chunk", &self.chunk)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

fn shape(set: &Labeled) -> (usize, usize) {
    (set.images.rows, set.images.cols)
}

/// The constants the published Fashion-MNIST experiment standardizes its pixels with
/// (torchvision's `Normalize((0.2860,), (0.3202,))`), as `[mean, std]` of pixels in [0, 1].
pub const FASHION_MNIST_MEAN_STD: [f64; 2] = [0.2860, 0.3202];

/// Refuses a `mean_std` without `standardize`, and a mean or standard deviation no
/// standardization can use, naming the setting.
pub(crate) fn check_mean_std(standardize: bool, mean_std: Option<[f64; 2]>) -> Result<()> {
    let Some([mean, std]) = mean_std else {
        return Ok(());
    };
    let problem = if !standardize {
        "the pixels' mean and standard deviation are given but standardize is false (they \
         are what standardizing uses)"
            .to_string()
    } else if !(mean.is_finite() && std > 0.0 && std.is_finite()) {
        format!(
            "the pixels' mean must be finite and their standard deviation positive and \
             finite, got [{mean}, {std}]"
        )
    } else {
        return Ok(());
    };
    Err(Error::setting("TaskSpec::Pixel::mean_std", problem).into())
}

/// The input value of every u8 pixel value. Standardization uses `mean_std` when given,
/// else the mean and the (population) standard deviation over all training pixels, from
/// a histogram so the sums are exact in count and cheap.
fn pixel_values(
    train: &Labeled,
    standardize: bool,
    mean_std: Option<[f64; 2]>,
) -> Result<[f64; 256]> {
    let scaled: [f64; 256] = std::array::from_fn(|v| v as f64 / 255.0);
    if !standardize {
        return Ok(scaled);
    }
    if let Some([mean, std]) = mean_std {
        return Ok(scaled.map(|v| (v - mean) / std));
    }
    let mut counts = [0u64; 256];
    for &p in &train.images.pixels {
        counts[usize::from(p)] += 1;
    }
    let n = train.images.pixels.len() as f64;
    let weighted = || counts.iter().zip(&scaled).map(|(&c, &v)| (c as f64, v));
    let mean = weighted().map(|(c, v)| c * v).sum::<f64>() / n;
    let var = weighted().map(|(c, v)| c * (v - mean).powi(2)).sum::<f64>() / n;
    ensure!(
        var > 0.0,
        "cannot standardize: every training pixel equals {mean}"
    );
    let std = var.sqrt();
    Ok(scaled.map(|v| (v - mean) / std))
}

impl Task for PixelTask {
    fn input_size(&self) -> usize {
        self.chunk
    }
    fn output_size(&self) -> usize {
        CLASSES
    }
    fn seq_len(&self) -> usize {
        self.order.len() / self.chunk
    }
    fn loss(&self) -> Loss {
        Loss::CrossEntropy
    }
    fn train_batch(&self, index: u64, batch_size: usize) -> Batch {
        let n = self.train.images.count as u128;
        let start = u128::from(index) * batch_size as u128;
        let indices: Vec<usize> = (start..start + batch_size as u128)
            .map(|pos| {
                // Wraps only past 2^64 epochs, which no run reaches.
                let order = self.epoch_order((pos / n) as u64);
                order[(pos % n) as usize]
            })
            .collect();
        self.batch(&self.train, &indices)
    }
    fn eval_batches(&self, batch_size: usize) -> Vec<Batch> {
        assert!(batch_size > 0, "evaluation batch size must be positive");
        let all: Vec<usize> = (0..self.eval.images.count).collect();
        all.chunks(batch_size)
            .map(|c| self.batch(&self.eval, c))
            .collect()
    }
}
