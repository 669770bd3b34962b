//! Bounded fuzzing of the library's readers (issue 14): the IDX and CIFAR-10 readers, the safetensors
//! loading of parameters, batches and checkpoints, and the TOML config loader. Each target
//! starts from the committed corpus of malformed inputs (tests/corpus/, see its README),
//! then mutates it at random — bit flips, truncations, inserted bytes, header fields and
//! numbers swapped for 0, huge or non-finite values — for a bounded number of cases and
//! at most a few seconds, asserting that every input gives a result or a clear error,
//! never a panic, a hang or an unbounded allocation.
//!
//! `TPRI_FUZZ_SEED=n` fuzzes from another seed; `TPRI_FUZZ_CASES=n` runs more cases.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use nalgebra::DMatrix;
use tpri::backend::Backend;
use tpri::config::Hyper;
use tpri::cpu::CpuBackend;
use tpri::model::Dims;
use tpri::tasks::cifar::parse_batch;
use tpri::tasks::idx::{parse_images, parse_labels};
use tpri::tasks::{Batch, Targets};
use tpri::tensor_file::{load_batch, load_params};
use tpri::train::RunConfig;

/// Wall-clock budget of one target.
const BUDGET: Duration = Duration::from_secs(4);

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

/// The corpus files of `kind` (sorted), with their bytes.
fn corpus(kind: &str, ext: Option<&str>) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {kind}");
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn seed() -> u64 {
    std::env::var("TPRI_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14)
}

fn max_cases() -> usize {
    std::env::var("TPRI_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
}

/// A number that breaks sizes or arithmetic.
fn nasty_number(rng: &mut ChaCha8Rng) -> String {
    const POOL: [&str; 12] = [
        "0",
        "-1",
        "1",
        "4294967296",
        "3037000500",
        "18446744073709551615",
        "18446744073709551616",
        "1000000000",
        "nan",
        "inf",
        "-inf",
        "1e308",
    ];
    POOL[rng.random_range(0..POOL.len())].to_string()
}

/// A random mutation of `bytes`: flipped bits, a cut, inserted or overwritten bytes, a
/// big-endian or little-endian word set to 0 or a huge value.
fn mutate(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..rng.random_range(1..4) {
        let len = b.len();
        match rng.random_range(0..6) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => b.truncate(rng.random_range(0..len)),
            2 => {
                let at = rng.random_range(0..=len);
                let n = rng.random_range(1..9);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(at..at, junk);
            }
            3 if len >= 4 => {
                let i = rng.random_range(0..=len - 4);
                let word: u32 = [0, 1, 0x7fff_ffff, u32::MAX][rng.random_range(0..4)];
                b[i..i + 4].copy_from_slice(&word.to_be_bytes());
            }
            4 if len >= 8 => {
                let i = rng.random_range(0..=len - 8);
                let word: u64 = [0, 1, 1 << 40, u64::MAX][rng.random_range(0..4)];
                b[i..i + 8].copy_from_slice(&word.to_le_bytes());
            }
            _ if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            _ => b.push(rng.random()),
        }
    }
    b
}

/// A mutation of a safetensors file that keeps it parseable more often than raw bytes
/// do: its JSON header with a shape entry, dtype, offset or name changed, or a tensor
/// dropped or duplicated, then re-serialized (so that the loader's checks, not just the
/// format's, are exercised).
fn mutate_header(rng: &mut ChaCha8Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(len)?)?;
    let data = &bytes[8 + len..];
    let mut json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).ok()?;
    let names: Vec<String> = json
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    if names.is_empty() {
        return None;
    }
    let name = names[rng.random_range(0..names.len())].clone();
    let mut text = None;
    match rng.random_range(0..6) {
        0 => {
            let entry = json.get_mut(&name)?;
            let shape = entry.get_mut("shape")?.as_array_mut()?;
            let n: u64 = [0, 1, 2, 1 << 32, 1 << 40, u64::MAX][rng.random_range(0..6)];
            if shape.is_empty() || rng.random_bool(0.2) {
                shape.push(n.into());
            } else {
                let i = rng.random_range(0..shape.len());
                shape[i] = n.into();
            }
        }
        1 => {
            let dtype = [
                "F64", "F32", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3",
            ][rng.random_range(0..9)];
            json.get_mut(&name)?["dtype"] = dtype.into();
        }
        2 => {
            let entry = json.remove(&name)?;
            let new = [
                "junk",
                "rnn.b_hh",
                "gru.w_hh",
                "x",
                "y",
                "head.w",
                "params.rnn.w_hh",
            ][rng.random_range(0..7)];
            json.insert(new.into(), entry);
        }
        3 => {
            json.remove(&name);
        }
        4 => {
            let offsets = json
                .get_mut(&name)?
                .get_mut("data_offsets")?
                .as_array_mut()?;
            let i = rng.random_range(0..offsets.len().max(1));
            if let Some(o) = offsets.get_mut(i) {
                *o = [0u64, 1, 7, u64::MAX][rng.random_range(0..4)].into();
            }
        }
        _ => {
            // The same tensor named twice, written out by hand (a map cannot hold it).
            let entry = serde_json::to_string(json.get(&name)?).ok()?;
            let body = serde_json::to_string(&json).ok()?;
            let key = serde_json::to_string(&name).ok()?;
            text = Some(format!("{{{key}:{entry},{}", &body[1..]));
        }
    }
    let mut header = text.unwrap_or_else(|| serde_json::to_string(&json).unwrap_or_default());
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Some(out)
}

/// A text mutation of a TOML file: a number replaced by a nasty one, a line dropped or
/// doubled, a key renamed, or raw byte damage.
fn mutate_toml(rng: &mut ChaCha8Rng, text: &[u8]) -> Vec<u8> {
    let Ok(s) = std::str::from_utf8(text) else {
        return mutate(rng, text);
    };
    let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
    if lines.is_empty() || rng.random_bool(0.15) {
        return mutate(rng, text);
    }
    let i = rng.random_range(0..lines.len());
    match rng.random_range(0..4) {
        0 => {
            if let Some((key, _)) = lines[i].split_once('=') {
                lines[i] = format!("{key}= {}", nasty_number(rng));
            }
        }
        1 => {
            lines.remove(i);
        }
        2 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        _ => {
            if let Some((_, value)) = lines[i].split_once('=') {
                let key = [
                    "hidden",
                    "batch_size",
                    "eval_size",
                    "seq_len",
                    "chunk",
                    "lr",
                    "reg",
                ][rng.random_range(0..7)];
                lines[i] = format!("{key} ={value}");
            }
        }
    }
    lines.join("\n").into_bytes()
}

/// Runs `check` on every corpus input, then on mutations of them, within the budget;
/// fails listing the inputs that panicked (written to the temp dir for replay).
fn fuzz(
    name: &str,
    seeds: &[(PathBuf, Vec<u8>)],
    mutate_one: &dyn Fn(&mut ChaCha8Rng, &[u8]) -> Vec<u8>,
    check: &dyn Fn(&[u8]),
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let start = Instant::now();
    let mut panicked: Vec<String> = Vec::new();
    let mut run = |input: &[u8], what: String| {
        if catch_unwind(AssertUnwindSafe(|| check(input))).is_err() {
            let keep = std::env::temp_dir().join(format!(
                "tpri-fuzz-{name}-{}-{}",
                std::process::id(),
                panicked.len()
            ));
            let _ = std::fs::write(&keep, input);
            panicked.push(format!("{what} (kept as {})", keep.display()));
        }
    };
    for (path, bytes) in seeds {
        run(bytes, format!("corpus file {}", path.display()));
    }
    let mut cases = 0;
    while cases < max_cases() && start.elapsed() < BUDGET {
        let (path, bytes) = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate_one(&mut rng, bytes);
        run(
            &input,
            format!("case {cases}, a mutation of {}", path.display()),
        );
        cases += 1;
    }
    eprintln!(
        "{name}: {} corpus files and {cases} mutations in {:.1} s",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        panicked.is_empty(),
        "{name}: {} inputs panicked:\n{}",
        panicked.len(),
        panicked.join("\n")
    );
}

/// An error must say something, and name the file where it has one.
fn clear(err: &anyhow::Error, file: &Path) {
    let msg = format!("{err:#}");
    assert!(!msg.trim().is_empty(), "an empty error message");
    assert!(
        msg.contains(&*file.to_string_lossy()) || msg.contains("tensor") || msg.contains("::"),
        "the error names neither the file nor the tensor: {msg}"
    );
}

/// A scratch file for one target's inputs.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tpri-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn idx_reader() {
    let path = Path::new("fuzz-idx-ubyte");
    fuzz(
        "idx",
        &corpus("idx", None),
        &|rng, b| mutate(rng, b),
        &|bytes| {
            for result in [
                parse_images(bytes, path).map(|i| i.count),
                parse_labels(bytes, path).map(|l| l.len()),
            ] {
                if let Err(e) = result {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("fuzz-idx-ubyte"), "{msg}");
                }
            }
        },
    );
}

#[test]
fn cifar_reader() {
    let path = Path::new("fuzz-cifar.bin");
    fuzz(
        "cifar",
        &corpus("cifar", None),
        &|rng, b| mutate(rng, b),
        &|bytes| match parse_batch(bytes, path) {
            // What parses is a consistent set: whole records, labels in range.
            Ok(set) => set.check().unwrap(),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains("fuzz-cifar.bin"), "{msg}");
            }
        },
    );
}

#[test]
fn parameter_files() {
    let file = scratch("params.safetensors");
    fuzz(
        "params",
        &corpus("params", Some("safetensors")),
        &|rng, b| match rng.random_bool(0.6).then(|| mutate_header(rng, b)) {
            Some(Some(m)) => m,
            _ => mutate(rng, b),
        },
        &|bytes| {
            std::fs::write(&file, bytes).unwrap();
            match load_params(&file) {
                Ok(p) => {
                    // What loads is consistent, and a backend takes it or refuses it.
                    let d = tpri::validate::check_param_shapes(&p).unwrap();
                    p.check_dims(d).unwrap();
                    let batch = Batch {
                        tokens: None,
                        x: vec![DMatrix::from_element(2, d.input, 0.5); 3],
                        y: Targets::Labels(vec![0, d.output - 1]),
                    };
                    let hyper = Hyper::for_cell(p.cell);
                    let _ = CpuBackend::new().trace(&p, &batch, &hyper);
                }
                Err(e) => clear(&e, &file),
            }
        },
    );
}

#[test]
fn batch_files() {
    let file = scratch("batch.safetensors");
    let dims = Dims {
        input: 2,
        hidden: 3,
        output: 2,
    };
    fuzz(
        "batch",
        &corpus("batch", Some("safetensors")),
        &|rng, b| match rng.random_bool(0.6).then(|| mutate_header(rng, b)) {
            Some(Some(m)) => m,
            _ => mutate(rng, b),
        },
        &|bytes| {
            std::fs::write(&file, bytes).unwrap();
            match load_batch(&file, dims) {
                Ok(b) => {
                    assert!(b.seq_len() > 0 && b.batch_size() > 0);
                    assert!(b.x.iter().all(|x| x.shape() == (b.batch_size(), 2)));
                }
                Err(e) => clear(&e, &file),
            }
        },
    );
}

#[test]
fn checkpoints() {
    let file = scratch("checkpoint.safetensors");
    let cfg_text = std::fs::read_to_string(corpus_dir("checkpoint").join("config.toml")).unwrap();
    let cfg: RunConfig = toml::from_str(&cfg_text).unwrap();
    fuzz(
        "checkpoint",
        &corpus("checkpoint", Some("safetensors")),
        &|rng, b| match rng.random_bool(0.6).then(|| mutate_header(rng, b)) {
            Some(Some(m)) => m,
            _ => mutate(rng, b),
        },
        &|bytes| {
            std::fs::write(&file, bytes).unwrap();
            if let Err(e) = tpri::run_dir::load_checkpoint(&file, &cfg) {
                let msg = format!("{e:#}");
                assert!(!msg.trim().is_empty());
            }
        },
    );
}

#[test]
fn config_files() {
    fuzz(
        "config",
        &corpus("config", Some("toml")),
        &|rng, b| mutate_toml(rng, b),
        &|bytes| {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return;
            };
            // A file's settings over the defaults, as `tpri train --config` reads them.
            let Ok(file) = toml::from_str::<toml::Table>(text) else {
                return;
            };
            let mut merged = toml::Table::try_from(RunConfig::default()).unwrap();
            for (k, v) in file {
                merged.insert(k, v);
            }
            let Ok(cfg) = merged.try_into::<RunConfig>() else {
                return;
            };
            if cfg.validate().is_ok() {
                // Valid settings are sizes a machine can hold and a task that builds.
                tpri::limits::check_host(&cfg.workload().unwrap()).unwrap();
                if !matches!(cfg.task, tpri::tasks::TaskSpec::Pixel { .. }) {
                    tpri::tasks::build_task(&cfg.task, cfg.seed, cfg.eval_size).unwrap();
                }
            }
        },
    );
}
