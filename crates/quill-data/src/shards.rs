//! Corpora kept as many token files (llm.c's and modded-nanogpt's
//! `fineweb_train_000001.bin` … shards, or `quill data prepare --shard-tokens N`), read
//! as one split.
//!
//! A [`ShardSet`] is the concatenation of its shards in name order, each memory-mapped
//! on its own: the batch sampler draws nanoGPT's uniformly random windows over the
//! whole set (a shard weighs as many tokens as it holds; a window may run from the end
//! of one shard into the next, as it runs from one document into the next inside a
//! file). So a corpus split into shards gives exactly the batches, and the losses, of
//! the same tokens in one file, and resuming needs only the sampler's generator, which
//! a checkpoint already holds. Memory stays flat with the number of shards: a shard
//! is a mapping, and the pages of each window are released once it is copied out.

use std::path::{Path, PathBuf};

use crate::DataError;
use crate::token_file::{TokenDtype, TokenFile, TokenFormat};

/// Shards of one split, read as their concatenation.
#[derive(Debug)]
pub struct ShardSet {
    files: Vec<TokenFile>,
    /// `starts[i]`: the position of shard `i`'s first token in the concatenation.
    starts: Vec<usize>,
    len: usize,
}

impl ShardSet {
    /// Maps every file of `paths` (at least one) in this order. Files of different
    /// token widths are refused: they were not tokenized together. Ids are checked
    /// against `vocab_size` as windows are read.
    pub fn open(
        paths: &[PathBuf],
        format: TokenFormat,
        vocab_size: usize,
    ) -> Result<ShardSet, DataError> {
        let Some(first) = paths.first() else {
            return Err(DataError::NoShards("an empty list".into()));
        };
        let mut files = Vec::with_capacity(paths.len());
        let mut starts = Vec::with_capacity(paths.len());
        let mut len = 0;
        for path in paths {
            let file = TokenFile::open(path, format, vocab_size)?;
            if let Some(head) = files.first().map(TokenFile::dtype)
                && file.dtype() != head
            {
                return Err(DataError::BadTokenFile {
                    path: path.clone(),
                    reason: format!(
                        "holds {:?} tokens, but {} holds {head:?}: shards of one set must have one token width",
                        file.dtype(),
                        first.display()
                    ),
                });
            }
            starts.push(len);
            len += file.len();
            files.push(file);
        }
        Ok(ShardSet { files, starts, len })
    }

    /// Tokens in all shards.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shards hold no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.files.len()
    }

    /// The token width of every shard.
    pub fn dtype(&self) -> TokenDtype {
        self.files[0].dtype()
    }

    /// Appends tokens `start..start + n` of the concatenation to `out`.
    pub fn read_window(&self, start: usize, n: usize, out: &mut Vec<u32>) -> Result<(), DataError> {
        assert!(
            start + n <= self.len,
            "window {start}+{n} past {}",
            self.len
        );
        let mut shard = self.starts.partition_point(|&s| s <= start) - 1;
        let (mut at, mut left) = (start - self.starts[shard], n);
        while left > 0 {
            let file = &self.files[shard];
            let take = left.min(file.len() - at);
            file.read_window(at, take, out)?;
            (left, at, shard) = (left - take, 0, shard + 1);
        }
        Ok(())
    }
}

/// The files a `--data` or `--val-data` pattern names: a glob (`*`, `?`, `[…]` in any
/// part), sorted by name. No match is an error naming the pattern.
pub fn expand(pattern: &str) -> Result<Vec<PathBuf>, DataError> {
    let bad = |reason: String| DataError::NoShards(format!("{pattern}: {reason}"));
    let paths = glob::glob(pattern).map_err(|e| bad(e.to_string()))?;
    let mut files = Vec::new();
    for path in paths {
        let path = path.map_err(|e| bad(e.to_string()))?;
        if path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(bad("no file matches".into()));
    }
    files.sort();
    Ok(files)
}

/// Whether `pattern` is a glob rather than a path.
pub fn is_pattern(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The files of a shard set's two splits, each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPaths {
    /// The training shards.
    pub train: Vec<PathBuf>,
    /// The validation shards.
    pub val: Vec<PathBuf>,
}

/// The train and val shards of a directory that holds both by name, as llm.c's
/// `dev/data` scripts write them (`NAME_train_000001.bin`, `NAME_val_000000.bin`), or
/// `None` when `dir` holds no such files.
pub fn in_directory(dir: &Path) -> Result<Option<ShardPaths>, DataError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !name.ends_with(".bin") || !path.is_file() {
            continue;
        }
        if name.contains("train_") {
            train.push(path);
        } else if name.contains("val_") {
            val.push(path);
        }
    }
    if train.is_empty() {
        return Ok(None);
    }
    if val.is_empty() {
        return Err(DataError::NoShards(format!(
            "{} holds training shards (*train_*.bin) but no validation shards (*val_*.bin)",
            dir.display()
        )));
    }
    train.sort();
    val.sort();
    Ok(Some(ShardPaths { train, val }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_file::TokenWriter;

    fn write(dir: &Path, name: &str, ids: &[u32], dtype: TokenDtype) -> PathBuf {
        let path = dir.join(name);
        let mut writer = TokenWriter::create(&path, TokenFormat::LlmC, dtype).unwrap();
        writer.push(ids).unwrap();
        writer.finish().unwrap();
        path
    }

    #[test]
    fn windows_run_across_shards_as_through_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u32> = (0..100).collect();
        let cuts = [0, 7, 8, 40, 99, 100];
        let paths: Vec<PathBuf> = cuts
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let name = format!("x_train_{i:06}.bin");
                write(dir.path(), &name, &ids[w[0]..w[1]], TokenDtype::Uint16)
            })
            .collect();
        let set = ShardSet::open(&paths, TokenFormat::LlmC, 100).unwrap();
        assert_eq!((set.len(), set.shards()), (100, 5));
        for start in 0..100 {
            for n in 0..=(100 - start).min(45) {
                let mut out = Vec::new();
                set.read_window(start, n, &mut out).unwrap();
                assert_eq!(out, &ids[start..start + n]);
            }
        }
        assert_eq!(
            expand(&format!("{}/x_train_*.bin", dir.path().display())).unwrap(),
            paths
        );
    }

    #[test]
    fn mixed_widths_and_missing_shards_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a_train_000000.bin",
            &[1, 2],
            TokenDtype::Uint16,
        );
        let b = write(
            dir.path(),
            "a_train_000001.bin",
            &[1, 2],
            TokenDtype::Uint32,
        );
        let err = ShardSet::open(&[a, b], TokenFormat::LlmC, 10).unwrap_err();
        assert!(err.to_string().contains("one token width"), "{err}");
        let err = in_directory(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no validation shards"), "{err}");
        let err = expand(&format!("{}/none_*.bin", dir.path().display())).unwrap_err();
        assert!(err.to_string().contains("no file matches"), "{err}");
        assert!(in_directory(&dir.path().join("nothing")).unwrap().is_none());
    }
}
