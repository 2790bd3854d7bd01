//! `cargo xtask bench-tokenizer [--mb N] [--bpe VOCAB] [--train] [--no-tiktoken]`: tokenizer throughput
//! and memory, side by side with OpenAI's tiktoken in the same run.
//!
//! 1. Builds an N MB text (default 100) from the UTF-8 source and documentation files
//!    under `~/.cargo/registry/src` and `~/.rustup/toolchains` (files in sorted order,
//!    text already on the machine), at `target/bench-corpus/text-N.txt`.
//! 2. `quill data prepare --tokenizer gpt2` on it (end to end: reading, tokenizing on
//!    all cores, writing), under `/usr/bin/time` for the peak RSS.
//! 3. `bench/tiktoken_bench.py` on the same file with as many threads, when `$PYTHON`
//!    (default `python3`) can `import tiktoken`: the faster of one-thread
//!    `encode_ordinary` and threaded `encode_ordinary_batch` (tokenizing only).
//!    `--no-tiktoken` skips it (its token lists take ~30 bytes per token: a 1 GB text
//!    needs ~10 GB).
//! 4. `--bpe VOCAB`: `quill data prepare --tokenizer bpe:VOCAB` (training + tokenizing).
//! 5. `--train`: 50 steps of `quill train --preset shakespeare-gpt2 --batch-size 4` on
//!    the gpt2 dataset and, for comparison, on tiny Shakespeare's (`data/shakespeare-gpt2`),
//!    under `/usr/bin/time`: the peak RSS should not depend on the corpus' size.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const DIR: &str = "target/bench-corpus";

pub fn run(args: &[&str]) -> Result<()> {
    let (mut mb, mut bpe, mut train, mut peer) = (100usize, None, false, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--mb" => mb = it.next().context("--mb N")?.parse()?,
            "--bpe" => bpe = Some(it.next().context("--bpe VOCAB")?.parse::<usize>()?),
            "--train" => train = true,
            "--no-tiktoken" => peer = false,
            _ => bail!(
                "usage: cargo xtask bench-tokenizer [--mb N] [--bpe VOCAB] [--train] [--no-tiktoken]"
            ),
        }
    }
    crate::cargo(&["build", "--release", "-p", "quill-cli"])?;
    let text = corpus(mb)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gpt2_dir = format!("{DIR}/gpt2-{mb}");
    let mut rows = Vec::new();

    let (meta, rss, wall) = prepare(&text, "gpt2", &gpt2_dir)?;
    let bytes = meta["dataset"]["bytes"].as_f64().unwrap_or(0.0);
    let quill_mbs = bytes / 1e6 / wall;
    rows.push(format!(
        "| quill `data prepare --tokenizer gpt2` (end to end, {cores} threads) | {} | {wall:.1} | {quill_mbs:.1} | {rss:.0} |",
        meta["dataset"]["train_tokens"].as_u64().unwrap_or(0) + meta["dataset"]["val_tokens"].as_u64().unwrap_or(0)
    ));

    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_tiktoken = peer
        && Command::new(&python)
            .args(["-c", "import tiktoken"])
            .output()
            .is_ok_and(|o| o.status.success());
    if has_tiktoken {
        let t: Value = crate::bench::json_of(Command::new(&python).args([
            "bench/tiktoken_bench.py",
            &text,
            &cores.to_string(),
        ]))?;
        let mbs = t["mb_per_s"].as_f64().unwrap_or(0.0);
        rows.push(format!(
            "| tiktoken {} `gpt2` (tokenizing only; best of 1 thread {:.1} s, batch of {cores} threads {:.1} s) | {} | {:.1} | {mbs:.1} | {:.0} |",
            t["tiktoken"].as_str().unwrap_or("?"),
            t["single_thread_s"].as_f64().unwrap_or(0.0),
            t["batch_s"].as_f64().unwrap_or(0.0),
            t["tokens"],
            t["mb"].as_f64().unwrap_or(0.0) / mbs,
            t["peak_rss_mb"].as_f64().unwrap_or(0.0),
        ));
        rows.push(format!(
            "| quill / tiktoken | | | **{:.2}×** | |",
            quill_mbs / mbs
        ));
    } else {
        eprintln!("{python} cannot import tiktoken: no tiktoken comparison");
    }

    if let Some(vocab) = bpe {
        let (report, rss, wall) = prepare(
            &text,
            &format!("bpe:{vocab}"),
            &format!("{DIR}/bpe{vocab}-{mb}"),
        )?;
        rows.push(format!(
            "| quill `data prepare --tokenizer bpe:{vocab}` (training {:.1} s, then tokenizing {:.1} s) | {} | {wall:.1} | {:.1} | {rss:.0} |",
            report["seconds"]["training"].as_f64().unwrap_or(0.0),
            report["seconds"]["tokenizing"].as_f64().unwrap_or(0.0),
            report["dataset"]["train_tokens"].as_u64().unwrap_or(0) + report["dataset"]["val_tokens"].as_u64().unwrap_or(0),
            bytes / 1e6 / wall,
        ));
    }
    if train {
        // The same run on this text's dataset, then on tiny Shakespeare's (no --data:
        // the preset prepares data/shakespeare-gpt2).
        for (name, data) in [
            ("this text", Some(gpt2_dir.as_str())),
            ("tiny Shakespeare", None),
        ] {
            let mut args = vec![
                "train",
                "--preset",
                "shakespeare-gpt2",
                "--batch-size",
                "4",
                "--out",
                "target/bench-corpus/run",
                "--max-iters",
                "50",
                "--eval-interval",
                "50",
                "--eval-iters",
                "5",
                "--final-eval-iters",
                "5",
                "--sample-tokens",
                "0",
            ];
            if let Some(data) = data {
                args.extend(["--data", data]);
            }
            let _ = std::fs::remove_dir_all("target/bench-corpus/run");
            let (_, rss, wall) = timed(&args)?;
            rows.push(format!(
                "| quill `train --preset shakespeare-gpt2 --batch-size 4`, 50 steps on {name} | | {wall:.1} | | {rss:.0} |"
            ));
        }
    }
    println!("text: {text} ({:.1} MB)\n", bytes / 1e6);
    println!("| run | tokens | wall s | MB/s | peak RSS MB |\n|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// `quill data prepare --data TEXT --tokenizer TOKENIZER --out OUT --json` under
/// `/usr/bin/time`: its report, peak RSS (MB) and wall seconds.
fn prepare(text: &str, tokenizer: &str, out: &str) -> Result<(Value, f64, f64)> {
    let (stdout, rss, wall) = timed(&[
        "data",
        "prepare",
        "--data",
        text,
        "--tokenizer",
        tokenizer,
        "--out",
        out,
        "--json",
    ])?;
    let report = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    Ok((report, rss, wall))
}

/// `quill ARGS` under `/usr/bin/time`: stdout, peak RSS (MB) and wall seconds.
fn timed(args: &[&str]) -> Result<(String, f64, f64)> {
    crate::timed("target/release/quill", args, Path::new(DIR))
}

/// The benchmark text of `mb` MB, made once.
fn corpus(mb: usize) -> Result<String> {
    let path = format!("{DIR}/text-{mb}.txt");
    if Path::new(&path).exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(DIR)?;
    let home = PathBuf::from(std::env::var("HOME").context("HOME")?);
    let mut files = Vec::new();
    for root in [
        home.join(".cargo/registry/src"),
        home.join(".rustup/toolchains"),
    ] {
        collect(&root, &mut files)?;
    }
    files.sort();
    let mut text = Vec::with_capacity(mb << 20);
    for file in files {
        if text.len() >= mb * 1_000_000 {
            break;
        }
        let bytes = std::fs::read(&file)?;
        if std::str::from_utf8(&bytes).is_ok() {
            text.extend_from_slice(&bytes);
        }
    }
    if text.len() < mb * 1_000_000 {
        bail!("only {} MB of text found", text.len() / 1_000_000);
    }
    std::fs::write(&path, &text)?;
    Ok(path)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&path, files)?;
        } else if kind.is_file()
            && path.extension().is_some_and(|x| {
                ["rs", "md", "txt", "toml", "html", "js", "py"].contains(&&*x.to_string_lossy())
            })
        {
            files.push(path);
        }
    }
    Ok(())
}
