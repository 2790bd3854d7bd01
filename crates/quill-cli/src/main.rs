//! `quill`: download data, train, sample and evaluate character-level GPTs.
//!
//! This file only parses and dispatches; the work is in the library crates.

mod allocator;
mod backend;
mod cli;
mod commands;
mod devices;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu_cache;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
