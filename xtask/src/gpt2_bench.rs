//! `cargo xtask bench-gpt2 [--tokens N] [--pairs P]`: GPT-2 124M on the CPU, side by
//! side with Hugging Face transformers in the same run, on the same weights.
//!
//! 1. `bench/gpt2_generate.py make`: a `GPT2LMHeadModel` of GPT-2 124M's shapes with
//!    random weights (no download) at `target/gpt2-bench/hf-124m`, once; then
//!    `quill import gpt2 --from` it.
//! 2. P interleaved pairs (default 3) of `quill bench --checkpoint` and
//!    `bench/gpt2_generate.py bench`: N new tokens (default 200) with the KV cache, as
//!    many threads as cores; tokens/s and each process's peak RSS.
//! 3. Finetuning memory: 3 steps of `quill train --init-from` at batch 1 × 1024 on GPT-2
//!    tokens of tiny Shakespeare (prepared from `$QUILL_SHAKESPEARE`, default
//!    `../shared/data/tinyshakespeare.txt`), under `/usr/bin/time`.
//!
//! Needs `$PYTHON` (default `python3`) with torch and transformers (versions in
//! `scripts/gpt2_fixture.py`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const DIR: &str = "target/gpt2-bench";
const QUILL: &str = "target/release/quill";

pub fn run(args: &[&str]) -> Result<()> {
    let (mut tokens, mut pairs) = (200usize, 3usize);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--tokens" => tokens = it.next().context("--tokens N")?.parse()?,
            "--pairs" => pairs = it.next().context("--pairs P")?.parse()?,
            _ => bail!("usage: cargo xtask bench-gpt2 [--tokens N] [--pairs P]"),
        }
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("{python} cannot import torch and transformers (see scripts/gpt2_fixture.py)");
    }
    crate::cargo(&["build", "--release", "-p", "quill-cli"])?;
    let dir = Path::new(DIR);
    let (hf, ck) = (format!("{DIR}/hf-124m"), format!("{DIR}/ck124"));
    if !Path::new(&hf).join("model.safetensors").exists() {
        crate::timed(&python, &["bench/gpt2_generate.py", "make", &hf], dir)?;
    }
    let _ = std::fs::remove_dir_all(&ck);
    let (_, import_rss, import_s) =
        crate::timed(QUILL, &["import", "gpt2", "--from", &hf, "--out", &ck], dir)?;

    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let tokens_arg = tokens.to_string();
    let mut rows = Vec::new();
    let (mut quill_rates, mut hf_rates) = (Vec::new(), Vec::new());
    for pair in 1..=pairs {
        let args = [
            "bench",
            "--checkpoint",
            ck.as_str(),
            "--sample-tokens",
            &tokens_arg,
            "--json",
        ];
        let (out, rss, _) = crate::timed(QUILL, &args, dir)?;
        let q: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        let q_rate = q["sample_tokens_per_s"].as_f64().unwrap_or(0.0);
        let args = [
            "bench/gpt2_generate.py",
            "bench",
            hf.as_str(),
            &tokens_arg,
            &cores,
        ];
        let (out, hf_rss, _) = crate::timed(&python, &args, dir)?;
        let h: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        let h_rate = h["tokens_per_s"].as_f64().unwrap_or(0.0);
        rows.push(format!(
            "| {pair} | {q_rate:.2} | {rss:.0} | {h_rate:.2} | {hf_rss:.0} | {:.2}x |",
            q_rate / h_rate
        ));
        if pair == 1 {
            rows.insert(0, format!(
                "| pair | quill tokens/s | quill peak RSS (MiB) | transformers {} tokens/s | transformers peak RSS (MiB) | quill / transformers |\n|---|---|---|---|---|---|",
                h["transformers"].as_str().unwrap_or("?")
            ));
        }
        quill_rates.push(q_rate);
        hf_rates.push(h_rate);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (q, h) = (median(&mut quill_rates), median(&mut hf_rates));

    let data = format!("{DIR}/data/shakespeare-gpt2");
    if !Path::new(&data).join("meta.json").exists() {
        let text = std::env::var("QUILL_SHAKESPEARE")
            .unwrap_or_else(|_| "../shared/data/tinyshakespeare.txt".into());
        let args = [
            "data",
            "prepare",
            "--data",
            text.as_str(),
            "--tokenizer",
            "gpt2",
            "--out",
            &data,
        ];
        crate::timed(QUILL, &args, dir)?;
    }
    let run = format!("{DIR}/runs/finetune");
    let _ = std::fs::remove_dir_all(&run);
    let args = [
        "train",
        "--init-from",
        &ck,
        "--data",
        &data,
        "--out",
        &run,
        "--batch-size",
        "1",
        "--grad-accum",
        "1",
        "--block-size",
        "1024",
        "--max-iters",
        "3",
        "--eval-interval",
        "1000",
        "--eval-iters",
        "1",
        "--final-eval-iters",
        "1",
        "--sample-chars",
        "0",
    ];
    let (_, ft_rss, ft_s) = crate::timed(QUILL, &args, dir)?;
    let steps = std::fs::read_to_string(format!("{run}/steps.jsonl"))?;
    let rates: Vec<String> = steps
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["tokens_per_s"].as_f64())
        .map(|r| format!("{r:.0}"))
        .collect();

    println!(
        "GPT-2 124M shapes, random weights, {cores} threads, {tokens} new tokens with the KV cache\n"
    );
    println!("{}", rows.join("\n"));
    println!(
        "\nmedian: quill {q:.2} tokens/s, transformers {h:.2} tokens/s: {:.2}x",
        q / h
    );
    println!("import: {import_s:.1} s, peak RSS {import_rss:.0} MiB");
    println!(
        "finetune (AdamW, f32, batch 1 x 1024, 3 steps + 2 evaluations and checkpoints): peak RSS {ft_rss:.0} MiB, {ft_s:.0} s wall, steps at {} tokens/s",
        rates.join(", ")
    );
    Ok(())
}
