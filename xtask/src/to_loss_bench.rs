//! `cargo xtask bench-to-loss [--target LOSS] [--seeds N] [--only NAME,...]`: time to a
//! validation loss on the `cpu` preset's model, the ablation of each option of the
//! fast recipe, the `cpu-fast` preset, and PyTorch nanoGPT's `cpu` config beside them.
//!
//! Every row is `quill bench --to-loss LOSS --json` (or `bench/reference.py --to-loss`,
//! when `$PYTHON`, default `python3`, can `import torch`) for seeds 1337, 1338, … with
//! evaluations every 50 steps on the same fixed windows of the val split. Runs one after
//! the other on all cores; the machine should be otherwise idle. Prints a Markdown table
//! per variant and the mean over seeds; the JSON of every run goes to
//! `target/bench/to-loss.jsonl`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::CORPUS;
use crate::bench::json_of;

/// A variant: its name, the preset it starts from and the settings (TOML) it changes.
struct Variant {
    name: &'static str,
    preset: &'static str,
    toml: &'static str,
}

const VARIANTS: &[Variant] = &[
    Variant {
        name: "cpu (nanoGPT recipe)",
        preset: "cpu",
        toml: "",
    },
    Variant {
        name: "+ muon",
        preset: "cpu",
        toml: "optimizer = \"muon\"",
    },
    Variant {
        name: "+ rotary",
        preset: "cpu",
        toml: "position = \"rotary\"",
    },
    Variant {
        name: "+ relu2",
        preset: "cpu",
        toml: "activation = \"relu2\"",
    },
    Variant {
        name: "+ rmsnorm",
        preset: "cpu",
        toml: "norm = \"rms\"",
    },
    Variant {
        name: "+ zero-init proj",
        preset: "cpu",
        toml: "zero_init_proj = true",
    },
    Variant {
        name: "+ wsd schedule",
        preset: "cpu",
        toml: "schedule = \"wsd\"\nmax_iters = 1500\ncooldown_iters = 600",
    },
    Variant {
        name: "cpu-fast",
        preset: "cpu-fast",
        toml: "",
    },
];

/// The PyTorch row's name.
const PYTORCH: &str = "PyTorch nanoGPT cpu";

pub fn run(args: &[&str]) -> Result<()> {
    let (mut target, mut seeds, mut only) = (1.95f64, 3u64, None::<Vec<String>>);
    let mut rest = args.iter();
    while let Some(&flag) = rest.next() {
        let value = rest.next().copied().unwrap_or_default();
        match flag {
            "--target" => target = value.parse()?,
            "--seeds" => seeds = value.parse()?,
            "--only" => only = Some(value.split(',').map(str::to_string).collect()),
            _ => bail!(
                "usage: cargo xtask bench-to-loss [--target LOSS] [--seeds N] [--only NAME,...]"
            ),
        }
    }
    crate::cargo(&["build", "--release", "--bin", "quill"])?;
    std::fs::create_dir_all("target/bench")?;
    let mut log = std::fs::File::create("target/bench/to-loss.jsonl")?;
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut table: Vec<(String, Vec<Value>)> = Vec::new();
    for variant in VARIANTS.iter().filter(|v| wanted(v.name)) {
        let mut runs = Vec::new();
        for seed in (0..seeds).map(|i| 1337 + i) {
            let report = quill(variant, seed, target)?;
            writeln!(
                log,
                "{}",
                serde_json::json!({"variant": variant.name, "run": report})
            )?;
            eprintln!("{}", line(variant.name, &report));
            if variant.preset == "cpu" && variant.toml.is_empty() && wanted(PYTORCH) {
                let torch = pytorch(&python, &report, target)?;
                writeln!(
                    log,
                    "{}",
                    serde_json::json!({"variant": PYTORCH, "run": torch})
                )?;
                eprintln!("{}", line(PYTORCH, &torch));
                push(&mut table, PYTORCH, torch);
            }
            runs.push(report);
        }
        table.push((variant.name.to_string(), runs));
    }
    println!("{}", render(&table, target));
    Ok(())
}

fn push(table: &mut Vec<(String, Vec<Value>)>, name: &str, run: Value) {
    match table.iter_mut().find(|(n, _)| n == name) {
        Some((_, runs)) => runs.push(run),
        None => table.push((name.to_string(), vec![run])),
    }
}

/// `quill bench --to-loss` of `variant` with `seed`.
fn quill(variant: &Variant, seed: u64, target: f64) -> Result<Value> {
    let mut command = Command::new("target/release/quill");
    command
        .args([
            "bench",
            "--json",
            "--preset",
            variant.preset,
            "--device",
            "cpu",
        ])
        .args(["--data", CORPUS, "--seed", &seed.to_string()])
        .args(["--to-loss", &target.to_string()]);
    if !variant.toml.is_empty() {
        let file = Path::new("target/bench").join(format!("to-loss-{seed}.toml"));
        std::fs::write(&file, variant.toml)?;
        command.arg("--config").arg(file);
    }
    json_of(&mut command)
}

/// `bench/reference.py --to-loss` on the settings quill's `report` ran with.
fn pytorch(python: &str, report: &Value, target: f64) -> Result<Value> {
    let config = Path::new("target/bench/to-loss-config.json");
    std::fs::write(config, report["config"].to_string())?;
    json_of(
        Command::new(python)
            .arg("bench/reference.py")
            .arg("--config")
            .arg(config)
            .args([
                "--data",
                CORPUS,
                "--threads",
                &report["num_threads"].to_string(),
            ])
            .args(["--to-loss", &target.to_string()]),
    )
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

fn line(name: &str, run: &Value) -> String {
    format!(
        "{name}: seed {}, {} steps, {:.1} s training, {:.1} s wall, reached {}",
        run["config"]["seed"],
        run["steps"],
        num(run, "train_s"),
        num(run, "wall_s"),
        run["reached"]
    )
}

fn render(table: &[(String, Vec<Value>)], target: f64) -> String {
    let mut md = format!(
        "| variant | steps to val ≤ {target} (per seed) | training s (per seed) | mean steps | mean training s | mean wall s |\n|---|---|---|---|---|---|\n"
    );
    for (name, runs) in table {
        let list = |key: &str, digits: usize| {
            let cell = |r: &Value| match r["reached"].as_bool() {
                Some(true) => format!("{:.*}", digits, num(r, key)),
                _ => format!("not reached ({:.*})", digits, num(r, key)),
            };
            runs.iter().map(cell).collect::<Vec<_>>().join(" / ")
        };
        let mean = |key: &str| runs.iter().map(|r| num(r, key)).sum::<f64>() / runs.len() as f64;
        md += &format!(
            "| {name} | {} | {} | {:.0} | {:.1} | {:.1} |\n",
            list("steps", 0),
            list("train_s", 1),
            mean("steps"),
            mean("train_s"),
            mean("wall_s")
        );
    }
    md
}
