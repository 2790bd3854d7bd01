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
        Err(error) if error.is::<commands::Interrupted>() => ExitCode::from(130),
        Err(error) => {
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A command line clap rejects: one line, `error: …` (with clap's tip, if it has one,
/// and the usage line for missing arguments), exit status 2. `--help` and `--version` print as clap prints them.
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
    let missing = error.kind() == ErrorKind::MissingRequiredArgument;
    eprintln!("{}", one_line(&text, missing));
    ExitCode::from(2)
}

/// clap's report as one line: its first paragraph (the message, with the arguments it
/// lists), its tip, and with `usage` the usage line.
fn one_line(text: &str, usage: bool) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let message: Vec<&str> = lines
        .iter()
        .copied()
        .take_while(|l| !l.is_empty())
        .collect();
    let mut line = match message.is_empty() {
        true => "error: invalid arguments".to_string(),
        false => message.join(" "),
    };
    line = line.trim_end_matches(':').to_string();
    let usage = (lines.iter())
        .find_map(|l| l.strip_prefix("Usage: "))
        .filter(|_| usage);
    let tip = lines.iter().find_map(|l| l.strip_prefix("tip: "));
    let mut notes: Vec<String> = Vec::new();
    notes.extend(tip.map(str::to_string));
    notes.extend(usage.map(|u| format!("usage: {u}")));
    notes.push("see --help".into());
    format!("{line} ({})", notes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn missing_arguments_are_named_with_the_usage() {
        let report = "error: the following required arguments were not provided:\n  --checkpoint <DIR>\n\nUsage: quill sample --checkpoint <DIR>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(report, true),
            "error: the following required arguments were not provided: --checkpoint <DIR> (usage: quill sample --checkpoint <DIR>; see --help)"
        );
    }
}
