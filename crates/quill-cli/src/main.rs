//! `quill`: download data, train, sample and evaluate GPTs on characters or subword tokens.
//!
//! This file only parses and dispatches; the work is in the library crates.

mod allocator;
mod backend;
mod cli;
mod commands;
mod panics;
mod progress;
mod refusals;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    #[cfg(feature = "wgpu")]
    backend::probe::wgpu::quiet_headless_vulkan();
    allocator::keep_freed_memory();
    panics::install_hook();
    refusals::install();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    // The outer boundary: a panic that no inner boundary caught is still one line.
    match panics::catch("internal error", || commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A command line clap rejects: one line, `error: …` (with clap's tip, if it has one),
/// exit status 2. `--help` and `--version` print as clap prints them.
fn usage_error(error: clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    let tip = lines.find_map(|l| l.strip_prefix("tip: "));
    match tip {
        Some(tip) => eprintln!("{first} ({tip}; see --help)"),
        None => eprintln!("{first} (see --help)"),
    }
    ExitCode::from(2)
}
