//! One module per subcommand: each turns parsed arguments into library calls.

mod bench;
mod data;
mod devices;
mod eval;
mod parity;
mod sample;
mod train;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use quill_data::{CharTokenizer, Corpus, Dataset, TINY_SHAKESPEARE};
use serde::Serialize;

use crate::cli::{Cli, Command, DataSource};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(*args),
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
        Command::Parity(args) => parity::run(args),
    }
}

/// The corpus `--data` names, or tiny Shakespeare (downloaded, with a progress bar on
/// stderr, and verified if missing).
fn load_corpus(source: &DataSource) -> Result<Corpus> {
    if let Some(path) = &source.data {
        return Ok(Corpus::read(path)?);
    }
    let known = &TINY_SHAKESPEARE;
    let path = known.default_path.as_ref();
    let bar = ProgressBar::hidden().with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .expect("a valid template"),
    );
    let corpus = Corpus::read_or_fetch(known, path, |read, total| {
        if bar.is_hidden() {
            eprintln!("downloading {} from {}", known.name, known.url);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        bar.set_length(total);
        bar.set_position(read);
    });
    bar.finish_and_clear();
    Ok(corpus?)
}

/// The corpus `--data` names, tokenized with `tokenizer` (a checkpoint's, which must be
/// the corpus' own) or with the corpus' own vocabulary, and split.
fn load_dataset(
    source: &DataSource,
    tokenizer: Option<&CharTokenizer>,
    val_fraction: f64,
) -> Result<(Corpus, Dataset)> {
    let corpus = load_corpus(source)?;
    let dataset = match tokenizer {
        Some(tokenizer) => Dataset::with_tokenizer(&corpus.text, tokenizer.clone(), val_fraction)?,
        None => Dataset::new(&corpus.text, val_fraction)?,
    };
    Ok((corpus, dataset))
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
