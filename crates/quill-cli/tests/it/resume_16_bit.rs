//! A 16-bit run killed with SIGKILL at many moments and resumed as the README shows
//! (`quill train --resume RUN/last`, no `--dtype`) ends with the weights of the run
//! that was never interrupted, bit for bit.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::{TINY_MODEL, error_line, quill, stdout};

const ITERS: &str = "60";

fn setup() -> tempfile::TempDir {
    common::verse_dir()
}

/// `quill train` of the tiny model for `ITERS` steps into `out`, checkpointing every
/// second step.
fn fresh_args<'a>(out: &'a str, dtype: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data",
        "corpus.txt",
        "--out",
        out,
        "--dtype",
        dtype,
    ];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&[
        "--max-iters",
        ITERS,
        "--eval-interval",
        "2",
        "--eval-iters",
        "1",
        "--final-eval-iters",
        "1",
        "--sample-tokens",
        "5",
    ]);
    args
}

/// The lines of `steps.jsonl` in `run` (0 while there is none).
fn steps(run: &Path) -> usize {
    fs::read_to_string(run.join("steps.jsonl")).map_or(0, |t| t.lines().count())
}

/// Runs `args` and kills it with SIGKILL once `run` has recorded `after` more steps
/// (or it finished first); true when it finished by itself.
fn run_until_killed(args: &[&str], cwd: &Path, run: &Path, after: usize) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = steps(run);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "quill {args:?} failed");
            return true;
        }
        if steps(run) >= start + after || Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The bytes of every tensor in `file` (a checkpoint's safetensors), by name.
fn tensors(file: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = fs::read(file).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<_> = (file.tensors().into_iter())
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    all.sort();
    all
}

#[test]
fn killed_16_bit_runs_resume_in_their_float_type_bit_for_bit() {
    for dtype in ["bf16", "f16"] {
        let dir = setup();
        stdout(&quill(&fresh_args("whole", dtype), dir.path()));
        let run = dir.path().join("cut");
        // The first life: killed after a few steps (a checkpoint exists from step 2 on).
        let mut finished = run_until_killed(&fresh_args("cut", dtype), dir.path(), &run, 5);
        let resume = ["train", "--resume", "cut/last", "--data", "corpus.txt"];
        let mut kills = u32::from(!finished);
        // Each later life is killed a different number of steps in.
        for after in [3, 7, 4, 9, 2, 6, 5, 8].iter().cycle() {
            if finished {
                break;
            }
            finished = run_until_killed(&resume, dir.path(), &run, *after);
            kills += u32::from(!finished);
            assert!(kills < 100, "the run never finished");
        }
        assert!(kills >= 2, "{dtype}: killed only {kills} times");
        for file in ["model.safetensors", "optimizer.safetensors"] {
            assert!(
                tensors(&run.join("last").join(file))
                    == tensors(&dir.path().join("whole/last").join(file)),
                "{dtype}: {file} differs from the uninterrupted run's after {kills} kills"
            );
        }
        // Kills during checkpoint swaps leave nothing behind once the run resumed.
        let mut names: Vec<String> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.contains("tfevents"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ".lock",
                ".quill-run.json",
                "best",
                "last",
                "loss.png",
                "loss.svg",
                "metrics.jsonl",
                "steps.jsonl"
            ],
            "{dtype}"
        );
        let state = fs::read_to_string(run.join("last/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["dtype"], dtype);

        // A --dtype that disagrees with the checkpoint's is an error naming both.
        let mut args = resume.to_vec();
        args.extend_from_slice(&["--dtype", "f32", "--max-iters", "70"]);
        assert_eq!(
            error_line(&quill(&args, dir.path())),
            format!(
                "error: --dtype f32 differs from the {dtype} that cut/last trained in: a resumed run continues in its own float type (leave --dtype out), or start a new run with --init-from"
            )
        );
    }
}
