//! `quill data`: what the "Let's build GPT" notebook prints about its corpus, the
//! statistics of a prepared dataset, and `quill data prepare`.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use quill_data::prepare::{Phase, PrepareOptions, prepare};
use quill_data::token_file::TokenFormat;
use quill_data::{Corpus, Dataset, TINY_SHAKESPEARE, TokenizerSpec};

use crate::cli::{DataArgs, DataCommand, GetArgs, PrepareArgs, TokenFileFormat};
use quill_data::source::DataSource;

static STOP: AtomicBool = AtomicBool::new(false);

/// `quill data get`: tiny Shakespeare in its place, from `--from` or downloaded.
fn get(args: GetArgs) -> Result<()> {
    let known = &TINY_SHAKESPEARE;
    let dest = std::path::Path::new(known.default_path);
    let written = match &args.from {
        Some(from) => known.place_from(from, dest)?,
        None if Corpus::read_verified(known, dest).is_ok() => false,
        None => {
            super::load_corpus(None)?;
            true
        }
    };
    match written {
        true => println!("{} is in place: {}", known.name, dest.display()),
        false => println!("{} was in place already: {}", known.name, dest.display()),
    }
    Ok(())
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        Some(DataCommand::Prepare(args)) => return run_prepare(args),
        Some(DataCommand::Get(args)) => return get(args),
        None => {}
    }
    let source = DataSource {
        data: args.path.or(args.source.data),
        val_data: args.source.val_data,
        read_only: false,
    };
    if let Some(dir) = source.data.as_ref().filter(|p| Dataset::is_prepared(p)) {
        let dataset = Dataset::open(dir)?;
        let meta = dataset
            .meta
            .as_ref()
            .expect("a prepared dataset has meta.json");
        return super::print_report(args.json, meta, |meta| {
            println!("dataset: {}", dir.display());
            println!(
                "source: {} ({}, {} bytes, sha256 {})",
                meta.source,
                super::count(meta.files as u64, "file"),
                meta.bytes,
                meta.sha256
            );
            println!(
                "tokenizer: {} (vocab_size {})",
                meta.tokenizer, meta.vocab_size
            );
            println!(
                "train tokens: {}, val tokens: {}",
                meta.train_tokens, meta.val_tokens
            );
            println!(
                "token files: {}, {}, {:.2} bytes of text per token",
                meta.token_format,
                meta.dtype,
                meta.bytes as f64 / (meta.train_tokens + meta.val_tokens) as f64
            );
        });
    }
    let loaded = super::load_dataset(&source, None, TokenizerSpec::Char, args.val_fraction)?;
    let Some(corpus) = loaded.corpus else {
        // llm.c's shards: token files without a text or a meta.json.
        let split = &loaded.dataset.split;
        let report = serde_json::json!({
            "data": loaded.description,
            "tokenizer": loaded.dataset.tokenizer.name(),
            "vocab_size": loaded.dataset.tokenizer.vocab_size(),
            "train_tokens": split.train.len(),
            "val_tokens": split.val.len(),
        });
        return super::print_report(args.json, &report, |_| {
            println!("data: {}", loaded.description);
        });
    };
    let dataset = loaded.dataset;
    let n_chars = corpus.text.chars().count();
    let vocab = dataset
        .tokenizer
        .as_char()
        .map(|t| t.vocab())
        .unwrap_or_default();
    let (train_tokens, val_tokens) = (dataset.split.train.len(), dataset.split.val.len());
    let report = serde_json::json!({
        "n_chars": n_chars,
        "vocab": vocab,
        "vocab_size": dataset.tokenizer.vocab_size(),
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
    });
    super::print_report(args.json, &report, |_| {
        println!("length of dataset in characters: {n_chars}");
        println!(
            "first 100 characters:\n{}",
            corpus.text.chars().take(100).collect::<String>()
        );
        println!("vocabulary: {vocab}");
        println!("vocab_size: {}", dataset.tokenizer.vocab_size());
        println!("train tokens: {train_tokens}, val tokens: {val_tokens}");
    })
}

fn run_prepare(args: PrepareArgs) -> Result<()> {
    let options = PrepareOptions {
        input: args.data,
        extensions: args.ext,
        tokenizer: args.tokenizer.parse()?,
        out: args.out,
        val_fraction: args.val_fraction,
        format: match args.format {
            TokenFileFormat::Llmc => TokenFormat::LlmC,
            TokenFileFormat::Nanogpt => TokenFormat::NanoGpt,
        },
        lossy: args.lossy,
        shard_tokens: args.shard_tokens,
    };
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: removing the partial dataset");
    });
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{msg:12} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("a valid template"),
    );
    let started = std::time::Instant::now();
    let mut phases: Vec<(Phase, f64)> = Vec::new();
    let meta = prepare(&options, Some(&STOP), |phase, done, total| {
        if phases.last().map(|p| p.0) != Some(phase) {
            phases.push((phase, started.elapsed().as_secs_f64()));
        }
        bar.set_message(phase_name(phase));
        if bar.length() != Some(total) {
            bar.reset();
            bar.set_length(total);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let meta = meta?;
    let seconds = started.elapsed().as_secs_f64();
    // Seconds per phase: from its first progress report to the next phase's.
    let mut timings = serde_json::Map::new();
    for (i, (phase, start)) in phases.iter().enumerate() {
        let end = phases.get(i + 1).map_or(seconds, |p| p.1);
        timings.insert(phase_name(*phase).into(), (end - start).into());
    }
    timings.insert("total".into(), seconds.into());
    let report = serde_json::json!({ "dataset": meta, "seconds": timings });
    super::print_report(args.json, &report, |_| {
        println!(
            "{}: {} train + {} val tokens ({} tokenizer, vocab_size {}) from {} bytes in {}, {:.1} s ({:.1} MB/s)",
            options.out.display(),
            meta.train_tokens,
            meta.val_tokens,
            meta.tokenizer,
            meta.vocab_size,
            meta.bytes,
            super::count(meta.files as u64, "file"),
            seconds,
            meta.bytes as f64 / 1e6 / seconds
        );
        if meta.replaced_invalid > 0 {
            println!(
                "replaced {} invalid UTF-8 sequences with U+FFFD",
                meta.replaced_invalid
            );
        }
    })
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Vocabulary => "vocabulary",
        Phase::Training => "training",
        Phase::Tokenizing => "tokenizing",
    }
}
