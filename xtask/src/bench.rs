//! `cargo xtask bench [--iters N] [--rounds R] [--quick]`: the standard benchmark matrix
//! for this machine, written to `BENCHMARKS.md`.
//!
//! - The `cpu` preset on each CPU backend (flex, ndarray); the `shakespeare-char` preset
//!   on CUDA when `nvidia-smi` sees a GPU (the binary is then built with `--features cuda`).
//! - The PyTorch comparator `bench/reference.py` on the same preset, settings and data,
//!   when `$PYTHON` (default `python3`) can `import torch`; the table then shows the
//!   quill/PyTorch ratio of training tokens/s, measured in the same run.
//! - Rounds: a shared or virtual machine's speed drifts by a third from one minute to
//!   the next, for PyTorch as much as for quill, so one run of each says little. The
//!   first backend of each preset and PyTorch run in turn `R` times (default 5); the row
//!   shows the median run, and the ratio is the median of the rounds' ratios (each
//!   round's two runs a few seconds apart), with their range.
//! - Steps: 200 timed steps per run by default (`--iters N`), after 5 warm-up steps.
//!   Runs of 50 steps drifted more: on a 2-core AMD EPYC, quill's 50-step runs spread
//!   over 39–66 ms/iter, its 200-step runs over 49–61.
//! - `--quick` runs few steps (a smoke test of the harness, not a measurement).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const OUT: &str = "BENCHMARKS.md";
/// The heading of the hand-kept section of [`OUT`], kept when the table is rewritten.
const HISTORY: &str = "## Measurement history";
const CORPUS: &str = "data/tinyshakespeare/input.txt";

/// One benchmark to run: a preset on a device.
struct Case {
    preset: &'static str,
    device: &'static str,
}

/// One row of the table: the median of a case's runs, and how it compares with PyTorch.
struct Row {
    quill: Value,
    reference: Option<Value>,
    /// Each round's quill/PyTorch ratio of training tokens/s, in rounds order.
    ratios: Vec<f64>,
}

pub fn run(args: &[&str]) -> Result<()> {
    let usage = "usage: cargo xtask bench [--iters N] [--rounds R] [--quick]";
    let (mut iters, mut warmup, mut sample_tokens, mut rounds) = (200, 5, 500, 5);
    let mut rest = args;
    while !rest.is_empty() {
        rest = match rest {
            ["--iters", n, tail @ ..] => {
                iters = n.parse().context("--iters N")?;
                tail
            }
            ["--rounds", r, tail @ ..] => {
                rounds = r.parse::<usize>().context("--rounds R")?.max(1);
                tail
            }
            ["--quick", tail @ ..] => {
                (iters, warmup, sample_tokens, rounds) = (3, 1, 20, 1);
                tail
            }
            _ => bail!("{usage}"),
        };
    }
    let gpu = has_nvidia_gpu();
    let mut build = vec!["build", "--release", "-p", "quill-cli"];
    if gpu {
        build.extend(["--features", "cuda"]);
    }
    crate::cargo(&build)?;
    if !Path::new(CORPUS).exists() {
        crate::cargo(&["run", "--release", "--bin", "quill", "--", "data"])?;
    }
    let mut cases = vec![
        Case {
            preset: "cpu",
            device: "flex",
        },
        Case {
            preset: "cpu",
            device: "ndarray",
        },
    ];
    if gpu {
        cases.push(Case {
            preset: "shakespeare-char",
            device: "cuda",
        });
    }
    let counts = [
        "--iters".to_string(),
        iters.to_string(),
        "--warmup".into(),
        warmup.to_string(),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for case in &cases {
        // PyTorch runs beside the first backend of each preset, in turns; every other
        // backend's row is compared with the median of those runs.
        let same_preset = rows.iter().find(|r| r.quill["preset"] == case.preset);
        if let Some(first) = same_preset {
            let quill = quill_bench(case, &counts, sample_tokens)?;
            let reference = first.reference.clone();
            let ratios = reference.iter().map(|t| ratio(&quill, t)).collect();
            rows.push(Row {
                quill,
                reference,
                ratios,
            });
            continue;
        }
        let (mut quill_runs, mut torch_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let quill = quill_bench(case, &counts, sample_tokens)?;
            let torch = pytorch(case, &quill, &counts)?;
            if let Some(torch) = &torch {
                ratios.push(ratio(&quill, torch));
                eprintln!(
                    "round {}/{rounds}: quill {:.1} ms/iter, PyTorch {:.1} ms/iter, {:.2}x",
                    round + 1,
                    num(&quill, "ms_per_iter"),
                    num(torch, "ms_per_iter"),
                    ratios[ratios.len() - 1],
                );
            }
            quill_runs.push(quill);
            torch_runs.extend(torch);
        }
        rows.push(Row {
            quill: median_run(quill_runs),
            reference: (!torch_runs.is_empty()).then(|| median_run(torch_runs)),
            ratios,
        });
    }
    let markdown = render(&rows, iters, warmup, rounds)?;
    // The hand-written history below the table survives a new measurement.
    let old = std::fs::read_to_string(OUT).unwrap_or_default();
    let history = old.find(HISTORY).map_or("", |at| &old[at..]);
    std::fs::write(OUT, format!("{markdown}\n{history}"))
        .with_context(|| format!("write {OUT}"))?;
    println!("{markdown}");
    eprintln!("wrote {OUT}");
    Ok(())
}

fn has_nvidia_gpu() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

/// Runs a command and parses the last line of its stdout as JSON.
/// Runs `command` and parses the last line of its stdout as JSON; a failure is an error
/// with its stderr.
pub(crate) fn json_of(command: &mut Command) -> Result<Value> {
    let stdout = String::from_utf8(crate::stdout_of(command)?)?;
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("parse the output of {command:?}"))
}

fn quill_bench(case: &Case, counts: &[String], sample_tokens: usize) -> Result<Value> {
    json_of(
        Command::new("target/release/quill")
            .args(["bench", "--json", "--preset", case.preset])
            .args(["--device", case.device])
            .args(counts)
            .args(["--sample-tokens", &sample_tokens.to_string()]),
    )
}

/// The PyTorch comparator on the same settings, when torch is importable (CPU cases only).
fn pytorch(case: &Case, report: &Value, counts: &[String]) -> Result<Option<Value>> {
    if case.device == "cuda" {
        return Ok(None);
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("{python} cannot import torch: no PyTorch comparison");
        return Ok(None);
    }
    let config = Path::new("target/bench").join(format!("{}.json", case.preset));
    std::fs::create_dir_all("target/bench")?;
    std::fs::write(&config, report["config"].to_string())?;
    let threads = report["num_threads"].to_string();
    json_of(
        Command::new(&python)
            .arg("bench/reference.py")
            .arg("--config")
            .arg(&config)
            .args(["--data", CORPUS, "--threads", &threads])
            .args(counts),
    )
    .map(Some)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// quill's training tokens/s over PyTorch's.
fn ratio(quill: &Value, torch: &Value) -> f64 {
    num(quill, "train_tokens_per_s") / num(torch, "train_tokens_per_s")
}

/// The run with the median step time (the faster of the middle two for an even count).
fn median_run(mut runs: Vec<Value>) -> Value {
    runs.sort_by(|a, b| num(a, "ms_per_iter").total_cmp(&num(b, "ms_per_iter")));
    runs.swap_remove((runs.len() - 1) / 2)
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n % 2 {
        1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn render(rows: &[Row], iters: usize, warmup: usize, rounds: usize) -> Result<String> {
    let mut md = String::from("# Benchmarks\n\n");
    md += "Written by `cargo xtask bench`; every figure below was measured in one run on the machine described.\n\n";
    md += &machine()?;
    md += &format!(
        "\nEach row: `quill bench --json` (or `bench/reference.py`) with {iters} timed training steps after {warmup} warm-up steps, \
         random-offset batches of tiny Shakespeare, freshly initialised weights. tokens/s = batch_size x block_size / step time; \
         FLOP/s from nanoGPT's 6N + 12·L·C·T per token. The first backend of each preset and PyTorch ran in turn, \
         {rounds} round(s): their rows show the median run, and \"vs PyTorch\" is the median of the rounds' ratios \
         (range in brackets); other rows ran once, against PyTorch's median run.\n\n"
    );
    md += "| preset | backend | first step (s) | ms/iter | train tokens/s | vs PyTorch | TFLOP/s | eval tokens/s | sample tokens/s (KV cache / none) | peak RSS (MiB) |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|\n";
    let mut shown: Vec<Value> = Vec::new();
    for Row {
        quill,
        reference,
        ratios,
    } in rows
    {
        let ratio = match ratios.as_slice() {
            [] => "—".to_string(),
            [one] => format!("{one:.2}x"),
            many => {
                let (low, high) = many
                    .iter()
                    .fold((f64::INFINITY, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
                format!("{:.2}x ({low:.2}–{high:.2})", median(many))
            }
        };
        md += &row(quill, &ratio, true);
        if let Some(t) = reference.as_ref().filter(|t| !shown.contains(t)) {
            shown.push(t.clone());
            let mut t = t.clone();
            t["preset"] = quill["preset"].clone();
            md += &row(&t, "1.00x", false);
        }
    }
    Ok(md)
}

fn row(v: &Value, ratio: &str, sampled: bool) -> String {
    let sample = if sampled && v.get("sample_tokens_per_s").is_some() {
        format!(
            "{:.0} / {:.0}",
            num(v, "sample_tokens_per_s"),
            num(v, "sample_tokens_per_s_no_cache")
        )
    } else {
        "—".into()
    };
    format!(
        "| {} | {} | {:.2} | {:.1} | {:.0} | {} | {:.4} | {:.0} | {} | {:.0} |\n",
        v["preset"].as_str().unwrap_or("?"),
        v["backend"].as_str().unwrap_or("?"),
        num(v, "first_step_s"),
        num(v, "ms_per_iter"),
        num(v, "train_tokens_per_s"),
        ratio,
        num(v, "achieved_tflops"),
        num(v, "eval_tokens_per_s"),
        sample,
        num(v, "peak_rss_mb"),
    )
}

/// CPU model, cores, memory, OS and commit, from /proc and git.
pub(crate) fn machine() -> Result<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let mem_kb: f64 = field(&read("/proc/meminfo"), "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flags = field(&cpuinfo, "flags");
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let gpu = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    Ok(format!(
        "- CPU: {} ({cores} cores available; {})\n- memory: {:.1} GiB\n- GPU: {}\n- OS: {}\n- quill: commit {}{}, {}\n",
        field(&cpuinfo, "model name"),
        simd.join(", "),
        mem_kb / 1024.0 / 1024.0,
        gpu.unwrap_or_else(|| "none".into()),
        os_name(),
        git(&["rev-parse", "--short", "HEAD"]),
        if git(&["status", "--porcelain"]).is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        },
        git(&["log", "-1", "--format=%cd", "--date=short"]),
    ))
}

fn os_name() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}
