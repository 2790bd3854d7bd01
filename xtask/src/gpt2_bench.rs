//! `cargo xtask bench-gpt2 [--tokens N] [--pairs P] [--no-finetune]`: GPT-2 124M on the
//! CPU, side by side with Hugging Face transformers (and llama.cpp when `$LLAMA_CPP` is
//! set) in the same run, on the same weights, against the machine's bandwidth bound.
//!
//! 1. `bench/gpt2_generate.py make`: a `GPT2LMHeadModel` of GPT-2 124M's shapes with
//!    random weights (no download) at `target/gpt2-bench/hf-124m`, once; then
//!    `quill import gpt2 --from` it.
//! 2. P interleaved rounds (default 3), each: `quill bench --checkpoint --weights W` for
//!    W in f32, bf16, f16, q8, then `bench/gpt2_generate.py bench` (transformers, f32),
//!    then llama.cpp's `llama-bench` on f32, f16 and Q8_0 GGUF files of the same weights:
//!    N new tokens (default 200) with the KV cache, as many threads as cores; tokens/s,
//!    each process's peak RSS, and the bandwidth bound: quill's read bandwidth over a
//!    buffer of the weights' size (`read_bandwidth_gb_s`, measured in each quill run)
//!    over the bytes of weights each engine stores.
//! 3. Unless `--no-finetune`: finetuning memory, 3 steps of `quill train --init-from` at
//!    batch 1 × 1024 on GPT-2 tokens of tiny Shakespeare (prepared from
//!    `$QUILL_SHAKESPEARE`, default `../shared/data/tinyshakespeare.txt`), under
//!    `/usr/bin/time`.
//!
//! Needs `$PYTHON` (default `python3`) with torch and transformers (versions in
//! `scripts/gpt2_fixture.py`). `$LLAMA_CPP`: a llama.cpp source tree with
//! `build/bin/llama-bench` and `build/bin/llama-quantize` built, and `gguf-py` installed
//! in `$PYTHON` (see `scripts/llama_cpp_check.sh`).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const DIR: &str = "target/gpt2-bench";
const QUILL: &str = "target/release/quill";

pub fn run(args: &[&str]) -> Result<()> {
    let (mut tokens, mut pairs, mut finetune) = (200usize, 3usize, true);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--tokens" => tokens = it.next().context("--tokens N")?.parse()?,
            "--pairs" => pairs = it.next().context("--pairs P")?.parse()?,
            "--no-finetune" => finetune = false,
            _ => bail!("usage: cargo xtask bench-gpt2 [--tokens N] [--pairs P] [--no-finetune]"),
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
    let llama = std::env::var("LLAMA_CPP").ok();
    let ggufs = match &llama {
        Some(llama) => llama_files(llama, &python, &ck, dir)?,
        None => Vec::new(),
    };
    // Per engine and precision: tokens/s of each round, peak RSS, bytes of weights.
    let mut rows: Vec<Row> = Vec::new();
    let mut bandwidths = Vec::new();
    for round in 1..=pairs {
        for weights in ["f32", "bf16", "f16", "q8"] {
            let args = [
                "bench",
                "--checkpoint",
                ck.as_str(),
                "--sample-tokens",
                &tokens_arg,
                "--weights",
                weights,
                "--json",
            ];
            let (out, rss, _) = crate::timed(QUILL, &args, dir)?;
            let q: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
            let rate = q["sample_tokens_per_s"].as_f64().unwrap_or(0.0);
            let bytes = q["weight_bytes"].as_f64().unwrap_or(0.0);
            bandwidths.push(q["read_bandwidth_gb_s"].as_f64().unwrap_or(0.0));
            record(&mut rows, &format!("quill {weights}"), rate, rss, bytes);
        }
        let args = [
            "bench/gpt2_generate.py",
            "bench",
            hf.as_str(),
            &tokens_arg,
            &cores,
        ];
        let (out, hf_rss, _) = crate::timed(&python, &args, dir)?;
        let h: Value = serde_json::from_str(out.lines().last().unwrap_or_default())?;
        let name = format!(
            "transformers {} f32",
            h["transformers"].as_str().unwrap_or("?")
        );
        let f32_bytes = rows[0].bytes;
        record(
            &mut rows,
            &name,
            h["tokens_per_s"].as_f64().unwrap_or(0.0),
            hf_rss,
            f32_bytes,
        );
        if let Some(llama) = &llama {
            for (kind, file) in &ggufs {
                let bench = format!("{llama}/build/bin/llama-bench");
                let args = [
                    "-m",
                    file,
                    "-p",
                    "0",
                    "-n",
                    &tokens_arg,
                    "-t",
                    &cores,
                    "-r",
                    "1",
                ];
                let (out, rss, _) =
                    crate::timed(&bench, &[&args[..], &["-o", "json"]].concat(), dir)?;
                let runs: Value = serde_json::from_str(&out)?;
                let rate = runs[0]["avg_ts"].as_f64().unwrap_or(0.0);
                let bytes = std::fs::metadata(file)?.len() as f64;
                record(&mut rows, &format!("llama.cpp {kind}"), rate, rss, bytes);
            }
        }
        eprintln!("round {round} of {pairs} done");
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let bandwidth = median(&bandwidths);
    let reference = rows
        .iter()
        .find(|r| r.name.starts_with("transformers"))
        .map_or(1.0, |r| median(&r.rates));

    println!(
        "GPT-2 124M shapes, random weights, {cores} threads, {tokens} new tokens with the KV cache, {pairs} rounds"
    );
    println!(
        "read bandwidth (quill, a buffer the size of the f32 weights, median of the runs): {bandwidth:.2} GB/s\n"
    );
    println!(
        "| engine | tokens/s per round | median | x transformers | weights (MB) | bound (tokens/s) | of the bound | peak RSS (MiB) |\n|---|---|---|---|---|---|---|---|"
    );
    for row in &rows {
        let m = median(&row.rates);
        let bound = bandwidth * 1e9 / row.bytes;
        let rates: Vec<String> = row.rates.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {} | {} | {m:.2} | {:.2}x | {:.1} | {bound:.1} | {:.0}% | {:.0} |",
            row.name,
            rates.join(", "),
            m / reference,
            row.bytes / 1e6,
            100.0 * m / bound,
            row.rss
        );
    }
    println!("\nimport: {import_s:.1} s, peak RSS {import_rss:.0} MiB");
    if finetune {
        finetune_memory(dir, &ck)?;
    }
    Ok(())
}

/// One engine at one precision: its rates over the rounds, peak RSS, bytes of weights.
struct Row {
    name: String,
    rates: Vec<f64>,
    rss: f64,
    bytes: f64,
}

fn record(rows: &mut Vec<Row>, name: &str, rate: f64, rss: f64, bytes: f64) {
    match rows.iter_mut().find(|r| r.name == name) {
        Some(row) => {
            row.rates.push(rate);
            row.rss = row.rss.max(rss);
        }
        None => rows.push(Row {
            name: name.to_string(),
            rates: vec![rate],
            rss,
            bytes,
        }),
    }
}

/// The f32, f16 and Q8_0 GGUF files of the checkpoint `ck` (through `quill export
/// --format hf`, llama.cpp's `convert_hf_to_gguf.py` and `llama-quantize`), made once.
fn llama_files(llama: &str, python: &str, ck: &str, dir: &Path) -> Result<Vec<(String, String)>> {
    let hf = format!("{DIR}/hf-export");
    if !Path::new(&hf).join("config.json").exists() {
        crate::timed(
            QUILL,
            &["export", "--format", "hf", "--checkpoint", ck, "--out", &hf],
            dir,
        )?;
    }
    let file = |kind: &str| format!("{DIR}/gpt2-124m-{kind}.gguf");
    for kind in ["f32", "f16"] {
        if !Path::new(&file(kind)).exists() {
            let convert = format!("{llama}/convert_hf_to_gguf.py");
            let args = [
                convert.as_str(),
                &hf,
                "--outtype",
                kind,
                "--outfile",
                &file(kind),
            ];
            crate::timed(python, &args, dir)?;
        }
    }
    if !Path::new(&file("q8_0")).exists() {
        let quantize = format!("{llama}/build/bin/llama-quantize");
        crate::timed(&quantize, &[&file("f32"), &file("q8_0"), "Q8_0"], dir)?;
    }
    Ok(["f32", "f16", "q8_0"]
        .map(|kind| (kind.to_uppercase(), file(kind)))
        .into_iter()
        .collect())
}

/// Finetuning's peak memory: 3 steps of `quill train --init-from ck` at batch 1 × 1024.
fn finetune_memory(dir: &Path, ck: &str) -> Result<()> {
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
        ck,
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
        "--sample-tokens",
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
        "finetune (AdamW, f32, batch 1 x 1024, 3 steps + 2 evaluations and checkpoints): peak RSS {ft_rss:.0} MiB, {ft_s:.0} s wall, steps at {} tokens/s",
        rates.join(", ")
    );
    Ok(())
}
