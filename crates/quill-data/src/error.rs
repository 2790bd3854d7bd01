//! The one error type of `quill-data`.

use std::path::PathBuf;

/// Everything that can go wrong between a path on disk and a batch of tokens.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The corpus path does not exist.
    #[error("corpus not found: {0}")]
    NotFound(PathBuf),
    /// An I/O error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A directory corpus holds no `*.txt` file.
    #[error("no *.txt files in directory {0}")]
    NoTextFiles(PathBuf),
    /// The corpus has no characters.
    #[error("corpus is empty: {0}")]
    Empty(PathBuf),
    /// The corpus is not valid UTF-8.
    #[error("{path}: not valid UTF-8 at byte offset {offset}")]
    NotUtf8 {
        /// The file involved.
        path: PathBuf,
        /// Byte offset (in that file) of the first invalid byte.
        offset: usize,
    },
    /// A file being prepared is not valid UTF-8.
    #[error(
        "{path}: not valid UTF-8 at byte offset {offset} (--lossy replaces invalid sequences and counts them)"
    )]
    InvalidUtf8 {
        /// The file involved.
        path: PathBuf,
        /// Byte offset (in that file) of the first invalid byte.
        offset: u64,
    },
    /// A prepared corpus too small to train on.
    #[error(
        "{path} is too small: {train} train and {val} val tokens (at least 2 each; add text or change --val-fraction)"
    )]
    TooSmall {
        /// The input.
        path: PathBuf,
        /// Training tokens.
        train: u64,
        /// Validation tokens.
        val: u64,
    },
    /// A shard set that names no files, or is incomplete.
    #[error("no shards: {0}")]
    NoShards(String),
    /// A directory that is not a prepared dataset, or a broken one.
    #[error("{path}: {reason}")]
    NotADataset {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A token file that is truncated, foreign or corrupted.
    #[error("{path}: {reason}")]
    BadTokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tokenizer that cannot be built or read.
    #[error("tokenizer: {0}")]
    BadTokenizer(String),
    /// Data tokenized differently from the checkpoint.
    #[error("the data's tokenizer ({data}) differs from the checkpoint's ({checkpoint})")]
    TokenizerMismatch {
        /// The data's tokenizer.
        data: String,
        /// The checkpoint's tokenizer.
        checkpoint: String,
    },
    /// A directory quill would write into, or replace, that it did not write itself.
    #[error("{path} {found}; use an empty directory")]
    NotOurs {
        /// The directory.
        path: PathBuf,
        /// What is there (`holds files quill did not write (a, b, …)`).
        found: String,
    },
    /// The work was interrupted (Ctrl-C); nothing was left behind.
    #[error("interrupted; nothing was written")]
    Interrupted,
    /// A downloaded or cached file does not have the expected checksum.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, got {actual}")]
    Checksum {
        /// The file involved.
        path: PathBuf,
        /// The expected sha256 (hex).
        expected: String,
        /// The sha256 (hex) actually found.
        actual: String,
    },
    /// The download failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// Where from.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A character that the vocabulary does not contain.
    #[error("character {ch:?} at position {position} is not in the vocabulary")]
    UnknownChar {
        /// The character.
        ch: char,
        /// Its position (in characters) in the encoded text.
        position: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} at position {position} is outside the vocabulary (size {vocab_size})")]
    UnknownToken {
        /// The id.
        id: u32,
        /// Its position in the decoded sequence.
        position: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A saved vocabulary could not be parsed.
    #[error("invalid vocabulary: {0}")]
    BadVocab(String),
    /// The validation fraction is not strictly between 0 and 1.
    #[error("validation fraction must be strictly between 0 and 1, got {0}")]
    BadValFraction(f64),
    /// Data whose vocabulary differs from the checkpoint's.
    #[error(
        "the data's vocabulary ({data} characters) differs from the checkpoint's ({checkpoint} characters)"
    )]
    VocabMismatch {
        /// Vocabulary size of the data.
        data: usize,
        /// Vocabulary size of the checkpoint.
        checkpoint: usize,
    },
    /// A batch or block size of zero.
    #[error("{0} must be at least 1")]
    ZeroSize(&'static str),
    /// Data that names something quill cannot read as asked (a pattern without its
    /// validation shards, a tokenizer without default data); the message says what to
    /// pass instead.
    #[error("{0}")]
    Source(String),
    /// A known corpus that is neither in place nor could be put there.
    #[error(
        "{path} is missing and could not be put in place ({reason}); copy tiny Shakespeare there (`cargo xtask data --from FILE`) or let quill download it"
    )]
    CorpusMissing {
        /// Where the corpus belongs.
        path: PathBuf,
        /// Why it could not be copied or downloaded.
        reason: String,
    },
    /// A shard outside its world.
    #[error("rank {rank} is not below the number of ranks, {ranks}")]
    BadShard {
        /// The rank asked for.
        rank: usize,
        /// The number of ranks.
        ranks: usize,
    },
    /// A split is too short to draw even one block from.
    #[error(
        "the {split} split has {len} tokens, but block_size {block_size} needs at least {}",
        block_size + 1
    )]
    TooShort {
        /// "train" or "val".
        split: &'static str,
        /// Tokens in that split.
        len: usize,
        /// The block size asked for.
        block_size: usize,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
