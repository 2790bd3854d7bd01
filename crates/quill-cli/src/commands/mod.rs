//! One module per subcommand: each turns parsed arguments into library calls.

mod bench;
mod data;
mod devices;
mod eval;
mod hub;
mod launch;
mod parity;
mod prepared;
mod runs;
mod sample;
mod serve;
mod train;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use quill_data::source::{self, DataSource, LoadEvents, Loaded};
use quill_data::{Corpus, DataError, TINY_SHAKESPEARE, Tokenizer, TokenizerSpec};
use quill_train::{RunCheckpoint, Which, checkpoint_of_run};
use serde::Serialize;

use crate::cli::{Cli, Command};

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

/// How loading shows itself: a progress bar while tiny Shakespeare downloads, a line
/// when the default GPT-2 dataset is prepared.
struct Shown {
    bar: indicatif::ProgressBar,
}

impl Shown {
    fn new() -> Self {
        Shown {
            bar: crate::progress::bytes_bar(),
        }
    }
}

impl Drop for Shown {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl LoadEvents for Shown {
    fn downloading(&mut self, read: u64, total: u64) {
        if self.bar.is_hidden() {
            eprintln!(
                "downloading {} from {}",
                TINY_SHAKESPEARE.name, TINY_SHAKESPEARE.url
            );
            (self.bar).set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        self.bar.set_length(total);
        self.bar.set_position(read);
    }

    fn preparing(&mut self, out: &Path, from: &Path) {
        eprintln!(
            "preparing {} from {} with the gpt2 tokenizer",
            out.display(),
            from.display()
        );
    }
}

/// A failed download of the default corpus says how to work offline.
fn offline_hint(e: DataError) -> anyhow::Error {
    match e {
        DataError::Download { reason, .. } => anyhow::anyhow!(
            "{} is not at {path} and could not be downloaded ({reason}): with a copy of it, `quill data get --from FILE` puts it there; or train on your own text with `--data FILE`",
            TINY_SHAKESPEARE.name,
            path = TINY_SHAKESPEARE.default_path
        ),
        e => e.into(),
    }
}

/// The corpus at `path`, or tiny Shakespeare (downloaded, with a progress bar on
/// stderr, and verified if missing).
fn load_corpus(path: Option<&Path>) -> Result<Corpus> {
    source::load_corpus(path, &mut Shown::new()).map_err(offline_hint)
}

/// The data `source` names, or the default ([`source::load`]), shown as it loads.
fn load_dataset(
    source: &DataSource,
    tokenizer: Option<&Tokenizer>,
    spec: TokenizerSpec,
    val_fraction: f64,
) -> Result<Loaded> {
    source::load(source, tokenizer, spec, val_fraction, &mut Shown::new()).map_err(offline_hint)
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
