//! `cargo xtask`: project automation.
//!
//! - `cargo xtask data [--from FILE]`: fetch (or copy from FILE) tiny Shakespeare to
//!   `data/tinyshakespeare/input.txt` and verify its sha256 (through `quill data`).
//! - `cargo xtask ci`: everything CI checks: rustfmt, clippy (warnings are errors) with
//!   the default and with all backends (CUDA included), the tests with WGPU (they need a
//!   Vulkan driver: Mesa's `mesa-vulkan-drivers` on Debian), the public-step example,
//!   the docs, and that the slim library builds leave the heavy dependencies out.
//! - `cargo xtask bench`: the standard benchmark matrix for this machine, written to
//!   `BENCHMARKS.md` (see [`bench`](mod@bench)).
//! - `cargo xtask bench-tokenizer [--mb N] [--bpe VOCAB] [--train]`: tokenizer
//!   throughput and memory beside tiktoken (see [`tokenizer_bench`]).
//! - `cargo xtask bench-gpt2 [--tokens N] [--pairs P]`: sampling a GPT-2-124M-shaped
//!   model beside transformers, and the memory of finetuning it (see [`gpt2_bench`]).
//! - `cargo xtask bench-parallel [--pairs P] [--iters N]`: the cost of data parallelism
//!   with real processes over localhost (see [`parallel_bench`]).
//! - `cargo xtask bench-to-loss [--target LOSS] [--seeds N] [--only NAME,...]`: time to
//!   a validation loss, option by option, beside PyTorch (see [`to_loss_bench`]).
//! - `cargo xtask bench-serve [--tokens N] [--gpt2-tokens N]`: `quill serve` under 1, 4
//!   and 16 concurrent streaming clients (see [`serve_bench`]).

mod bench;
mod gpt2_bench;
mod parallel_bench;
mod serve_bench;
mod to_loss_bench;
mod tokenizer_bench;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const CORPUS: &str = "data/tinyshakespeare/input.txt";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).context("cd to the workspace root")?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["data"] => data(None),
        ["data", "--from", file] => data(Some(PathBuf::from(file))),
        ["ci"] => ci(),
        ["bench", rest @ ..] => bench::run(rest),
        ["bench-tokenizer", rest @ ..] => tokenizer_bench::run(rest),
        ["bench-gpt2", rest @ ..] => gpt2_bench::run(rest),
        ["bench-parallel", rest @ ..] => parallel_bench::run(rest),
        ["bench-to-loss", rest @ ..] => to_loss_bench::run(rest),
        ["bench-serve", rest @ ..] => serve_bench::run(rest),
        _ => bail!(
            "usage: cargo xtask data [--from FILE] | cargo xtask ci | cargo xtask bench [--iters N] [--quick] | cargo xtask bench-tokenizer [--mb N] [--bpe VOCAB] [--train] | cargo xtask bench-gpt2 [--tokens N] [--pairs P] | cargo xtask bench-parallel [--pairs P] [--iters N] | cargo xtask bench-to-loss [--target LOSS] [--seeds N] [--only NAME,...] | cargo xtask bench-serve [--tokens N] [--gpt2-tokens N]"
        ),
    }
}

/// Runs `command` (echoed to stderr first) to its end; its stdout, or an error with its
/// stderr when it fails.
pub(crate) fn stdout_of(command: &mut Command) -> Result<Vec<u8>> {
    eprintln!("$ {command:?}");
    let out = command
        .output()
        .with_context(|| format!("run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// `PROGRAM ARGS` under `/usr/bin/time` (its report written into `dir`): stdout, peak
/// RSS (MiB) and wall seconds.
pub(crate) fn timed(program: &str, args: &[&str], dir: &Path) -> Result<(String, f64, f64)> {
    std::fs::create_dir_all(dir)?;
    let stats = dir.join("time.txt");
    let stdout = stdout_of(
        Command::new("/usr/bin/time")
            .args(["-f", "%M %e", "-o"])
            .arg(&stats)
            .arg(program)
            .args(args),
    )?;
    let stats = std::fs::read_to_string(&stats)?;
    let mut fields = stats.split_whitespace();
    let rss_kb: f64 = fields.next().context("rss")?.parse()?;
    let wall: f64 = fields.next().context("wall")?.parse()?;
    Ok((String::from_utf8(stdout)?, rss_kb / 1024.0, wall))
}

pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().copied())
        .status()
        .context("run cargo")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Puts the corpus in place; `quill data` then verifies the checksum (and downloads
/// it when it is still missing).
fn data(from: Option<PathBuf>) -> Result<()> {
    if let Some(from) = &from {
        std::fs::create_dir_all(Path::new(CORPUS).parent().unwrap())?;
        std::fs::copy(from, CORPUS).with_context(|| format!("copy {}", from.display()))?;
    }
    cargo(&["run", "--release", "--bin", "quill", "--", "data"]).inspect_err(|_| {
        if from.is_some() {
            let _ = std::fs::remove_file(CORPUS);
        }
    })
}

/// The GPU features CI compiles: WGPU (tested for real on a software Vulkan adapter)
/// and CUDA (compiled only: CI has no GPU).
const WGPU: &str = "quill-cli/wgpu";
const ALL_BACKENDS: &str = "quill-cli/wgpu,quill-cli/cuda";

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    // clippy and doc share one check build of the dependencies (same profile). Lint the
    // default build and the build with every backend (which compiles the CUDA feature).
    let clippy = ["clippy", "--workspace", "--all-targets", "--release"];
    cargo(&[&clippy[..], &["--", "-D", "warnings"]].concat())?;
    cargo(
        &[
            &clippy[..],
            &["--features", ALL_BACKENDS, "--", "-D", "warnings"],
        ]
        .concat(),
    )?;
    // The tests include backend parity on WGPU (Mesa's lavapipe in CI). They build the
    // examples too; two of them are run below from that build.
    cargo(&["test", "--release", "--workspace", "--features", WGPU])?;
    examples()?;
    cargo_with_env(
        &["doc", "--release", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    slim_builds()
}

/// Runs two examples as `cargo test` built them: the public-step training loop (which
/// `slim_builds` also compiles from the training core alone: no plotting, no async
/// runtime, no collective) and the lecture's matmul-gradient check, which must print
/// `True` for both of its checks.
fn examples() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let examples = target.join("release/examples");
    let run = |name: &str| -> Result<String> {
        println!("$ target/release/examples/{name}");
        let out = stdout_of(&mut Command::new(examples.join(name)))?;
        let text = String::from_utf8_lossy(&out).into_owned();
        print!("{text}");
        Ok(text)
    };
    run("custom_loop")?;
    let checks = run("matmul_grad")?;
    let verdicts: Vec<&str> = checks.lines().filter(|l| l.contains(": ")).collect();
    if verdicts.len() != 2 || !verdicts.iter().all(|l| l.ends_with(": True")) {
        bail!("matmul_grad: expected two checks ending `: True`, got:\n{checks}");
    }
    Ok(())
}

/// `quill-model` without `fused-cpu` has no Flex, gemm or rayon, and no tokenizer
/// libraries (it uses `quill-data` without `subword`); `quill-data` without `download`
/// has no HTTP client; the training core has no plotting library, async runtime or
/// collective engine. Each of them also compiles that way (quill-train with its examples).
fn slim_builds() -> Result<()> {
    let checks = [
        (
            "quill-train",
            &["plotters", "image", "dejavu", "tokio", "burn-collective"][..],
        ),
        (
            "quill-model",
            &["burn-flex", "gemm", "rayon", "tokenizers", "bpe"][..],
        ),
        ("quill-data", &["ureq"][..]),
    ];
    for (package, absent) in checks {
        let args = [
            "tree",
            "-p",
            package,
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ];
        let out = stdout_of(Command::new(env!("CARGO")).args(args))?;
        let tree = String::from_utf8_lossy(&out);
        let found: Vec<&str> = tree
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| absent.contains(name))
            .collect();
        if !found.is_empty() {
            bail!("{package} --no-default-features depends on {found:?}");
        }
        // And it builds so: code the default features gate must stay behind them. The
        // training core with its examples: custom_loop builds from it alone.
        let args = ["check", "--release", "-p", package, "--no-default-features"];
        let examples = (package == "quill-train").then_some("--examples");
        cargo(&[&args[..], examples.as_slice()].concat())?;
    }
    Ok(())
}
