//! Reader of CIFAR-10's binary version (`cifar-10-binary.tar.gz` from
//! <https://www.cs.toronto.edu/~kriz/cifar.html>, which unpacks to `cifar-10-batches-bin/`):
//! files of 3073-byte records, a label byte (a class in 0..10) then 3072 pixel bytes,
//! channel-major: the 32×32 red plane row by row, then the green plane, then the blue.
//!
//! Sizes are checked before anything is allocated: a file must hold a whole number of
//! records, at least one and at most the 10 000 of every file of the layout, so memory is
//! bounded by what the files may hold. Every malformed input is an error naming the file
//! and the problem; no byte string panics.

use std::io::Read;
use std::path::Path;

use anyhow::{ensure, Result};

use super::idx::{check_labels, Images, Labeled};
use crate::error::Error;
use crate::files::{not_a_file, open_regular, read_up_to};

/// Colour planes per image: red, green, blue.
pub const CHANNELS: usize = 3;
/// Rows and columns of every image.
pub const SIDE: usize = 32;
/// Values per image, `3 · 32 · 32`.
pub const PIXELS: usize = CHANNELS * SIDE * SIDE;
/// Bytes per record: the label, then the pixels.
pub const RECORD: usize = 1 + PIXELS;
/// Records per file in the layout; a file may hold fewer (the tests' files do), never more.
pub const MAX_RECORDS: usize = 10_000;
/// The training files, read in this order as one set of 50 000 images.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file: the held-out set.
pub const TEST_FILE: &str = "test_batch.bin";
/// Per-channel means of the scaled pixels (value/255), as the published code normalizes
/// CIFAR-10 (torchvision's `Normalize(mean, std)`).
pub const MEAN: [f64; CHANNELS] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviations that go with [`MEAN`].
pub const STD: [f64; CHANNELS] = [0.247, 0.243, 0.261];

/// The training set: `data_batch_1.bin` … `data_batch_5.bin` of `dir`, in that order.
pub fn read_train(dir: &Path) -> Result<Labeled> {
    read_files(dir, &TRAIN_FILES)
}

/// The held-out set: `test_batch.bin` of `dir`.
pub fn read_test(dir: &Path) -> Result<Labeled> {
    read_files(dir, &[TEST_FILE])
}

/// Parses the bytes of one CIFAR-10 file from `source` (at most one file's worth is
/// read); `path` only names the file in errors.
pub fn parse_batch(mut source: impl Read, path: &Path) -> Result<Labeled> {
    // One byte past the largest file tells a file that is too long from one that is not.
    let bytes = read_up_to(&mut source, MAX_RECORDS * RECORD + 1)
        .map_err(|e| Error::io(path, "cannot read the CIFAR-10 file", e))?;
    let records = records_in(bytes.len() as u64).map_err(|e| in_file(path, e))?;
    let mut set = empty(records);
    decode(&bytes, &mut set).map_err(|e| in_file(path, e))?;
    Ok(set)
}

/// Reads `names` in `dir` as one set. Every file is opened and its size checked before
/// any is read, so a bad last file is reported without reading the others, and the set
/// is allocated once.
fn read_files(dir: &Path, names: &[&str]) -> Result<Labeled> {
    let mut opened = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        if not_a_file(&path).as_deref() == Some("missing") {
            return Err(missing(dir, &path));
        }
        let file = open_regular(&path, "CIFAR-10 file")?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(&path, "cannot read the CIFAR-10 file", e))?
            .len();
        let records = records_in(len).map_err(|e| in_file(&path, e))?;
        opened.push((path, file, records));
    }
    let mut set = empty(opened.iter().map(|(_, _, records)| records).sum());
    for (path, mut file, records) in opened {
        let expected = records * RECORD;
        let bytes = read_up_to(&mut file, expected + 1)
            .map_err(|e| Error::io(&path, "cannot read the CIFAR-10 file", e))?;
        if bytes.len() != expected {
            let problem = format!(
                "its size changed while it was read ({expected} bytes, then {}{})",
                bytes.len().min(expected),
                if bytes.len() > expected {
                    " and more"
                } else {
                    ""
                }
            );
            return Err(Error::format(&path, problem).into());
        }
        decode(&bytes, &mut set).map_err(|e| in_file(&path, e))?;
    }
    Ok(set)
}

/// The error of a missing file, saying what the directory should hold.
fn missing(dir: &Path, path: &Path) -> anyhow::Error {
    let problem = format!(
        "missing CIFAR-10 file: {} should hold CIFAR-10's binary version ({} … {} and {}, \
         as cifar-10-binary.tar.gz unpacks them into cifar-10-batches-bin/)",
        dir.display(),
        TRAIN_FILES[0],
        TRAIN_FILES[TRAIN_FILES.len() - 1],
        TEST_FILE
    );
    Error::format(path, problem).into()
}

/// One flat message rather than a context chain, so that printing the error with `{}`
/// still shows the problem: a `Format` error of the file.
fn in_file(path: &Path, problem: anyhow::Error) -> anyhow::Error {
    Error::format(
        path,
        format!("not a valid CIFAR-10 binary file: {problem:#}"),
    )
    .into()
}

/// The number of records in a file of `len` bytes, when it is a whole number within the
/// layout's.
fn records_in(len: u64) -> Result<usize> {
    ensure!(
        len > 0,
        "the file is empty (records are {RECORD} bytes: a label byte and {PIXELS} pixels)"
    );
    ensure!(
        len <= (MAX_RECORDS * RECORD) as u64,
        "longer than the {MAX_RECORDS} records of {RECORD} bytes ({} bytes) that a file of \
         the layout holds",
        MAX_RECORDS * RECORD
    );
    let (whole, rest) = (len / RECORD as u64, len % RECORD as u64);
    ensure!(
        rest == 0,
        "truncated or of the wrong size: {len} bytes are {whole} records of {RECORD} bytes \
         and {rest} bytes more"
    );
    // At most MAX_RECORDS, so it fits any usize.
    Ok(whole as usize)
}

/// A set with room for `records` images and no image yet.
fn empty(records: usize) -> Labeled {
    Labeled {
        images: Images {
            count: 0,
            channels: CHANNELS,
            rows: SIDE,
            cols: SIDE,
            pixels: Vec::with_capacity(records * PIXELS),
        },
        labels: Vec::with_capacity(records),
    }
}

/// Appends the records of `bytes` (a whole number of them) to `set`; a label out of range
/// is named by its record's index in `bytes`.
fn decode(bytes: &[u8], set: &mut Labeled) -> Result<()> {
    let first = set.labels.len();
    for record in bytes.chunks_exact(RECORD) {
        set.labels.push(record[0]);
        set.images.pixels.extend_from_slice(&record[1..]);
    }
    set.images.count = set.labels.len();
    check_labels(&set.labels[first..])
}
