//! The language model's corpus reader and task (docs/ALGORITHM.md §13): the vocabulary,
//! the windows and batches as the published code makes them, the frozen embedding, and
//! clear errors naming the file for malformed corpora.

use std::path::{Path, PathBuf};

use tpri::tasks::corpus::{read_corpus, MAX_LINE_BYTES};
use tpri::tasks::{build_task, EvalSplit, Targets, TaskSpec};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tpri-lm-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn spec(dir: &Path, seq_len: usize, vocab: usize, train_tokens: Option<usize>) -> TaskSpec {
    TaskSpec::Lm {
        dir: dir.to_path_buf(),
        seq_len,
        vocab,
        embedding_dim: 3,
        train_tokens,
        eval_split: EvalSplit::Test,
        train_embedding: false,
    }
}

fn words(corpus: &tpri::tasks::corpus::Corpus, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&i| corpus.vocab.word(i).unwrap().to_string())
        .collect()
}

#[test]
fn vocabulary_in_order_of_first_occurrence_with_eos_and_unk() {
    let dir = scratch("vocab");
    let train = write(&dir, "train", b"a b <unk> a\n  c a\t b\n");
    let test = write(&dir, "test", b"a z\n");
    let c = read_corpus(&train, &test, 10, None).unwrap();
    // The published ids: first occurrence, <eos> after every line.
    let expected = ["a", "b", "<unk>", "<eos>", "c"];
    assert_eq!(c.vocab.len(), expected.len());
    for (i, w) in expected.iter().enumerate() {
        assert_eq!(c.vocab.word(i as u32), Some(*w));
    }
    assert_eq!(
        words(&c, &c.train),
        ["a", "b", "<unk>", "a", "<eos>", "c", "a", "b", "<eos>"]
    );
    // A held-out word outside the vocabulary reads as <unk>.
    assert_eq!(words(&c, &c.held_out), ["a", "<unk>", "<eos>"]);
    // No <unk> in the training text: it comes last.
    let train = write(&dir, "train2", b"x y\n");
    let c = read_corpus(&train, &test, 10, Some(2)).unwrap();
    assert_eq!(c.vocab.word(3), Some("<unk>"));
    assert_eq!(words(&c, &c.train), ["x", "y"], "cut to the first 2 tokens");
    assert_eq!(c.vocab.len(), 4, "the vocabulary comes from the whole file");
}

#[test]
fn a_capped_vocabulary_keeps_the_most_frequent_words() {
    let dir = scratch("cap");
    // Counts: a 4, b 1, c 3, d 2, <eos> 2.
    let train = write(&dir, "train", b"a b c a d\nc a d c a\n");
    let test = write(&dir, "test", b"b d\n");
    let c = read_corpus(&train, &test, 4, None).unwrap();
    // Kept: a, c, then the tie d/<eos> goes to d (seen first); b reads as <unk>, which
    // takes b's place.
    assert_eq!(c.vocab.len(), 4);
    assert_eq!(
        words(&c, &c.train),
        ["a", "<unk>", "c", "a", "d", "<unk>", "c", "a", "d", "c", "a", "<unk>"]
    );
    assert_eq!(c.vocab.word(1), Some("<unk>"));
    assert_eq!(words(&c, &c.held_out), ["<unk>", "d", "<unk>"]);
}

#[test]
fn malformed_corpus_files_are_clear_errors_naming_the_file() {
    let dir = scratch("bad");
    let good = write(&dir, "good", b"a b\n");
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.join("missing.txt"), "No such file"),
        (write(&dir, "empty.txt", b""), "holds no words"),
        (write(&dir, "blank.txt", b"\n \n"), "holds no words"),
        (
            write(&dir, "latin1.txt", b"ok\ncaf\xe9 au lait\n"),
            "line 2 is not UTF-8",
        ),
        (
            write(&dir, "long.txt", &vec![b'a'; MAX_LINE_BYTES + 1]),
            "line 1 is longer than",
        ),
        (dir.clone(), "a directory"),
    ];
    for (path, what) in cases {
        let msg = format!("{:#}", read_corpus(&path, &good, 10, None).unwrap_err());
        assert!(msg.contains(what), "{}: {msg}", path.display());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        // The held-out file is checked alike.
        let msg = format!("{:#}", read_corpus(&good, &path, 10, None).unwrap_err());
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    // A line of exactly the limit is fine.
    let mut limit = vec![b'a'; MAX_LINE_BYTES];
    limit.push(b'\n');
    let ok = write(&dir, "limit.txt", &limit);
    assert_eq!(read_corpus(&ok, &good, 10, None).unwrap().train.len(), 2);
    for vocab in [0, 1] {
        let msg = read_corpus(&good, &good, vocab, None)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("TaskSpec::Lm::vocab"), "{msg}");
        let msg = spec(&dir, 4, vocab, None).sizes().unwrap_err().to_string();
        assert!(msg.contains("TaskSpec::Lm::vocab"), "{msg}");
    }
}

/// A corpus of `lines` sentences of a few words from a small list, deterministically.
fn corpus_text(lines: usize, salt: usize) -> String {
    let list = [
        "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away",
    ];
    (0..lines)
        .map(|i| {
            let n = 2 + (i * 7 + salt) % 5;
            let ws: Vec<&str> = (0..n).map(|k| list[(i * 3 + k * k + salt) % 10]).collect();
            ws.join(" ") + "\n"
        })
        .collect()
}

#[test]
fn windows_and_batches_follow_the_published_data_pipeline() {
    let dir = scratch("task");
    write(&dir, "ptb.train.txt", corpus_text(12, 0).as_bytes());
    write(&dir, "ptb.test.txt", corpus_text(5, 1).as_bytes());
    let (t, b) = (4, 3);
    let task = build_task(&spec(&dir, t, 20, None), 7, 5).unwrap();
    let c = read_corpus(
        &dir.join("ptb.train.txt"),
        &dir.join("ptb.test.txt"),
        20,
        None,
    )
    .unwrap();
    let n = c.train.len();
    assert_eq!(
        (task.input_size(), task.output_size(), task.seq_len()),
        (3, 20, t)
    );
    let per_epoch = (n - t - 1) / b;
    for index in [0u64, 1, per_epoch as u64 + 1] {
        let batch = task.train_batch(index, b).unwrap();
        let Targets::StepLabels(y) = &batch.y else {
            panic!("per-step labels")
        };
        assert_eq!((y.nrows(), y.ncols()), (b, t));
        let first = (index as usize % per_epoch) * b;
        for i in 0..b {
            for s in 0..t {
                // The label of step s + 1 is the token after the one it reads.
                assert_eq!(y[(i, s)], c.train[first + i + s + 1] as usize);
                // x reads token first + i + s: the same token, the same embedding row.
                for i2 in 0..b {
                    for s2 in 0..t {
                        let same = c.train[first + i + s] == c.train[first + i2 + s2];
                        assert_eq!(batch.x[s].row(i) == batch.x[s2].row(i2), same);
                    }
                }
            }
        }
    }
    // The held-out set: the first eval_size windows, in batches of at most B.
    let eval = task.eval_batches(b).unwrap();
    let sizes: Vec<usize> = eval.iter().map(|e| e.batch_size()).collect();
    assert_eq!(sizes, [3, 2]);
    let Targets::StepLabels(y) = &eval[1].y else {
        panic!()
    };
    assert_eq!(y[(1, t - 1)], c.held_out[4 + t] as usize);
    // The same seed draws the same embedding, another seed another.
    let again = build_task(&spec(&dir, t, 20, None), 7, 5).unwrap();
    assert_eq!(
        again.train_batch(0, b).unwrap(),
        task.train_batch(0, b).unwrap()
    );
    let other = build_task(&spec(&dir, t, 20, None), 8, 5).unwrap();
    assert_ne!(
        other.train_batch(0, b).unwrap().x,
        task.train_batch(0, b).unwrap().x
    );
    // A batch needs B + T + 1 tokens.
    task.check_batch_size(n - t - 1).unwrap();
    let msg = task.check_batch_size(n - t).unwrap_err().to_string();
    assert!(
        msg.contains("RunConfig::batch_size") && msg.contains("ptb.train.txt"),
        "{msg}"
    );
}

#[test]
fn corpora_too_short_for_a_window_name_the_file() {
    let dir = scratch("short");
    write(&dir, "ptb.train.txt", b"a b c d e f g h\n");
    write(&dir, "ptb.test.txt", b"a b\n");
    write(&dir, "ptb.valid.txt", b"a b c d e f\n");
    let err = |s: &TaskSpec| match build_task(s, 0, 10) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    };
    let msg = err(&spec(&dir, 4, 20, None));
    assert!(
        msg.contains("ptb.test.txt") && msg.contains("has 3 held-out tokens"),
        "{msg}"
    );
    let msg = err(&spec(&dir, 4, 20, Some(5)));
    assert!(
        msg.contains("ptb.train.txt") && msg.contains("first 5 used"),
        "{msg}"
    );
    let mut valid = spec(&dir, 4, 20, None);
    if let TaskSpec::Lm { eval_split, .. } = &mut valid {
        *eval_split = EvalSplit::Valid;
    }
    assert!(build_task(&valid, 0, 10).is_ok());
    std::fs::remove_file(dir.join("ptb.train.txt")).unwrap();
    let msg = err(&spec(&dir, 4, 20, None));
    assert!(msg.contains("ptb.train.txt"), "{msg}");
}

/// Batches carry the token ids whose rows of the task's table are their inputs (what a
/// trained embedding gathers from), and the table has a row for every id the head predicts.
#[test]
fn batches_carry_the_tokens_their_inputs_embed() {
    let dir = scratch("tokens");
    write(&dir, "ptb.train.txt", b"a b c a b\nc d a\nb b a c\n");
    write(&dir, "ptb.test.txt", b"a b c d a b\n");
    let task = build_task(&spec(&dir, 3, 7, None), 5, 2).unwrap();
    let table = task.embedding_table().unwrap();
    assert_eq!(table.shape(), (7, 3), "one row per id the head predicts");
    for batch in [task.train_batch(0, 2).unwrap()]
        .into_iter()
        .chain(task.eval_batches(2).unwrap())
    {
        let ids = batch
            .tokens
            .as_ref()
            .expect("language-model batches carry their tokens");
        assert_eq!(ids.shape(), (batch.batch_size(), batch.seq_len()));
        for (t, x_t) in batch.x.iter().enumerate() {
            for i in 0..batch.batch_size() {
                assert_eq!(x_t.row(i), table.row(ids[(i, t)] as usize));
            }
        }
    }
}

/// Configs written before `train_embedding` existed load with a frozen table.
#[test]
fn old_configs_load_with_a_frozen_embedding() {
    let old = r#"{"name": "lm", "dir": "d", "seq_len": 4, "vocab": 9, "embedding_dim": 2,
        "train_tokens": null, "eval_split": "test"}"#;
    let spec: TaskSpec = serde_json::from_str(old).unwrap();
    assert_eq!(spec.trained_embedding_rows(), None);
    let mut trained = spec.clone();
    if let TaskSpec::Lm {
        train_embedding, ..
    } = &mut trained
    {
        *train_embedding = true;
    }
    assert_eq!(trained.trained_embedding_rows(), Some(9));
}
