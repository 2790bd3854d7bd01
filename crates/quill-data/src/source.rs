//! Where a command's data comes from, resolved once for every command: a UTF-8 text, a
//! directory of texts, a dataset made by `quill data prepare`, llm.c's token shards (a
//! pattern, or a directory of `*train_*.bin` and `*val_*.bin`), or the default — tiny
//! Shakespeare, and for the gpt2 tokenizer its GPT-2 tokens in `data/shakespeare-gpt2`
//! (nanoGPT's `data/shakespeare`), each put in place when missing.
//!
//! A new kind of data is a reader (a `Dataset` constructor) and an arm of [`load`].

use std::path::{Path, PathBuf};

use crate::prepare::{PrepareOptions, prepare};
use crate::token_file::TokenFormat;
use crate::{Corpus, DataError, Dataset, TINY_SHAKESPEARE, Tokenizer, TokenizerSpec, shards};

/// Where the gpt2 tokenizer's default data is prepared (from tiny Shakespeare).
pub const SHAKESPEARE_GPT2: &str = "data/shakespeare-gpt2";

/// The data a command names: `--data`, `--val-data`, and whether it may write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataSource {
    /// A text, a directory of texts, a prepared dataset, or llm.c shards; `None`: the
    /// default.
    pub data: Option<PathBuf>,
    /// The validation shards when `data` is a pattern of training shards.
    pub val_data: Option<String>,
    /// Write nothing (a dry run): a default dataset that is not prepared yet is
    /// tokenized in memory instead.
    pub read_only: bool,
}

/// The data as named, for a checkpoint to record and a resumed run to read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// The data, as named (a path or a pattern).
    pub data: String,
    /// The validation shards' pattern, for llm.c shards named by a pattern.
    pub val: Option<String>,
}

/// A loaded dataset and where it came from.
#[derive(Debug)]
pub struct Loaded {
    /// The tokens, split.
    pub dataset: Dataset,
    /// The path and what it holds, for a configuration header.
    pub description: String,
    /// The data as named.
    pub record: SourceRecord,
    /// The text, when the data was read into memory.
    pub corpus: Option<Corpus>,
}

/// What loading tells its caller as it goes, to show it.
pub trait LoadEvents {
    /// `read` of `total` bytes of the default corpus downloaded.
    fn downloading(&mut self, read: u64, total: u64) {
        let _ = (read, total);
    }

    /// The default GPT-2 dataset is being prepared into `out` from the corpus at `from`.
    fn preparing(&mut self, out: &Path, from: &Path) {
        let _ = (out, from);
    }
}

/// Events nobody shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl LoadEvents for Quiet {}

/// The data `source` names, or the default for `spec` (the checkpoint's tokenizer when
/// `tokenizer` is given): a prepared dataset is memory-mapped; a text is tokenized in
/// memory with the checkpoint's tokenizer (which must be the text's own for characters)
/// or with `spec`, `val_fraction` of it held out.
pub fn load(
    source: &DataSource,
    tokenizer: Option<&Tokenizer>,
    spec: TokenizerSpec,
    val_fraction: f64,
    events: &mut dyn LoadEvents,
) -> Result<Loaded, DataError> {
    let spec = tokenizer.map_or(spec, Tokenizer::spec);
    if let Some(paths) = llmc_shards(source)? {
        let dataset = Dataset::open_llmc_shards(&paths)?;
        if let Some(tokenizer) = tokenizer {
            dataset.check_tokenizer(tokenizer)?;
        }
        let data = source.data.as_ref().expect("shards come from --data");
        let description = format!(
            "{} ({}, {} tokens; {}, {} tokens; tokenizer {})",
            data.display(),
            count(paths.train.len(), "train shard"),
            dataset.split.train.len(),
            count(paths.val.len(), "val shard"),
            dataset.split.val.len(),
            dataset.tokenizer.name(),
        );
        return Ok(Loaded {
            dataset,
            description,
            record: SourceRecord {
                data: data.display().to_string(),
                val: source.val_data.clone(),
            },
            corpus: None,
        });
    }
    // `--data data/shakespeare-gpt2`, the default named as the docs name it, is made
    // as the default is when it is missing.
    let names_default = |path: &Path| {
        path == Path::new(SHAKESPEARE_GPT2) && spec == TokenizerSpec::Gpt2 && !path.exists()
    };
    let prepared = match (&source.data, spec) {
        (Some(path), _) if Dataset::is_token_dir(path) => Some(path.clone()),
        (Some(path), _) if names_default(path) && source.read_only => None,
        (Some(path), _) if names_default(path) => Some(prepare_default_gpt2(events)?),
        (Some(_), _) | (None, TokenizerSpec::Char) => None,
        (None, TokenizerSpec::Gpt2)
            if source.read_only && !Dataset::is_prepared(Path::new(SHAKESPEARE_GPT2)) =>
        {
            None
        }
        (None, TokenizerSpec::Gpt2) => Some(prepare_default_gpt2(events)?),
        (None, TokenizerSpec::Bpe(_)) => {
            return Err(DataError::Source(format!(
                "the {spec} tokenizer has no default data: pass --data DIR, a dataset made with `quill data prepare --tokenizer {spec}`"
            )));
        }
    };
    if let Some(dir) = prepared {
        let dataset = Dataset::open(&dir)?;
        if let Some(tokenizer) = tokenizer {
            dataset.check_tokenizer(tokenizer)?;
        }
        let description = format!(
            "{} ({} train + {} val tokens, tokenizer {})",
            dir.display(),
            dataset.split.train.len(),
            dataset.split.val.len(),
            dataset.tokenizer.name()
        );
        return Ok(Loaded {
            dataset,
            description,
            record: SourceRecord {
                data: dir.display().to_string(),
                val: None,
            },
            corpus: None,
        });
    }
    let corpus = match &source.data {
        Some(path) if names_default(path) => load_corpus(None, events)?,
        data => load_corpus(data.as_deref(), events)?,
    };
    let dataset = match (tokenizer, spec) {
        (Some(tokenizer), _) => {
            Dataset::with_tokenizer(&corpus.text, tokenizer.clone(), val_fraction)?
        }
        (None, TokenizerSpec::Char) => Dataset::new(&corpus.text, val_fraction)?,
        (None, TokenizerSpec::Gpt2) => {
            Dataset::with_tokenizer(&corpus.text, Tokenizer::gpt2(), val_fraction)?
        }
        (None, TokenizerSpec::Bpe(_)) => {
            return Err(DataError::Source(format!(
                "a {spec} tokenizer is trained by `quill data prepare --tokenizer {spec}`; pass the dataset it writes as --data"
            )));
        }
    };
    let description = format!(
        "{} ({} characters, tokenizer {})",
        corpus.source.display(),
        corpus.text.chars().count(),
        dataset.tokenizer.name()
    );
    Ok(Loaded {
        dataset,
        description,
        record: SourceRecord {
            data: corpus.source.display().to_string(),
            val: None,
        },
        corpus: Some(corpus),
    })
}

/// The corpus at `path`, or tiny Shakespeare at its default path (downloaded and
/// verified if missing, when quill-data has its `download` feature).
pub fn load_corpus(path: Option<&Path>, events: &mut dyn LoadEvents) -> Result<Corpus, DataError> {
    if let Some(path) = path {
        return Corpus::read(path);
    }
    let known = &TINY_SHAKESPEARE;
    let path = Path::new(known.default_path);
    #[cfg(feature = "download")]
    return Corpus::read_or_fetch(known, path, |read, total| events.downloading(read, total));
    #[cfg(not(feature = "download"))]
    {
        let _ = events;
        Corpus::read_verified(known, path)
    }
}

/// The train and val shards `source` names, when it names llm.c shards rather than a
/// text or a prepared dataset: a pattern, or a directory that holds `*train_*.bin` and
/// `*val_*.bin` files.
fn llmc_shards(source: &DataSource) -> Result<Option<shards::ShardPaths>, DataError> {
    let Some(data) = &source.data else {
        return Ok(None);
    };
    let pattern = data.to_string_lossy();
    Ok(match (&source.val_data, shards::is_pattern(&pattern)) {
        (Some(val), _) => Some(shards::ShardPaths {
            train: shards::expand(&pattern)?,
            val: shards::expand(val)?,
        }),
        (None, true) => {
            return Err(DataError::Source(format!(
                "--data {pattern} is a pattern of training shards: name the validation shards with --val-data"
            )));
        }
        (None, false) if data.is_dir() && !Dataset::is_prepared(data) => {
            shards::in_directory(data)?
        }
        (None, false) => None,
    })
}

/// `data/shakespeare-gpt2`, prepared from tiny Shakespeare with the gpt2 tokenizer if
/// it is not there yet (nanoGPT's `data/shakespeare`).
fn prepare_default_gpt2(events: &mut dyn LoadEvents) -> Result<PathBuf, DataError> {
    let out = PathBuf::from(SHAKESPEARE_GPT2);
    if Dataset::is_prepared(&out) {
        return Ok(out);
    }
    load_corpus(None, events)?;
    events.preparing(&out, Path::new(TINY_SHAKESPEARE.default_path));
    let options = PrepareOptions {
        input: TINY_SHAKESPEARE.default_path.into(),
        extensions: vec!["txt".into()],
        tokenizer: TokenizerSpec::Gpt2,
        out: out.clone(),
        val_fraction: 0.1,
        format: TokenFormat::LlmC,
        lossy: false,
        shard_tokens: None,
    };
    prepare(&options, None, |_, _, _| {})?;
    Ok(out)
}

/// `1 train shard`, `3 train shards`.
fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}
