//! One module per subcommand: each turns parsed arguments into library calls.

mod bench;
mod data;
mod devices;
mod eval;
mod hub;
mod launch;
mod parity;
mod runs;
mod sample;
mod serve;
mod train;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use quill_data::prepare::{PrepareOptions, prepare};
use quill_data::shards;
use quill_data::token_file::TokenFormat;
use quill_data::{Corpus, Dataset, TINY_SHAKESPEARE, Tokenizer, TokenizerSpec};
use quill_train::{RunCheckpoint, Which, checkpoint_of_run};
use serde::Serialize;

use crate::cli::{Cli, Command, DataSource};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(*args),
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Runs(args) => runs::list(args),
        Command::Plot(args) => runs::plot(args),
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Parity(args) => parity::run(args),
        Command::Import(args) => hub::import(args),
        Command::Export(args) => hub::export(args),
        Command::Launch(args) => launch::run(args),
    }
}

/// A command that Ctrl-C stopped after it finished cleanly (a checkpoint saved, the
/// requests in flight answered): the process exits with status 130, as a shell expects
/// of an interrupted program, and prints nothing more.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// `1 file`, `3 files`: a count with its noun, in English.
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// The checkpoint directory a command reads for `dir` given to `flag`: `dir` itself,
/// or, for a run directory, its `best/` ([`Which::Best`]; `last/` when it has no
/// `best/`) or `last/` ([`Which::Last`]), with a note saying which. A Hugging Face
/// model directory is an error that says how to import it.
pub fn checkpoint_dir(dir: &Path, which: Which, flag: &str) -> Result<PathBuf> {
    match checkpoint_of_run(dir, which) {
        RunCheckpoint::At(checkpoint) => {
            let name = checkpoint.file_name().unwrap_or_default().to_string_lossy();
            eprintln!(
                "note: {} is a run directory; {flag} reads its {name}/ checkpoint {}",
                dir.display(),
                checkpoint.display()
            );
            return Ok(checkpoint);
        }
        RunCheckpoint::NoneYet => anyhow::bail!(
            "{} is a run directory with no {} checkpoint yet: a run saves one at its first evaluation",
            dir.display(),
            match which {
                Which::Best => "best/ or last/",
                Which::Last => "last/",
            }
        ),
        RunCheckpoint::NotARun => {}
    }
    let hugging_face = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if hugging_face && dir.join("config.json").is_file() && !dir.join("state.json").exists() {
        anyhow::bail!(
            "{} is a Hugging Face model directory, not a quill checkpoint: import it first: quill import gpt2 --from {} --out ckpt/NAME",
            dir.display(),
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// The corpus `--data` names, or tiny Shakespeare (downloaded, with a progress bar on
/// stderr, and verified if missing).
fn load_corpus(source: &DataSource) -> Result<Corpus> {
    if let Some(path) = &source.data {
        return Ok(Corpus::read(path)?);
    }
    let known = &TINY_SHAKESPEARE;
    let path = known.default_path.as_ref();
    let bar = crate::progress::bytes_bar();
    let corpus = Corpus::read_or_fetch(known, path, |read, total| {
        if bar.is_hidden() {
            eprintln!("downloading {} from {}", known.name, known.url);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.set_length(total);
        bar.set_position(read);
    });
    bar.finish_and_clear();
    corpus.map_err(|e| match e {
        quill_data::DataError::Download { reason, .. } => anyhow::anyhow!(
            "{} is not at {path} and could not be downloaded ({reason}): with a copy of it, `quill data get --from FILE` puts it there; or train on your own text with `--data FILE`",
            known.name,
            path = path.display()
        ),
        e => e.into(),
    })
}

/// Where the data of a run lives, for the configuration header.
struct Loaded {
    dataset: Dataset,
    /// The path and what it holds.
    description: String,
    /// The path, as named (what a checkpoint records).
    source: String,
    /// The text, when the data was read into memory.
    corpus: Option<Corpus>,
}

/// Where the gpt2 tokenizer's default data is prepared (from tiny Shakespeare).
const SHAKESPEARE_GPT2: &str = "data/shakespeare-gpt2";

/// The data `--data` names, or the default for `spec` (the checkpoint's tokenizer when
/// `tokenizer` is given): a prepared dataset is memory-mapped; a text is tokenized in
/// memory with the checkpoint's tokenizer (which must be the text's own for characters)
/// or with `spec`.
fn load_dataset(
    source: &DataSource,
    tokenizer: Option<&Tokenizer>,
    spec: TokenizerSpec,
    val_fraction: f64,
) -> Result<Loaded> {
    let spec = tokenizer.map_or(spec, Tokenizer::spec);
    if let Some(paths) = llmc_shards(source)? {
        let dataset = Dataset::open_llmc_shards(&paths)?;
        if let Some(tokenizer) = tokenizer {
            dataset.check_tokenizer(tokenizer)?;
        }
        let description = format!(
            "{} ({}, {} tokens; {}, {} tokens; tokenizer {})",
            source
                .data
                .as_ref()
                .expect("shards come from --data")
                .display(),
            count(paths.train.len() as u64, "train shard"),
            dataset.split.train.len(),
            count(paths.val.len() as u64, "val shard"),
            dataset.split.val.len(),
            dataset.tokenizer.name(),
        );
        return Ok(Loaded {
            dataset,
            description,
            source: pattern_source(source),
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
        (Some(path), _) if names_default(path) => Some(prepare_default_gpt2()?),
        (Some(_), _) | (None, TokenizerSpec::Char) => None,
        (None, TokenizerSpec::Gpt2)
            if source.read_only && !Dataset::is_prepared(Path::new(SHAKESPEARE_GPT2)) =>
        {
            None
        }
        (None, TokenizerSpec::Gpt2) => Some(prepare_default_gpt2()?),
        (None, TokenizerSpec::Bpe(_)) => anyhow::bail!(
            "the {spec} tokenizer has no default data: pass --data DIR, a dataset made with `quill data prepare --tokenizer {spec}`"
        ),
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
            source: dir.display().to_string(),
            corpus: None,
        });
    }
    let corpus = match &source.data {
        Some(path) if names_default(path) => load_corpus(&DataSource::default())?,
        _ => load_corpus(source)?,
    };
    let dataset = match (tokenizer, spec) {
        (Some(tokenizer), _) => {
            Dataset::with_tokenizer(&corpus.text, tokenizer.clone(), val_fraction)?
        }
        (None, TokenizerSpec::Char) => Dataset::new(&corpus.text, val_fraction)?,
        (None, TokenizerSpec::Gpt2) => {
            Dataset::with_tokenizer(&corpus.text, Tokenizer::gpt2(), val_fraction)?
        }
        (None, TokenizerSpec::Bpe(_)) => anyhow::bail!(
            "a {spec} tokenizer is trained by `quill data prepare --tokenizer {spec}`; pass the dataset it writes as --data"
        ),
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
        source: corpus.source.display().to_string(),
        corpus: Some(corpus),
    })
}

/// `--data PATTERN` (with `--val-data PATTERN`), as named.
fn pattern_source(source: &DataSource) -> String {
    let data = source
        .data
        .as_ref()
        .map_or_else(String::new, |d| d.display().to_string());
    match &source.val_data {
        Some(val) => format!("{data} (val {val})"),
        None => data,
    }
}

/// The train and val shards `--data` (and `--val-data`) name, when they name llm.c
/// shards rather than a text or a prepared dataset: a pattern, or a directory that
/// holds `*train_*.bin` and `*val_*.bin` files.
fn llmc_shards(source: &DataSource) -> Result<Option<shards::ShardPaths>> {
    let Some(data) = &source.data else {
        return Ok(None);
    };
    let pattern = data.to_string_lossy();
    Ok(match (&source.val_data, shards::is_pattern(&pattern)) {
        (Some(val), _) => Some(shards::ShardPaths {
            train: shards::expand(&pattern)?,
            val: shards::expand(val)?,
        }),
        (None, true) => anyhow::bail!(
            "--data {pattern} is a pattern of training shards: name the validation shards with --val-data"
        ),
        (None, false) if data.is_dir() && !Dataset::is_prepared(data) => {
            shards::in_directory(data)?
        }
        (None, false) => None,
    })
}

/// `data/shakespeare-gpt2`, prepared from tiny Shakespeare with the gpt2 tokenizer if
/// it is not there yet (nanoGPT's `data/shakespeare`).
fn prepare_default_gpt2() -> Result<PathBuf> {
    let out = PathBuf::from(SHAKESPEARE_GPT2);
    if Dataset::is_prepared(&out) {
        return Ok(out);
    }
    load_corpus(&DataSource::default())?;
    eprintln!(
        "preparing {} from {} with the gpt2 tokenizer",
        out.display(),
        TINY_SHAKESPEARE.default_path
    );
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

/// The settings of a `--config` TOML file, or none.
fn config_file(path: Option<&std::path::Path>) -> Result<quill_train::RunOverrides> {
    let Some(file) = path else {
        return Ok(Default::default());
    };
    let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
    Ok(quill_train::RunOverrides::from_toml(&text)?)
}

/// Warns when users other than the owner may read `file`, a secret given by `flag`.
pub fn warn_if_others_can_read(file: &Path, flag: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "warning: {flag} {} may be read by other users (mode {:o}): chmod 600 {0}",
                file.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (file, flag);
}

/// Prints `report` as one line of JSON with `--json`, else as `text` writes it.
fn print_report<T: Serialize>(json: bool, report: &T, text: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        text(report);
    }
    Ok(())
}
