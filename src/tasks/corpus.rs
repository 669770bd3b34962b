//! Word-level corpora in the Penn Treebank layout (docs/ALGORITHM.md §13): UTF-8 text,
//! whitespace-separated words, one sentence a line, `<eos>` appended to every line (as
//! the published code's `Corpus.tokenize` does); the vocabulary comes from the training
//! file, at most a given number of words, the others read as `<unk>`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::Result;

use crate::error::Error;
use crate::files::open_regular;

/// The word appended to every line.
pub const EOS: &str = "<eos>";

/// The word that stands for every word outside the vocabulary.
pub const UNK: &str = "<unk>";

/// The longest line read, in bytes: a file that is one endless line (not a corpus) is
/// refused rather than read into memory whole.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Calls `word` for every word of the corpus file `path`, line by line, with [`EOS`] at
/// the end of every line; returns how many words it passed (the `<eos>` included).
/// Refused, naming the file: a missing or irregular file, a line that is not UTF-8 or
/// longer than [`MAX_LINE_BYTES`], and a file without a single word.
pub fn for_each_word(path: &Path, mut word: impl FnMut(&str)) -> Result<usize> {
    let mut reader = BufReader::new(open_regular(path, "corpus file")?);
    let mut line = Vec::new();
    let (mut count, mut words, mut number) = (0usize, 0usize, 0usize);
    loop {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, "cannot read the corpus file", e))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_LINE_BYTES {
            return Err(Error::format(
                path,
                format!(
                    "line {number} is longer than {MAX_LINE_BYTES} bytes: a corpus file holds one \
                     sentence a line"
                ),
            )
            .into());
        }
        let text = std::str::from_utf8(&line).map_err(|e| {
            Error::format(
                path,
                format!(
                    "line {number} is not UTF-8 text (invalid byte {} at column {})",
                    line[e.valid_up_to()],
                    e.valid_up_to() + 1
                ),
            )
        })?;
        for w in text.split_whitespace() {
            word(w);
            words += 1;
        }
        word(EOS);
        count += 1;
    }
    if words == 0 {
        return Err(Error::format(
            path,
            "holds no words: a corpus file has one sentence of whitespace-separated words a line",
        )
        .into());
    }
    Ok(count + words)
}

/// The words a model knows, each with its id (its row of the embedding and of the head).
#[derive(Clone, Debug, PartialEq)]
pub struct Vocabulary {
    words: Vec<String>,
    ids: HashMap<String, u32>,
    unk: u32,
}

impl Vocabulary {
    /// Number of words, `<unk>` included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Always false: a vocabulary holds `<unk>` at least.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word of `id`, if there is one.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// The id of `word`, `<unk>`'s when it is not in the vocabulary.
    pub fn id(&self, word: &str) -> u32 {
        self.ids.get(word).copied().unwrap_or(self.unk)
    }
}

/// A training and a held-out token stream, as vocabulary ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Corpus {
    /// The words, from the training file.
    pub vocab: Vocabulary,
    /// The training file's tokens (all of them, or the first `train_tokens`).
    pub train: Vec<u32>,
    /// The held-out file's tokens.
    pub held_out: Vec<u32>,
}

/// Reads the training file `train` and the held-out file `held_out` (see
/// [`for_each_word`] for what each must be).
///
/// The vocabulary holds the training file's words in the order of their first
/// occurrence (the published code's ids, for Penn Treebank), and always `<unk>`. When
/// that is more than `max_words`, it keeps the `max_words − 1` most frequent words other
/// than `<unk>` (ties to the first seen), the others reading as `<unk>`, which takes the
/// place of its own first occurrence among them; a `<unk>` the training text never
/// shows comes last. Words of the held-out file outside it read as `<unk>`. The
/// vocabulary comes from the whole training file; the training stream is then cut to its
/// first `train_tokens` tokens when given (as the published code's `nb_train`).
pub fn read_corpus(
    train: &Path,
    held_out: &Path,
    max_words: usize,
    train_tokens: Option<usize>,
) -> Result<Corpus> {
    if max_words < 2 {
        return Err(Error::setting(
            "TaskSpec::Lm::vocab",
            format!(
                "the vocabulary must hold at least 2 words (<unk> and one more), got {max_words}"
            ),
        )
        .into());
    }
    // The training file's words by first occurrence, with their counts.
    let mut first: HashMap<String, u32> = HashMap::new();
    let mut words: Vec<(String, usize)> = Vec::new();
    let mut stream: Vec<u32> = Vec::new();
    for_each_word(train, |w| {
        let id = *first.entry(w.to_owned()).or_insert_with(|| {
            words.push((w.to_owned(), 0));
            (words.len() - 1) as u32
        });
        words[id as usize].1 += 1;
        stream.push(id);
    })?;
    let unk_seen = first.get(UNK).copied();
    let others = words.len() - usize::from(unk_seen.is_some());
    // Which of the first-occurrence ids keep their word.
    let mut kept = vec![true; words.len()];
    if others >= max_words {
        let mut order: Vec<u32> = (0..words.len() as u32)
            .filter(|&i| Some(i) != unk_seen)
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(words[i as usize].1));
        for &i in &order[max_words - 1..] {
            kept[i as usize] = false;
        }
    }
    // New ids in order of first occurrence, every word dropped counting as <unk>.
    let mut vocab = Vocabulary {
        words: Vec::new(),
        ids: HashMap::new(),
        unk: 0,
    };
    let mut new_id = vec![u32::MAX; words.len()];
    let mut unk = None;
    for id in &mut stream {
        let old = *id as usize;
        if new_id[old] == u32::MAX {
            new_id[old] = if kept[old] && Some(old as u32) != unk_seen {
                push_word(&mut vocab, &words[old].0)
            } else {
                *unk.get_or_insert_with(|| push_word(&mut vocab, UNK))
            };
        }
        *id = new_id[old];
    }
    vocab.unk = unk.unwrap_or_else(|| push_word(&mut vocab, UNK));
    if let Some(n) = train_tokens {
        stream.truncate(n);
    }
    let mut held = Vec::new();
    for_each_word(held_out, |w| held.push(vocab.id(w)))?;
    Ok(Corpus {
        vocab,
        train: stream,
        held_out: held,
    })
}

/// Appends `word` to `vocab`; returns its id.
fn push_word(vocab: &mut Vocabulary, word: &str) -> u32 {
    let id = vocab.words.len() as u32;
    vocab.words.push(word.to_owned());
    vocab.ids.insert(word.to_owned(), id);
    id
}
