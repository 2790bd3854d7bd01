//! What the CLI test files share: running `quill` and reading its answer.

#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Tiny Shakespeare, put in place in the checkout as `quill` does when it is missing
/// (copied from `$QUILL_CORPUS` when set, else downloaded; verified, written
/// atomically); offline without it, the test fails with one line saying how to put it
/// there.
pub fn tiny_shakespeare() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let copy = std::env::var_os("QUILL_CORPUS").map(PathBuf::from);
    quill_data::corpus::tiny_shakespeare(&root, copy.as_deref())
        .unwrap_or_else(|e| panic!("{e} (or set QUILL_CORPUS to a copy of it)"))
}

/// A 1-layer, 2-head, 16-wide GPT on blocks of 16, batches of 4: fast on any CPU.
pub const TINY_MODEL: &[&str] = &[
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "16",
    "--batch-size",
    "4",
];

/// A temporary directory holding `corpus.txt`: 4,100 characters of verse in 30
/// distinct characters, enough for the tiny model.
pub fn verse_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let verse =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n";
    std::fs::write(dir.path().join("corpus.txt"), verse.repeat(50)).unwrap();
    dir
}

/// The tiny model's schedule: an evaluation every 3 steps of one batch per split, and
/// an 8-character sample.
pub const TINY_SCHEDULE: &[&str] = &[
    "--eval-interval",
    "3",
    "--eval-iters",
    "1",
    "--final-eval-iters",
    "1",
    "--sample-tokens",
    "8",
];

/// `quill ARGS` in `cwd`.
pub fn quill(args: &[&str], cwd: &Path) -> Output {
    quill_with_env(args, cwd, &[])
}

/// `quill ARGS` in `cwd` with extra environment variables (and without
/// `RUST_BACKTRACE`, which brings Rust's own panic report back).
pub fn quill_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .envs(env.iter().copied())
        .output()
        .expect("quill runs")
}

/// The stdout of a command that must succeed (and print UTF-8).
pub fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one-line `error: …` a failing command must print, without a panic.
pub fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr.lines().last().unwrap().to_string();
    assert!(line.starts_with("error: "), "{stderr}");
    line
}

/// `(iter, loss)` of each step in `dir/run/steps.jsonl`.
pub fn step_losses(dir: &Path, run: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join(run).join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["iter"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// Makes a FIFO at `path` (replacing a file there): what a careless or hostile user
/// may leave where quill expects a file.
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}
