//! A tokenized corpus: the tokenizer and the train/val split, either tokenized in
//! memory from a text ([`Dataset::new`]) or memory-mapped from a directory that
//! [`prepare`](crate::prepare::prepare) wrote ([`Dataset::open`]).

use std::path::Path;

use crate::prepare::{DatasetMeta, META_FILE, META_FORMAT, TRAIN_FILE, VAL_FILE};
#[cfg(feature = "subword")]
use crate::shards::ShardPaths;
use crate::shards::ShardSet;
use crate::token_file::TokenFile;
#[cfg(feature = "subword")]
use crate::token_file::TokenFormat;
use crate::tokenizer::Tokenizer;
use crate::{CharTokenizer, DataError, Split, Tokens};

/// A tokenized corpus: the tokenizer and the train/val split.
#[derive(Debug)]
pub struct Dataset {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Token ids, split.
    pub split: Split,
    /// What a prepared dataset's `meta.json` says (`None` for an in-memory text).
    pub meta: Option<DatasetMeta>,
}

impl Dataset {
    /// Builds the character vocabulary of `text` and splits it.
    pub fn new(text: &str, val_fraction: f64) -> Result<Dataset, DataError> {
        let tokenizer = CharTokenizer::from_text(text)?;
        Dataset::with_tokenizer(text, tokenizer.into(), val_fraction)
    }

    /// Tokenizes `text` with a checkpoint's tokenizer; a character vocabulary must be
    /// the text's own.
    pub fn with_tokenizer(
        text: &str,
        tokenizer: Tokenizer,
        val_fraction: f64,
    ) -> Result<Dataset, DataError> {
        if let Some(chars) = tokenizer.as_char() {
            let own = CharTokenizer::from_text(text)?;
            if &own != chars {
                return Err(DataError::VocabMismatch {
                    data: own.vocab_size(),
                    checkpoint: chars.vocab_size(),
                });
            }
        }
        let split = Split::new(tokenizer.encode(text)?, val_fraction)?;
        Ok(Dataset {
            tokenizer,
            split,
            meta: None,
        })
    }

    /// Whether `path` is a prepared dataset (a directory with a `meta.json`).
    pub fn is_prepared(path: &Path) -> bool {
        path.join(META_FILE).is_file()
    }

    /// Whether `path` holds token files: a prepared dataset, or a directory with a
    /// `train.bin` but no `meta.json` (which [`Dataset::open`] explains), as opposed to
    /// a text corpus.
    pub fn is_token_dir(path: &Path) -> bool {
        Self::is_prepared(path) || path.join(crate::prepare::TRAIN_FILE).is_file()
    }

    /// Opens a prepared dataset: its tokenizer, and its token files memory-mapped.
    pub fn open(dir: &Path) -> Result<Dataset, DataError> {
        let bad = |reason: String| DataError::NotADataset {
            path: dir.to_path_buf(),
            reason,
        };
        let meta_path = dir.join(META_FILE);
        let text =
            crate::files::read_regular_text(&meta_path, crate::files::JSON_LIMIT).map_err(|e| {
                bad(format!(
                    "{META_FILE}: {e} (make a dataset with `quill data prepare`)"
                ))
            })?;
        let meta: DatasetMeta =
            serde_json::from_str(&text).map_err(|e| bad(format!("{META_FILE}: {e}")))?;
        if meta.format != META_FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {META_FORMAT:?}",
                meta.format
            )));
        }
        let tokenizer = Tokenizer::read(dir)?;
        if tokenizer.name() != meta.tokenizer || tokenizer.vocab_size() != meta.vocab_size {
            return Err(bad(format!(
                "{META_FILE} says tokenizer {} ({} tokens), the tokenizer files hold {} ({} tokens)",
                meta.tokenizer,
                meta.vocab_size,
                tokenizer.name(),
                tokenizer.vocab_size()
            )));
        }
        let open = |name: &str, expected: u64| -> Result<Tokens, DataError> {
            let path = dir.join(name);
            let file = TokenFile::open(&path, meta.token_format, meta.vocab_size)?;
            if file.len() as u64 != expected || file.dtype() != meta.dtype {
                return Err(DataError::BadTokenFile {
                    path,
                    reason: format!(
                        "holds {} {:?} tokens, {META_FILE} says {expected} {:?}",
                        file.len(),
                        file.dtype(),
                        meta.dtype
                    ),
                });
            }
            Ok(Tokens::Mapped(file))
        };
        let shards = |names: &[String], expected: u64| -> Result<Tokens, DataError> {
            let paths: Vec<_> = names.iter().map(|name| dir.join(name)).collect();
            let set = ShardSet::open(&paths, meta.token_format, meta.vocab_size)?;
            if set.len() as u64 != expected || set.dtype() != meta.dtype {
                return Err(bad(format!(
                    "its {} shards hold {} {} tokens, {META_FILE} says {expected} {}",
                    names[0],
                    set.len(),
                    set.dtype(),
                    meta.dtype
                )));
            }
            Ok(Tokens::Shards(set))
        };
        let split = match meta.train_files.is_empty() {
            true => Split {
                train: open(TRAIN_FILE, meta.train_tokens)?,
                val: open(VAL_FILE, meta.val_tokens)?,
            },
            false => Split {
                train: shards(&meta.train_files, meta.train_tokens)?,
                val: shards(&meta.val_files, meta.val_tokens)?,
            },
        };
        Ok(Dataset {
            tokenizer,
            split,
            meta: Some(meta),
        })
    }

    /// llm.c's token shards (`NAME_train_000001.bin` …, with a 1024-byte header and no
    /// tokenizer beside them): GPT-2's tokens, as llm.c's and modded-nanogpt's corpora
    /// hold; an id outside GPT-2's vocabulary is an error as its window is read.
    #[cfg(feature = "subword")]
    pub fn open_llmc_shards(paths: &ShardPaths) -> Result<Dataset, DataError> {
        // Shards of a dataset quill prepared (`--shard-tokens`) are read with its own
        // tokenizer and format, from its meta.json; others are llm.c's GPT-2 tokens.
        let (tokenizer, format) = match prepared_home(paths) {
            Some(dir) => {
                let dataset = Dataset::open(&dir)?;
                let format = dataset
                    .meta
                    .as_ref()
                    .map_or(TokenFormat::LlmC, |m| m.token_format);
                (dataset.tokenizer, format)
            }
            None => (Tokenizer::gpt2(), TokenFormat::LlmC),
        };
        let vocab = tokenizer.vocab_size();
        let train = ShardSet::open(&paths.train, format, vocab)?;
        let val = ShardSet::open(&paths.val, format, vocab)?;
        if train.dtype() != val.dtype() {
            return Err(DataError::NoShards(format!(
                "the training shards hold {:?} tokens and the validation shards {:?}",
                train.dtype(),
                val.dtype()
            )));
        }
        Ok(Dataset {
            tokenizer,
            split: Split {
                train: Tokens::Shards(train),
                val: Tokens::Shards(val),
            },
            meta: None,
        })
    }

    /// Checks that this data was tokenized as a checkpoint's was.
    pub fn check_tokenizer(&self, checkpoint: &Tokenizer) -> Result<(), DataError> {
        match (&self.tokenizer, checkpoint) {
            (Tokenizer::Char(data), Tokenizer::Char(ckpt)) if data != ckpt => {
                Err(DataError::VocabMismatch {
                    data: data.vocab_size(),
                    checkpoint: ckpt.vocab_size(),
                })
            }
            (data, ckpt) if data != ckpt => Err(DataError::TokenizerMismatch {
                data: data.name(),
                checkpoint: ckpt.name(),
            }),
            _ => Ok(()),
        }
    }
}

/// The prepared dataset directory every shard of `paths` lies in, if there is one.
#[cfg(feature = "subword")]
fn prepared_home(paths: &ShardPaths) -> Option<std::path::PathBuf> {
    let dir = paths.train.first()?.parent()?;
    let home = |p: &std::path::PathBuf| p.parent() == Some(dir);
    (Dataset::is_prepared(dir) && paths.train.iter().chain(&paths.val).all(home))
        .then(|| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_vocabulary_must_be_the_texts_own() {
        let text = "abcabcabcabc";
        let dataset = Dataset::new(text, 0.25).unwrap();
        assert_eq!((dataset.split.train.len(), dataset.split.val.len()), (9, 3));
        let other = CharTokenizer::from_text("abcd").unwrap();
        let err = Dataset::with_tokenizer(text, other.into(), 0.25).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the data's vocabulary (3 characters) differs from the checkpoint's (4 characters)"
        );
        #[cfg(feature = "subword")]
        assert_eq!(
            dataset
                .check_tokenizer(&Tokenizer::gpt2())
                .unwrap_err()
                .to_string(),
            "the data's tokenizer (char) differs from the checkpoint's (gpt2)"
        );
    }
}
