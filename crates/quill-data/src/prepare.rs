//! `quill data prepare`: tokenize a corpus once, as a stream, into token files.
//!
//! The corpus (a file, or a directory tree) is read in 1 MiB blocks and never held
//! whole. Text is cut into ~1 MiB chunks where GPT-2's pre-tokenizer would split anyway
//! (after a lone newline between visible ASCII characters), so encoding the chunks on
//! all cores gives the ids of encoding the whole text. Like nanoGPT's
//! `prepare.py`, the first `(1 - val_fraction)` of the bytes train and the rest
//! validate, each part tokenized on its own; with BPE tokenizers and several files,
//! every file ends with `<|endoftext|>`.
//!
//! The dataset directory is written beside its final place and renamed into it at the
//! end, so an interrupted run leaves no half-written dataset.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
#[cfg(feature = "subword")]
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::Marker;
#[cfg(feature = "subword")]
use crate::bpe::BpeTokenizer;
use crate::token_file::{TokenDtype, TokenFormat, TokenWriter};
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use crate::{CharTokenizer, DataError};

/// `meta.json`'s format tag.
pub const META_FORMAT: &str = "quill-dataset-v1";
/// A prepared dataset's description.
pub const META_FILE: &str = "meta.json";
/// A prepared dataset is quill's when its `meta.json` has quill's format tag: only
/// such a directory (or an empty one) is replaced by `prepare`.
pub const DATASET: Marker = Marker {
    file: META_FILE,
    format: META_FORMAT,
    alternates: &[
        crate::tokenizer::VOCAB_FILE,
        crate::tokenizer::TOKENIZER_FILE,
        crate::tokenizer::RANKS_FILE,
        "train*.bin",
        "val*.bin",
    ],
};
/// The training tokens.
pub const TRAIN_FILE: &str = "train.bin";
/// The validation tokens.
pub const VAL_FILE: &str = "val.bin";

const BLOCK: usize = 1 << 20;
const CHUNK: usize = 1 << 20;
/// A chunk with no safe cut point is cut anyway at this size (a text with no newline in
/// 16 MiB); the ids near that one cut may differ from whole-text encoding.
const MAX_CHUNK: usize = 16 << 20;

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// A UTF-8 text file, or a directory searched recursively.
    pub input: PathBuf,
    /// File extensions read from a directory (without the dot).
    pub extensions: Vec<String>,
    /// The tokenizer to use (or train).
    pub tokenizer: TokenizerSpec,
    /// The dataset directory to write.
    pub out: PathBuf,
    /// Fraction of the bytes, from the end, that validate.
    pub val_fraction: f64,
    /// The token files' layout.
    pub format: TokenFormat,
    /// Replace invalid UTF-8 by U+FFFD (and count it) instead of stopping.
    pub lossy: bool,
    /// Cut each split into shards of this many tokens (`train_000000.bin`, …,
    /// `val_000000.bin`, …; the last of each split holds the rest) instead of one
    /// `train.bin` and one `val.bin`.
    pub shard_tokens: Option<u64>,
}

/// `meta.json`: what a dataset was made from and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Always [`META_FORMAT`].
    pub format: String,
    /// The input path.
    pub source: String,
    /// Files read.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// sha256 of the bytes read, in order.
    pub sha256: String,
    /// `char`, `gpt2` or `bpe:N`.
    pub tokenizer: String,
    /// Token ids.
    pub vocab_size: usize,
    /// The token files' layout.
    pub token_format: TokenFormat,
    /// The token width.
    pub dtype: TokenDtype,
    /// Tokens in `train.bin` (or its shards).
    pub train_tokens: u64,
    /// Tokens in `val.bin` (or its shards).
    pub val_tokens: u64,
    /// The training shards, in order (empty: one `train.bin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub train_files: Vec<String>,
    /// The validation shards, in order (empty: one `val.bin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub val_files: Vec<String>,
    /// The fraction of bytes held out.
    pub val_fraction: f64,
    /// Invalid UTF-8 sequences replaced (`--lossy`).
    pub replaced_invalid: u64,
}

/// A step of [`prepare`], for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Collecting the characters (`char`).
    Vocabulary,
    /// Training the BPE vocabulary (`bpe:N`).
    Training,
    /// Encoding and writing tokens.
    Tokenizing,
}

/// Prepares the dataset `options` describe. `progress(phase, bytes_done, bytes_total)`
/// is called as the input is read; setting `stop` ends the work with
/// [`DataError::Interrupted`], leaving nothing behind.
pub fn prepare(
    options: &PrepareOptions,
    stop: Option<&AtomicBool>,
    mut progress: impl FnMut(Phase, u64, u64) + Send,
) -> Result<DatasetMeta, DataError> {
    crate::batch::check_val_fraction(options.val_fraction)?;
    let files = list_inputs(&options.input, &options.extensions)?;
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    if total == 0 {
        return Err(DataError::Empty(options.input.clone()));
    }
    crate::atomic::check_owned(&options.out, &DATASET)?;
    let split_at = ((1.0 - options.val_fraction) * total as f64) as u64;
    let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));

    let tokenizer = match options.tokenizer {
        #[cfg(feature = "subword")]
        TokenizerSpec::Gpt2 => Tokenizer::gpt2(),
        #[cfg(not(feature = "subword"))]
        TokenizerSpec::Gpt2 | TokenizerSpec::Bpe(_) => {
            return Err(DataError::BadTokenizer(format!(
                "{}: quill-data was built without its subword feature",
                options.tokenizer
            )));
        }
        TokenizerSpec::Char => {
            let mut chars = BTreeSet::new();
            let mut ascii = [false; 128];
            progress(Phase::Vocabulary, 0, total);
            let mut stream = TextStream::new(&files, u64::MAX, options.lossy);
            while let Some(segment) = stream.next_segment()? {
                if stopped() {
                    return Err(DataError::Interrupted);
                }
                for c in segment.text.chars() {
                    match ascii.get_mut(c as usize) {
                        Some(seen) => *seen = true,
                        None => {
                            chars.insert(c);
                        }
                    }
                }
                progress(Phase::Vocabulary, stream.position, total);
            }
            let text: String = (0..128u8)
                .filter(|&b| ascii[b as usize])
                .map(char::from)
                .chain(chars)
                .collect();
            Tokenizer::Char(CharTokenizer::from_text(&text)?)
        }
        #[cfg(feature = "subword")]
        TokenizerSpec::Bpe(vocab_size) => {
            progress(Phase::Training, 0, split_at);
            let mut stream = TextStream::new(&files, split_at, options.lossy);
            let mut failure = None;
            let texts = std::iter::from_fn(|| {
                if stopped() {
                    failure = Some(DataError::Interrupted);
                    return None;
                }
                let segment = stream.next_segment().unwrap_or_else(|e| {
                    failure = Some(e);
                    None
                })?;
                progress(Phase::Training, stream.position, split_at);
                Some(segment.text)
            });
            let trained = BpeTokenizer::train(texts, vocab_size);
            if let Some(e) = failure {
                return Err(e);
            }
            Tokenizer::Bpe(Arc::new(trained?))
        }
    };

    let vocab_size = tokenizer.vocab_size();
    let dtype = TokenDtype::for_vocab(vocab_size);
    let end_of_doc = tokenizer.end_of_text().filter(|_| files.len() > 1);
    let mut meta = DatasetMeta {
        format: META_FORMAT.into(),
        source: options.input.display().to_string(),
        files: files.len(),
        bytes: total,
        sha256: String::new(),
        tokenizer: tokenizer.name(),
        vocab_size,
        token_format: options.format,
        dtype,
        train_tokens: 0,
        val_tokens: 0,
        train_files: Vec::new(),
        val_files: Vec::new(),
        val_fraction: options.val_fraction,
        replaced_invalid: 0,
    };
    crate::atomic::replace_dir(&options.out, &DATASET, |dir| -> Result<(), DataError> {
        let shard = |stem| ShardWriter::new(dir, stem, options, dtype);
        let mut writers = [shard("train")?, shard("val")?];
        progress(Phase::Tokenizing, 0, total);
        let mut stream = TextStream::new(&files, u64::MAX, options.lossy);
        stream.split_at = Some(split_at);
        stream.hasher = Some(Sha256::new());
        let batch_bytes = threads() * CHUNK * 2;
        let mut batch: Vec<Segment> = Vec::new();
        let mut flush = |batch: &mut Vec<Segment>| -> Result<(), DataError> {
            let ids = encode_all(&tokenizer, batch)?;
            for (segment, ids) in batch.drain(..).zip(ids) {
                let writer = &mut writers[segment.val as usize];
                writer.push(&ids)?;
                if let (true, Some(eot)) = (segment.end_of_file, end_of_doc) {
                    writer.push(&[eot])?;
                }
            }
            Ok(())
        };
        let mut pending = 0;
        while let Some(segment) = stream.next_segment()? {
            if stopped() {
                return Err(DataError::Interrupted);
            }
            pending += segment.text.len();
            batch.push(segment);
            if pending >= batch_bytes {
                flush(&mut batch)?;
                pending = 0;
                progress(Phase::Tokenizing, stream.position, total);
            }
        }
        flush(&mut batch)?;
        progress(Phase::Tokenizing, total, total);
        let [train, val] = writers;
        (meta.train_tokens, meta.train_files) = train.finish()?;
        (meta.val_tokens, meta.val_files) = val.finish()?;
        meta.replaced_invalid = stream.replaced;
        meta.sha256 = stream
            .hasher
            .take()
            .expect("hashing")
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if meta.train_tokens < 2 || meta.val_tokens < 2 {
            return Err(DataError::TooSmall {
                path: options.input.clone(),
                train: meta.train_tokens,
                val: meta.val_tokens,
            });
        }
        let mut files = tokenizer.files();
        files.push((
            META_FILE,
            serde_json::to_vec_pretty(&meta).expect("meta serialises"),
        ));
        for (name, bytes) in files {
            crate::atomic::write_file(&dir.join(name), &bytes)?;
        }
        Ok(())
    })?;
    Ok(meta)
}

/// The token files of one split: `STEM.bin`, or `STEM_000000.bin`, `STEM_000001.bin`, …
/// of `options.shard_tokens` tokens each.
struct ShardWriter {
    dir: PathBuf,
    stem: &'static str,
    format: TokenFormat,
    dtype: TokenDtype,
    limit: Option<u64>,
    current: TokenWriter,
    /// Tokens in `current`.
    held: u64,
    total: u64,
    names: Vec<String>,
}

impl ShardWriter {
    fn new(
        dir: &Path,
        stem: &'static str,
        options: &PrepareOptions,
        dtype: TokenDtype,
    ) -> Result<ShardWriter, DataError> {
        if options.shard_tokens == Some(0) {
            return Err(DataError::ZeroSize("shard_tokens"));
        }
        let name = match options.shard_tokens {
            Some(_) => format!("{stem}_000000.bin"),
            None => format!("{stem}.bin"),
        };
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            stem,
            format: options.format,
            dtype,
            limit: options.shard_tokens,
            current: TokenWriter::create(&dir.join(&name), options.format, dtype)?,
            held: 0,
            total: 0,
            names: vec![name],
        })
    }

    fn push(&mut self, mut tokens: &[u32]) -> Result<(), DataError> {
        while !tokens.is_empty() {
            let room = self.limit.map_or(u64::MAX, |limit| limit - self.held);
            if room == 0 {
                let name = format!("{}_{:06}.bin", self.stem, self.names.len());
                let next = TokenWriter::create(&self.dir.join(&name), self.format, self.dtype)?;
                std::mem::replace(&mut self.current, next).finish()?;
                self.names.push(name);
                self.held = 0;
                continue;
            }
            let take = (room.min(tokens.len() as u64)) as usize;
            self.current.push(&tokens[..take])?;
            (self.held, self.total, tokens) = (
                self.held + take as u64,
                self.total + take as u64,
                &tokens[take..],
            );
        }
        Ok(())
    }

    /// The split's tokens, and its shards' names (none when it is one file).
    fn finish(self) -> Result<(u64, Vec<String>), DataError> {
        self.current.finish()?;
        let names = match self.limit {
            Some(_) => self.names,
            None => Vec::new(),
        };
        Ok((self.total, names))
    }
}

/// Encodes the segments, on all cores (the `subword` feature brings rayon).
fn encode_all(tokenizer: &Tokenizer, batch: &[Segment]) -> Result<Vec<Vec<u32>>, DataError> {
    #[cfg(feature = "subword")]
    {
        use rayon::prelude::*;
        batch
            .par_iter()
            .map(|segment| tokenizer.encode(&segment.text))
            .collect()
    }
    #[cfg(not(feature = "subword"))]
    batch
        .iter()
        .map(|segment| tokenizer.encode(&segment.text))
        .collect()
}

/// Threads that [`encode_all`] uses.
fn threads() -> usize {
    #[cfg(feature = "subword")]
    return rayon::current_num_threads().max(1);
    #[cfg(not(feature = "subword"))]
    1
}

/// The files to read: `input` itself, or the files under it (recursively, hidden
/// entries skipped) whose extension is one of `extensions`, in sorted order.
fn list_inputs(input: &Path, extensions: &[String]) -> Result<Vec<(PathBuf, u64)>, DataError> {
    let meta = std::fs::metadata(input).map_err(|_| DataError::NotFound(input.to_path_buf()))?;
    if meta.is_file() {
        return Ok(vec![(input.to_path_buf(), meta.len())]);
    }
    let mut files = Vec::new();
    let mut dirs = vec![input.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, e))? {
            let entry = entry.map_err(|e| DataError::io(&dir, e))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|e| DataError::io(&path, e))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file()
                && path
                    .extension()
                    .is_some_and(|x| extensions.iter().any(|e| x == e.as_str()))
            {
                let len = entry.metadata().map_err(|e| DataError::io(&path, e))?.len();
                files.push((path, len));
            }
        }
    }
    if files.is_empty() {
        return Err(DataError::NoTextFiles(input.to_path_buf()));
    }
    files.sort();
    Ok(files)
}

/// A piece of one file's text, all of it in one split.
struct Segment {
    text: String,
    /// In the validation part.
    val: bool,
    /// The file ends here.
    end_of_file: bool,
}

/// Reads the files as UTF-8 text, in blocks, and cuts it into [`Segment`]s.
struct TextStream<'a> {
    files: &'a [(PathBuf, u64)],
    /// Stop after this many bytes (`u64::MAX`: read every file to its end).
    limit: u64,
    lossy: bool,
    /// Where the validation part starts (a byte position, moved forward to the next
    /// character boundary); `None` reads everything as one part.
    split_at: Option<u64>,
    hasher: Option<Sha256>,
    /// Bytes read so far.
    position: u64,
    replaced: u64,
    file: usize,
    reader: Option<BufReader<File>>,
    /// Bytes read from the current file.
    file_offset: u64,
    /// An incomplete UTF-8 sequence at the end of the last block.
    carry: Vec<u8>,
    text: String,
    val: bool,
}

impl<'a> TextStream<'a> {
    fn new(files: &'a [(PathBuf, u64)], limit: u64, lossy: bool) -> Self {
        TextStream {
            files,
            limit,
            lossy,
            split_at: None,
            hasher: None,
            position: 0,
            replaced: 0,
            file: 0,
            reader: None,
            file_offset: 0,
            carry: Vec::new(),
            text: String::new(),
            val: false,
        }
    }

    /// The next segment, or `None` at the end.
    fn next_segment(&mut self) -> Result<Option<Segment>, DataError> {
        loop {
            if let Some(cut) = safe_cut(&self.text) {
                let rest = self.text.split_off(cut);
                let text = std::mem::replace(&mut self.text, rest);
                return Ok(Some(self.segment(text, false)));
            }
            if self.file >= self.files.len() || self.position >= self.limit {
                return Ok(self.take_rest());
            }
            let at_split = self.split_at.is_some_and(|s| self.position >= s) && !self.val;
            if at_split && self.carry.is_empty() {
                let segment = self.take_rest();
                self.val = true;
                if segment.is_some() {
                    return Ok(segment);
                }
                continue;
            }
            let mut want = BLOCK as u64;
            if let Some(split) = self.split_at.filter(|&s| self.position < s) {
                want = want.min(split - self.position);
            }
            if at_split {
                want = 1; // finish the character the split point fell into
            }
            want = want.min(self.limit - self.position);
            let (path, _) = &self.files[self.file];
            let reader = match &mut self.reader {
                Some(reader) => reader,
                None => {
                    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
                    self.reader.insert(BufReader::with_capacity(BLOCK, file))
                }
            };
            let mut block = Vec::with_capacity(want as usize);
            reader
                .take(want)
                .read_to_end(&mut block)
                .map_err(|e| DataError::io(path, e))?;
            if block.is_empty() {
                // End of this file.
                if !self.carry.is_empty() {
                    self.invalid(self.file_offset - self.carry.len() as u64)?;
                    self.carry.clear();
                    self.text.push(char::REPLACEMENT_CHARACTER);
                }
                let had_bytes = self.file_offset > 0;
                self.reader = None;
                self.file += 1;
                self.file_offset = 0;
                if had_bytes {
                    let text = std::mem::take(&mut self.text);
                    return Ok(Some(self.segment(text, true)));
                }
                continue;
            }
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&block);
            }
            self.position += block.len() as u64;
            let block_start = self.file_offset - self.carry.len() as u64;
            self.file_offset += block.len() as u64;
            let mut bytes = std::mem::take(&mut self.carry);
            bytes.extend_from_slice(&block);
            self.decode(bytes, block_start)?;
        }
    }

    /// Appends the text of `bytes` (which start at `offset` in the current file),
    /// keeping an incomplete sequence at the end for the next block.
    fn decode(&mut self, bytes: Vec<u8>, offset: u64) -> Result<(), DataError> {
        let mut rest = &bytes[..];
        let mut at = offset;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.text.push_str(text);
                    return Ok(());
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    self.text
                        .push_str(std::str::from_utf8(&rest[..valid]).expect("valid prefix"));
                    match e.error_len() {
                        None => {
                            self.carry = rest[valid..].to_vec();
                            return Ok(());
                        }
                        Some(bad) => {
                            self.invalid(at + valid as u64)?;
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            rest = &rest[valid + bad..];
                            at += (valid + bad) as u64;
                        }
                    }
                }
            }
        }
    }

    /// An invalid sequence at `offset` of the current file: an error, or counted.
    fn invalid(&mut self, offset: u64) -> Result<(), DataError> {
        if self.lossy {
            self.replaced += 1;
            Ok(())
        } else {
            Err(DataError::InvalidUtf8 {
                path: self.files[self.file].0.clone(),
                offset,
            })
        }
    }

    /// What is left of the text, as a segment that does not end its file.
    fn take_rest(&mut self) -> Option<Segment> {
        if self.text.is_empty() {
            return None;
        }
        let text = std::mem::take(&mut self.text);
        Some(self.segment(text, false))
    }

    fn segment(&self, text: String, end_of_file: bool) -> Segment {
        Segment {
            text,
            val: self.val,
            end_of_file,
        }
    }
}

/// Where `text` may be cut without changing its tokens: once it holds [`CHUNK`]
/// bytes, the last position after a lone `'\n'` between two visible ASCII characters
/// (`x\n|y`). GPT-2's pattern always splits there, and a lone newline is the same piece
/// whether the text goes on or ends (a longer whitespace run at the very end of a text
/// would be one piece, but gives up its last character before a visible one). At
/// [`MAX_CHUNK`] without such a place, the last character boundary.
fn safe_cut(text: &str) -> Option<usize> {
    if text.len() < CHUNK {
        return None;
    }
    let bytes = text.as_bytes();
    let cut = (2..bytes.len()).rev().find(|&i| {
        bytes[i - 1] == b'\n' && bytes[i - 2].is_ascii_graphic() && bytes[i].is_ascii_graphic()
    });
    match cut {
        Some(i) => Some(i),
        None if text.len() >= MAX_CHUNK => {
            (1..text.len()).rev().find(|&i| text.is_char_boundary(i))
        }
        None => None,
    }
}
