//! Pixel sequences (docs/ALGORITHM.md §6): each image of an MNIST-layout directory (or of
//! CIFAR-10's binary version) read as T = channels·rows·cols/k steps of k pixels.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use super::cifar;
use super::idx::{self, Labeled, CLASSES};
use super::stream::{rng, shuffled, Purpose};
use super::{Batch, Targets, Task};
use crate::config::Loss;
use crate::error::Error;
use crate::files::not_a_file;

/// Which files a pixel task reads, and how they are standardized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum PixelDataset {
    /// An MNIST-layout directory of IDX files, e.g. MNIST or Fashion-MNIST: 28×28 grey
    /// images; standardizing uses the mean and deviation of the training pixels.
    #[default]
    Mnist,
    /// CIFAR-10's binary version: 3×32×32 colour images read channel-major (red plane,
    /// green, blue); standardizing uses the published per-channel means 0.4914, 0.4822,
    /// 0.4465 and deviations 0.247, 0.243, 0.261 (`cifar::MEAN`, `cifar::STD`).
    Cifar10,
}

impl PixelDataset {
    /// Values per image: the sequence length at one value per step.
    pub fn image_size(self) -> usize {
        match self {
            PixelDataset::Mnist => MNIST_PIXELS,
            PixelDataset::Cifar10 => cifar::PIXELS,
        }
    }

    /// The fixed (mean, standard deviation) of each channel that standardization uses,
    /// or `None` where they are measured on the training pixels.
    fn fixed_statistics(self) -> Option<Vec<(f64, f64)>> {
        match self {
            PixelDataset::Mnist => None,
            PixelDataset::Cifar10 => Some(cifar::MEAN.into_iter().zip(cifar::STD).collect()),
        }
    }

    /// Reads the training and held-out sets of `dir`, the latter truncated to `eval_size`.
    fn read(self, dir: &Path, eval_size: usize) -> Result<(Labeled, Labeled)> {
        let (train, mut eval) = match self {
            PixelDataset::Mnist => (read_split(dir, "train")?, read_split(dir, "t10k")?),
            PixelDataset::Cifar10 => (cifar::read_train(dir)?, cifar::read_test(dir)?),
        };
        eval.truncate(eval_size);
        Ok((train, eval))
    }
}

/// How images become sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelOptions {
    /// Pixels per step, k; must divide the image size.
    pub chunk: usize,
    /// Subtract each channel's mean and divide by its standard deviation: `mean_std`'s,
    /// else the dataset's fixed ones ([`PixelDataset`]), else the training pixels'.
    pub standardize: bool,
    /// With `standardize`: the mean and standard deviation to use for every channel (of
    /// pixels scaled to [0, 1]; the published Fashion-MNIST experiment's are
    /// `FASHION_MNIST_MEAN_STD`).
    pub mean_std: Option<[f64; 2]>,
    /// Read the pixels in a fixed seeded order instead of in storage order.
    pub permuted: bool,
    /// Which files `PixelTask::load` reads, and which statistics standardize them.
    pub dataset: PixelDataset,
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
    /// Per channel, the input value of each u8 pixel value (scaled to [0, 1], maybe
    /// standardized).
    values: Vec<[f64; 256]>,
    /// Pixels per channel plane: pixel p belongs to channel `p / plane`.
    plane: usize,
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
const MNIST_PIXELS: usize = 28 * 28;

impl PixelTask {
    /// Reads `dir` in the layout of `options.dataset` (MNIST: training files `train-*`,
    /// held-out files `t10k-*`; CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin`, then
    /// `test_batch.bin`), the held-out set truncated to `eval_size` images; `seed` keys the
    /// permutation and the epoch shuffles.
    pub fn load(dir: &Path, options: PixelOptions, seed: u64, eval_size: usize) -> Result<Self> {
        let (train, eval) = options.dataset.read(dir, eval_size)?;
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
            "chunk k = {k} does not divide the image size {size} ({} pixels)",
            train.images.shape()
        );
        ensure!(train.images.count > 0, "the training set is empty");
        ensure!(
            eval.images.count == 0 || shape(&train) == shape(&eval),
            "training images are {} but held-out images are {}",
            train.images.shape(),
            eval.images.shape()
        );
        // Pixels are permuted across channels, as the published code permutes the whole
        // flattened image; each keeps its channel's standardization.
        let order = if options.permuted {
            shuffled(size, &mut rng(seed, Purpose::Permutation, 0))
        } else {
            (0..size).collect()
        };
        check_mean_std(options.standardize, options.mean_std)?;
        let values = pixel_values(&train, options)?;
        Ok(Self {
            plane: train.images.plane_size(),
            train,
            eval,
            chunk: k,
            order,
            values,
            seed,
            epoch: Mutex::new(None),
        })
    }

    /// Which pixel (index in the stored image: channel-major, row-major within a channel)
    /// each sequence position shows.
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
    fn batch(&self, set: &Labeled, indices: &[usize]) -> Result<Batch> {
        super::check_batch_alloc(self.seq_len(), indices.len(), self.chunk)?;
        let k = self.chunk;
        let mut x = vec![DMatrix::zeros(indices.len(), k); self.seq_len()];
        for (b, &i) in indices.iter().enumerate() {
            let image = set
                .images
                .image(i)
                .ok_or_else(|| anyhow!("image {i} is past the {} images read", set.images.count))?;
            for (step, pixels) in x.iter_mut().zip(self.order.chunks_exact(k)) {
                for (j, &p) in pixels.iter().enumerate() {
                    step[(b, j)] = self.values[p / self.plane][usize::from(image[p])];
                }
            }
        }
        let labels = indices
            .iter()
            .map(|&i| usize::from(set.labels[i]))
            .collect();
        Ok(Batch {
            tokens: None,
            x,
            y: Targets::Labels(labels),
        })
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

fn shape(set: &Labeled) -> (usize, usize, usize) {
    (set.images.channels, set.images.rows, set.images.cols)
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

/// Per channel, the input value of every u8 pixel value v: v/255, then when standardizing
/// `(v/255 − mean) / std` with `options.mean_std` for every channel, else the dataset's
/// fixed statistics of that channel, else the mean and deviation of all training pixels.
fn pixel_values(train: &Labeled, options: PixelOptions) -> Result<Vec<[f64; 256]>> {
    let scaled: [f64; 256] = std::array::from_fn(|v| v as f64 / 255.0);
    let channels = train.images.channels;
    if !options.standardize {
        return Ok(vec![scaled; channels]);
    }
    let statistics = match (options.mean_std, options.dataset.fixed_statistics()) {
        (Some([mean, std]), _) => vec![(mean, std); channels],
        (None, Some(fixed)) => {
            ensure!(
                fixed.len() == channels,
                "the {:?} statistics cover {} channels but the images have {channels}",
                options.dataset,
                fixed.len()
            );
            fixed
        }
        (None, None) => vec![measured(train, &scaled)?; channels],
    };
    Ok(statistics
        .into_iter()
        .map(|(mean, std)| scaled.map(|v| (v - mean) / std))
        .collect())
}

/// The mean and the (population) standard deviation over all training pixels, from a
/// histogram so the sums are exact in count and cheap.
fn measured(train: &Labeled, scaled: &[f64; 256]) -> Result<(f64, f64)> {
    let mut counts = [0u64; 256];
    for &p in &train.images.pixels {
        counts[usize::from(p)] += 1;
    }
    let n = train.images.pixels.len() as f64;
    let weighted = || counts.iter().zip(scaled).map(|(&c, &v)| (c as f64, v));
    let mean = weighted().map(|(c, v)| c * v).sum::<f64>() / n;
    let var = weighted().map(|(c, v)| c * (v - mean).powi(2)).sum::<f64>() / n;
    ensure!(
        var > 0.0,
        "cannot standardize: every training pixel equals {mean}"
    );
    Ok((mean, var.sqrt()))
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
    fn train_batch(&self, index: u64, batch_size: usize) -> Result<Batch> {
        super::check_batch_alloc(self.seq_len(), batch_size, self.chunk)?;
        ensure!(
            self.train.images.count > 0,
            "the training set holds no image"
        );
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
    fn eval_batches(&self, batch_size: usize) -> Result<Vec<Batch>> {
        super::check_eval_batch_size(batch_size)?;
        let all: Vec<usize> = (0..self.eval.images.count).collect();
        all.chunks(batch_size)
            .map(|c| self.batch(&self.eval, c))
            .collect()
    }
}
