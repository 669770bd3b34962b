//! Reader of the IDX files that hold MNIST and Fashion-MNIST: u8 images `[n, rows, cols]`
//! (magic 0x00000803) and u8 labels `[n]` (magic 0x00000801), gzipped or raw; and the
//! labelled images that every pixel dataset is read into (`super::cifar` reads CIFAR-10's
//! files into them too).
//!
//! Compression is detected from the gzip magic bytes, not the file name. Every
//! malformed input is an error naming the file and the problem; no byte string panics.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use flate2::read::MultiGzDecoder;

use crate::error::Error;

/// Labels are classes `0..CLASSES`.
pub const CLASSES: usize = 10;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// `count` images of `channels × rows × cols` u8 pixels, one after another: each image
/// channel-major (its channels' planes one after another), each plane row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Number of images n.
    pub count: usize,
    /// Planes per image: 1 for grey images (IDX files), 3 for colour (red, green, blue).
    pub channels: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count · channels · rows · cols` bytes.
    pub pixels: Vec<u8>,
}

impl Images {
    /// Values per image, `channels · rows · cols` (saturating).
    pub fn image_size(&self) -> usize {
        self.plane_size().saturating_mul(self.channels)
    }

    /// Pixels per plane (one channel of one image), `rows · cols` (saturating).
    pub fn plane_size(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }

    /// The shape of one image as errors name it: `rows×cols`, or `channels×rows×cols`
    /// for colour images.
    pub fn shape(&self) -> String {
        match self.channels {
            1 => format!("{}×{}", self.rows, self.cols),
            c => format!("{c}×{}×{}", self.rows, self.cols),
        }
    }

    /// The pixels of image `i`; `None` past the last image (or for images inconsistent
    /// with their sizes, which [`Labeled::check`] refuses).
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.image_size();
        let start = i.checked_mul(size)?;
        self.pixels.get(start..start.checked_add(size)?)
    }

    /// Keeps only the first `count` images (no-op when there are fewer).
    pub fn truncate(&mut self, count: usize) {
        self.count = self.count.min(count);
        self.pixels.truncate(self.count * self.image_size());
    }
}

/// Images with one label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Labeled {
    /// The images.
    pub images: Images,
    /// One class in `0..CLASSES` per image.
    pub labels: Vec<u8>,
}

impl Labeled {
    /// Checks that the fields agree: non-empty images of `channels · rows · cols` pixels,
    /// `count` of them in `pixels`, one label per image, every label a class in
    /// `0..CLASSES`.
    pub fn check(&self) -> Result<()> {
        let i = &self.images;
        let problem = if i.channels == 0 || i.rows == 0 || i.cols == 0 {
            Some(format!("empty images of {} pixels", i.shape()))
        } else if i
            .rows
            .checked_mul(i.cols)
            .and_then(|s| s.checked_mul(i.channels))
            .and_then(|s| s.checked_mul(i.count))
            != Some(i.pixels.len())
        {
            Some(format!(
                "{} pixels for {} images of {} pixels",
                i.pixels.len(),
                i.count,
                i.shape()
            ))
        } else if self.labels.len() != i.count {
            Some(format!(
                "{} labels for {} images",
                self.labels.len(),
                i.count
            ))
        } else {
            check_labels(&self.labels).err().map(|e| e.to_string())
        };
        match problem {
            Some(p) => Err(Error::value("Labeled", p).into()),
            None => Ok(()),
        }
    }

    /// Keeps only the first `count` examples.
    pub fn truncate(&mut self, count: usize) {
        self.images.truncate(count);
        self.labels.truncate(self.images.count);
    }
}

/// Reads an image file.
pub fn read_images(path: &Path) -> Result<Images> {
    parse_images(open(path)?, path)
}

/// Reads a label file; every label must be below [`CLASSES`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(open(path)?, path)
}

/// Reads an image file and its label file, which must hold as many labels as images.
pub fn read_labeled(images: &Path, labels: &Path) -> Result<Labeled> {
    let images_read = read_images(images)?;
    let labels_read = read_labels(labels)?;
    if images_read.count != labels_read.len() {
        let problem = format!(
            "the IDX label file holds {} labels but the image file {} holds {} images",
            labels_read.len(),
            images.display(),
            images_read.count
        );
        return Err(Error::format(labels, problem).into());
    }
    Ok(Labeled {
        images: images_read,
        labels: labels_read,
    })
}

/// Parses image-file bytes from `source`; `path` only names the file in errors.
pub fn parse_images(source: impl Read, path: &Path) -> Result<Images> {
    let (dims, pixels) = parse(source, IMAGES_MAGIC, 3).map_err(|e| in_file(path, e))?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(in_file(
            path,
            anyhow!("empty images of {rows}×{cols} pixels"),
        ));
    }
    Ok(Images {
        count,
        channels: 1,
        rows,
        cols,
        pixels,
    })
}

/// Parses label-file bytes from `source`; `path` only names the file in errors.
pub fn parse_labels(source: impl Read, path: &Path) -> Result<Vec<u8>> {
    let (_, labels) = parse(source, LABELS_MAGIC, 1).map_err(|e| in_file(path, e))?;
    check_labels(&labels).map_err(|e| in_file(path, e))?;
    Ok(labels)
}

/// Checks that every label is a class in `0..CLASSES`, naming the first that is not.
pub(crate) fn check_labels(labels: &[u8]) -> Result<()> {
    match labels.iter().position(|&l| usize::from(l) >= CLASSES) {
        Some(i) => bail!(
            "label {} at index {i} is not a class in 0..{CLASSES}",
            labels[i]
        ),
        None => Ok(()),
    }
}

fn open(path: &Path) -> Result<File> {
    crate::files::open_regular(path, "IDX file")
}

/// One flat message rather than a context chain, so that printing the error with `{}`
/// still shows the problem: a `Format` error of the file.
fn in_file(path: &Path, problem: anyhow::Error) -> anyhow::Error {
    Error::format(path, format!("not a valid IDX file: {problem:#}")).into()
}

/// Checks the magic number and returns the dimensions and the data bytes.
fn parse(source: impl Read, magic: u32, ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut reader = decompressed(source)?;
    // The magic number first, so a file of the other kind is named as such.
    let found = read_words(&mut reader, 1)?[0];
    if found != magic {
        let hint = match found {
            IMAGES_MAGIC => " (this is an image file)",
            LABELS_MAGIC => " (this is a label file)",
            _ => "",
        };
        bail!("wrong magic number 0x{found:08x}, expected 0x{magic:08x}{hint}");
    }
    let dims: Vec<usize> = read_words(&mut reader, ndims)?
        .into_iter()
        .map(|d| d as usize)
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| anyhow!("dimensions {dims:?} overflow the address space"))?;
    let data = read_up_to(&mut reader, len)?;
    ensure!(
        data.len() == len,
        "truncated data: dimensions {dims:?} need {len} bytes, found {}",
        data.len()
    );
    // Reading on also lets the gzip decoder verify its checksum.
    let trailing = io::copy(&mut reader, &mut io::sink()).context("cannot read or decompress")?;
    ensure!(
        trailing == 0,
        "trailing garbage: {trailing} more bytes after the data"
    );
    Ok((dims, data))
}

/// `count` big-endian u32 header words.
fn read_words(reader: &mut impl Read, count: usize) -> Result<Vec<u32>> {
    let bytes = read_up_to(reader, 4 * count)?;
    ensure!(
        bytes.len() == 4 * count,
        "truncated header: ends {} bytes short",
        4 * count - bytes.len()
    );
    Ok(bytes
        .chunks_exact(4)
        .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
        .collect())
}

/// `source`, gunzipped when it starts with the gzip magic bytes.
fn decompressed<'a>(mut source: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let head = read_up_to(&mut source, GZIP_MAGIC.len())?;
    let is_gzip = head == GZIP_MAGIC;
    let whole = Cursor::new(head).chain(source);
    Ok(if is_gzip {
        Box::new(MultiGzDecoder::new(whole))
    } else {
        Box::new(whole)
    })
}

/// Up to `len` bytes; fewer only at the end of the input.
fn read_up_to(reader: &mut impl Read, len: usize) -> Result<Vec<u8>> {
    crate::files::read_up_to(reader, len).context("cannot read or decompress")
}
