//! `cargo xtask bench-parallel [--pairs P] [--iters N]`: what data parallelism costs on
//! this machine, with real processes over localhost.
//!
//! 1. **Overhead at the same global batch** on the `cpu` preset: one process with all
//!    cores and batch 12 against `quill launch --nproc 2` with batch 6 per rank (each
//!    rank gets half the cores, as launch sets `RAYON_NUM_THREADS`), in interleaved
//!    pairs. Per-step time is the median of `steps.jsonl`'s tokens/s after 10 warm-up
//!    steps.
//! 2. **All-reduce time** for the `shakespeare-char` model (10.6 M parameters, 42 MB of
//!    f32 gradients): 2 ranks, batch 1 per rank (the exchange does not depend on the
//!    batch), the time each rank spent in all-reduces per step, as `quill train`
//!    prints it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

const QUILL: &str = "target/release/quill";

pub fn run(args: &[&str]) -> Result<()> {
    let mut pairs = 3;
    let mut iters = 60;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = rest.next().context("a value after the flag")?;
        match *arg {
            "--pairs" => pairs = value.parse()?,
            "--iters" => iters = value.parse()?,
            _ => bail!("usage: cargo xtask bench-parallel [--pairs P] [--iters N]"),
        }
    }
    crate::cargo(&["build", "--release", "--bin", "quill"])?;
    let work = Path::new("target/parallel-bench");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("data/tinyshakespeare"))?;
    std::fs::copy(crate::CORPUS, work.join("data/tinyshakespeare/input.txt"))?;
    let quill = std::fs::canonicalize(QUILL)?;
    let cpu = flags("cpu", iters);
    let common: Vec<&str> = cpu.iter().map(String::as_str).collect();
    let mut one_ms = Vec::new();
    let mut exchanges = String::new();
    let mut two_ms = Vec::new();
    for pair in 0..pairs {
        let one = format!("one{pair}");
        let mut args = vec!["train", "--batch-size", "12", "--out", &one];
        args.extend_from_slice(&common);
        run_quill(&quill, &args, work)?;
        one_ms.push(ms_per_step(&work.join(&one), 768)?);

        let two = format!("two{pair}");
        let mut args = vec!["launch", "--nproc", "2", "--", "train", "--batch-size", "6"];
        args.extend_from_slice(&["--out", &two]);
        args.extend_from_slice(&common);
        exchanges = run_quill(&quill, &args, work)?;
        two_ms.push(ms_per_step(&work.join(&two), 768)?);
        eprintln!(
            "pair {pair}: 1 rank x 12 rows {:.1} ms/step, 2 ranks x 6 rows {:.1} ms/step",
            one_ms[pair], two_ms[pair]
        );
    }
    let char_model = flags("shakespeare-char", 10);
    let mut args = vec!["launch", "--nproc", "2", "--", "train", "--batch-size", "1"];
    args.extend(char_model.iter().map(String::as_str));
    args.extend_from_slice(&["--out", "sc"]);
    let out = run_quill(&quill, &args, work)?;
    println!("## Data parallelism on this machine (cargo xtask bench-parallel)\n");
    println!(
        "cpu preset, global batch 12 x 64 tokens, {iters} steps, median after 10 warm-up steps:\n"
    );
    println!(
        "| pair | 1 rank x 12 rows, all cores (ms/step) | 2 ranks x 6 rows, half the cores each (ms/step) | overhead |"
    );
    println!("| --- | --- | --- | --- |");
    for (i, (a, b)) in one_ms.iter().zip(&two_ms).enumerate() {
        println!("| {i} | {a:.1} | {b:.1} | {:+.0}% |", 100.0 * (b / a - 1.0));
    }
    println!("\nThe last 2-rank cpu run's exchanges ({iters} steps, 0.80 M parameters):\n");
    for line in exchanges.lines().filter(|l| l.contains("all-reduces")) {
        println!("    {line}");
    }
    println!("\nshakespeare-char model (10.6 M parameters), 2 ranks, 10 steps:\n");
    for line in out.lines().filter(|l| l.contains("all-reduces")) {
        println!("    {line}");
    }
    Ok(())
}

/// `quill train` flags: `preset`, `iters` steps, no evaluation but the shortest final
/// one, no samples, on Flex.
fn flags(preset: &str, iters: usize) -> Vec<String> {
    let iters = iters.to_string();
    [
        "--preset",
        preset,
        "--max-iters",
        &iters,
        "--eval-interval",
        "100000",
        "--eval-iters",
        "1",
        "--final-eval-iters",
        "1",
        "--sample-tokens",
        "0",
        "--device",
        "flex",
    ]
    .map(String::from)
    .to_vec()
}

/// Runs quill in `dir`; its stdout.
fn run_quill(quill: &Path, args: &[&str], dir: &Path) -> Result<String> {
    let stdout = crate::stdout_of(Command::new(quill).args(args).current_dir(dir))?;
    Ok(String::from_utf8(stdout)?)
}

/// Median milliseconds per step of a run's `steps.jsonl` after 10 warm-up steps, from
/// its tokens/s and `tokens` per step.
fn ms_per_step(run: &Path, tokens: usize) -> Result<f64> {
    let text = std::fs::read_to_string(run.join("steps.jsonl"))?;
    let mut ms: Vec<f64> = text
        .lines()
        .skip(10)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let rate = v["tokens_per_s"].as_f64().context("tokens_per_s")?;
            Ok(1e3 * tokens as f64 / rate)
        })
        .collect::<Result<_>>()?;
    if ms.is_empty() {
        bail!("{}: fewer than 11 steps", run.display());
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
