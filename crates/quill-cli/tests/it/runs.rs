//! `quill runs` and `quill plot` on a directory with a finished run, a killed one, a
//! running one (its lock held) and a directory that is not a run; and the TensorBoard
//! event file a run writes, or not with `--no-tensorboard`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use common::{TINY_MODEL, error_line, quill, stdout};

fn train(dir: &Path, out: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", "--data", "corpus.txt", "--out", out];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(common::TINY_SCHEDULE);
    args.extend_from_slice(extra);
    stdout(&quill(&args, dir))
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let verse =
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n";
    fs::write(dir.path().join("corpus.txt"), verse.repeat(50)).unwrap();
    fs::create_dir(dir.path().join("runs")).unwrap();
    dir
}

#[test]
fn runs_shows_finished_killed_and_running_runs_and_skips_the_rest() {
    let dir = setup();
    let root = dir.path();
    train(root, "runs/finished", &["--max-iters", "6"]);
    train(root, "runs/faster", &["--max-iters", "6", "--lr", "3e-3"]);
    // Killed once its first evaluations are on disk.
    let mut args = vec!["train", "--data", "corpus.txt", "--out", "runs/killed"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&[
        "--max-iters",
        "1000000",
        "--eval-interval",
        "3",
        "--eval-iters",
        "1",
        "--sample-tokens",
        "0",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(&args)
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while fs::read_to_string(root.join("runs/killed/metrics.jsonl"))
        .map_or(0, |m| m.lines().count())
        < 2
    {
        assert!(Instant::now() < deadline, "the run never evaluated");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A copy of a finished run whose lock a trainer (this test) holds.
    let running = root.join("runs/running");
    fs::create_dir(&running).unwrap();
    for entry in ["metrics.jsonl", "steps.jsonl", ".quill-run.json"] {
        fs::copy(root.join("runs/finished").join(entry), running.join(entry)).unwrap();
    }
    copy_dir(&root.join("runs/finished/last"), &running.join("last"));
    let lock = fs::File::create(running.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    fs::create_dir(root.join("runs/notes")).unwrap();
    fs::write(root.join("runs/notes/todo.txt"), "not a run").unwrap();

    let out = quill(&["runs", "--json"], root);
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("runs/notes: not a run directory, skipped"),
        "{stderr}"
    );
    let by_name = |name: &str| {
        runs.as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"].as_str().unwrap().ends_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {runs}"))
            .clone()
    };
    assert_eq!(runs.as_array().unwrap().len(), 4, "{runs}");
    let finished = by_name("finished");
    assert_eq!(finished["state"], "finished");
    assert_eq!(
        (finished["steps"].as_u64(), finished["max_iters"].as_u64()),
        (Some(6), Some(6))
    );
    // The tiny model is no preset's model.
    assert_eq!(finished["preset"], "custom");
    let killed = by_name("killed");
    assert_eq!(killed["state"], "stopped");
    assert!(killed["steps"].as_u64().unwrap() >= 3, "{killed}");
    assert_eq!(by_name("running")["state"], "running");
    // The best val loss is the lowest of metrics.jsonl, and the rows are sorted by it.
    let metrics = fs::read_to_string(root.join("runs/finished/metrics.jsonl")).unwrap();
    let best = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"]
                .as_f64()
                .unwrap()
        })
        .fold(f64::INFINITY, f64::min);
    assert!((finished["best_val_loss"][0].as_f64().unwrap() - best).abs() < 1e-6);
    let bests: Vec<f64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["best_val_loss"][0].as_f64().unwrap())
        .collect();
    assert!(bests.windows(2).all(|w| w[0] <= w[1]), "{bests:?}");

    let table = stdout(&quill(&["runs"], root));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("run") && lines[0].ends_with("state"),
        "{table}"
    );
    for (name, state) in [
        ("finished", "finished"),
        ("killed", "stopped"),
        ("running", "running"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("runs/{name} ")))
            .unwrap();
        assert!(line.ends_with(state), "{line}");
        let cells: Vec<&str> = line.split_whitespace().collect();
        if name != "running" {
            assert_eq!(cells[2..4], ["corpus.txt", "char"], "{line}");
        }
    }
    let diff = stdout(&quill(
        &["runs", "--diff", "runs/finished", "runs/faster"],
        root,
    ));
    assert_eq!(
        diff.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [
            vec!["setting", "runs/faster", "runs/finished"],
            vec!["train.lr", "0.003", "0.001"]
        ],
        "{diff}"
    );
    drop(lock);

    let out = quill(
        &[
            "plot",
            "runs/finished",
            "runs/faster",
            "runs/killed",
            "--out",
            "cmp.png",
        ],
        root,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = fs::read(root.join("cmp.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let line = error_line(&quill(&["plot", "runs/notes", "--out", "x.png"], root));
    assert!(line.contains("not a run directory"), "{line}");
    let line = error_line(&quill(&["plot", "runs/finished", "--out", "x.jpg"], root));
    assert!(line.contains(".png or .svg"), "{line}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_run_writes_an_event_file_unless_told_not_to() {
    let dir = setup();
    train(dir.path(), "runs/with", &["--max-iters", "3"]);
    train(
        dir.path(),
        "runs/without",
        &["--max-iters", "3", "--no-tensorboard"],
    );
    let events = |run: &str| -> Vec<String> {
        fs::read_dir(dir.path().join(run))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tfevents"))
            .collect()
    };
    let with = events("runs/with");
    assert_eq!(with.len(), 1, "{with:?}");
    assert!(with[0].starts_with("events.out.tfevents.") && with[0].ends_with(".quill"));
    assert!(events("runs/without").is_empty());
    // The file holds the configuration, 3 steps of 4 scalars, 2 evaluations, 2 samples.
    let bytes = fs::read(dir.path().join("runs/with").join(&with[0])).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(text.matches("train/loss").count(), 3);
    assert_eq!(text.matches("eval/val_loss").count(), 2);
    assert_eq!(text.matches("eval/sample").count(), 2);
    assert_eq!(text.matches("brain.Event:2").count(), 1);
    assert!(text.contains("n_layer = 1"));
}
