//! One module per subcommand: each turns parsed arguments into library calls.

mod bench;
mod data;
mod devices;
mod eval;
mod parity;
mod sample;
mod train;

use anyhow::Result;
use quill_data::{Corpus, TINY_SHAKESPEARE};

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

/// The corpus `--data` names, or tiny Shakespeare (downloaded and verified if missing).
fn load_corpus(source: &DataSource) -> Result<Corpus> {
    Ok(match &source.data {
        Some(path) => Corpus::read(path)?,
        None => Corpus::read_or_fetch(&TINY_SHAKESPEARE, TINY_SHAKESPEARE.default_path.as_ref())?,
    })
}
