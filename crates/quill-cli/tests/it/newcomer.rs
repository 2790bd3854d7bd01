//! What a new user meets first: runs that never replace each other, Ctrl-C, a run
//! directory given where a checkpoint is wanted, command lines clap rejects, and
//! greedy text kept out of its loops.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

use common::{TINY_MODEL, error_line, quill, stdout};

fn setup() -> tempfile::TempDir {
    common::verse_dir()
}

/// `quill train` of the tiny model for 3 steps; a resumed run keeps its model, and
/// `extra` may name its own `--max-iters`.
fn train(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train"];
    if !extra.contains(&"--resume") {
        args.extend_from_slice(TINY_MODEL);
    }
    if !extra.contains(&"--data") {
        args.extend_from_slice(&["--data", "corpus.txt"]);
    }
    args.extend_from_slice(common::TINY_SCHEDULE);
    if !extra.contains(&"--max-iters") {
        args.extend_from_slice(&["--max-iters", "3"]);
    }
    args.extend_from_slice(extra);
    quill(&args, dir)
}

fn best_val(dir: &Path) -> String {
    fs::read_to_string(dir.join("metrics.jsonl")).unwrap()
}

#[test]
fn a_new_run_never_replaces_an_earlier_one() {
    let dir = setup();
    let first = train(dir.path(), &[]);
    assert!(first.status.success(), "{}", error_line(&first));
    assert!(
        stdout(&first).starts_with("# run directory: runs/cpu\n"),
        "{}",
        stdout(&first)
    );
    let records = best_val(&dir.path().join("runs/cpu"));

    // The same command again: a directory of its own, said in the first line.
    let dry = stdout(&train(dir.path(), &["--dry-run"]));
    assert!(
        dry.starts_with("# run directory: runs/cpu-2 (runs/cpu holds an earlier run)\n"),
        "{dry}"
    );
    assert!(dry.contains("the run would write to runs/cpu-2"), "{dry}");
    assert!(!dir.path().join("runs/cpu-2").exists());
    for expected in ["runs/cpu-2", "runs/cpu-3"] {
        let out = train(dir.path(), &["--lr", "3e-4"]);
        assert!(out.status.success(), "{}", error_line(&out));
        assert!(
            stdout(&out).starts_with(&format!("# run directory: {expected} (runs/cpu holds")),
            "{}",
            stdout(&out)
        );
        assert!(dir.path().join(expected).join("best").is_dir());
    }
    assert_eq!(best_val(&dir.path().join("runs/cpu")), records);

    // A directory named with --out that holds a run: refused, saying the ways on.
    let refused = train(dir.path(), &["--out", "runs/cpu"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        error_line(&refused).starts_with("error: runs/cpu holds another run (3 steps, best val "),
        "{}",
        error_line(&refused)
    );
    assert!(
        error_line(&refused).ends_with(
            "): --resume runs/cpu/last continues it, --overwrite replaces it, or name another --out (without --out a new run gets a directory of its own)"
        ),
        "{}",
        error_line(&refused)
    );
    assert_eq!(best_val(&dir.path().join("runs/cpu")), records);

    // --overwrite replaces it: the earlier records are gone, this run's are there.
    let replaced = train(
        dir.path(),
        &["--out", "runs/cpu", "--overwrite", "--seed", "9"],
    );
    assert!(replaced.status.success(), "{}", error_line(&replaced));
    assert_ne!(best_val(&dir.path().join("runs/cpu")), records);
    assert_eq!(best_val(&dir.path().join("runs/cpu")).lines().count(), 2);

    // --overwrite never deletes the checkpoint the run starts from.
    let init = train(
        dir.path(),
        &[
            "--out",
            "runs/cpu",
            "--overwrite",
            "--init-from",
            "runs/cpu",
        ],
    );
    assert_eq!(
        error_line(&init),
        "error: --overwrite would delete runs/cpu/best that --init-from reads: name another --out"
    );

    // `quill runs` lists them all, and so does `quill runs runs` (a directory of runs).
    for args in [&["runs"][..], &["runs", "runs"]] {
        let table = stdout(&quill(args, dir.path()));
        for run in ["runs/cpu ", "runs/cpu-2", "runs/cpu-3"] {
            assert!(table.contains(run), "{args:?}: {table}");
        }
    }
}

#[test]
fn a_run_directory_stands_for_its_checkpoint() {
    let dir = setup();
    let out = train(dir.path(), &["--out", "run"]);
    assert!(out.status.success(), "{}", error_line(&out));

    let sample = quill(
        &[
            "sample",
            "--checkpoint",
            "run",
            "--max-new-tokens",
            "5",
            "--seed",
            "1",
        ],
        dir.path(),
    );
    assert!(sample.status.success(), "{}", error_line(&sample));
    assert!(
        String::from_utf8_lossy(&sample.stderr).contains(
            "note: run is a run directory; --checkpoint reads its best/ checkpoint run/best"
        ),
        "{}",
        String::from_utf8_lossy(&sample.stderr)
    );
    let same = quill(
        &[
            "sample",
            "--checkpoint",
            "run/best",
            "--max-new-tokens",
            "5",
            "--seed",
            "1",
        ],
        dir.path(),
    );
    assert_eq!(stdout(&sample), stdout(&same));

    // `--prompt-file -` reads the prompt from standard input.
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(["sample", "--checkpoint", "run/best", "--prompt-file", "-"])
        .args(["--max-new-tokens", "5", "--seed", "1"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"Speak").unwrap();
    let piped = child.wait_with_output().unwrap();
    let short = ["--max-new-tokens", "5", "--seed", "1"];
    let typed = quill(
        &[
            &["sample", "--checkpoint", "run/best", "--prompt", "Speak"][..],
            &short,
        ]
        .concat(),
        dir.path(),
    );
    assert_eq!(stdout(&piped), stdout(&typed));

    // --resume RUN continues its last/, in the same directory.
    let resumed = train(dir.path(), &["--resume", "run", "--max-iters", "6"]);
    assert!(resumed.status.success(), "{}", error_line(&resumed));
    assert!(
        String::from_utf8_lossy(&resumed.stderr)
            .contains("note: run is a run directory; --resume reads its last/ checkpoint run/last"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(stdout(&resumed).starts_with("# run directory: run\n"));
    assert!(stdout(&resumed).contains("done: 6 iterations"));

    // `quill plot` without --out: plot.png, then plot-2.png; nothing replaced.
    for name in ["plot.png", "plot-2.png"] {
        let out = quill(&["plot", "run"], dir.path());
        assert!(out.status.success(), "{}", error_line(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("wrote {name}\n")
        );
        assert!(dir.path().join(name).is_file());
    }

    // By training time (the time-to-target axis) or tokens, on a log scale.
    for (axis, label) in [
        ("time", "training time (s), evaluations left out"),
        ("tokens", "training tokens"),
    ] {
        let out = quill(
            &["plot", "run", "--x", axis, "--log-y", "--out", "t.svg"],
            dir.path(),
        );
        assert!(out.status.success(), "{}", error_line(&out));
        let svg = fs::read_to_string(dir.path().join("t.svg")).unwrap();
        assert!(
            svg.contains(label) && svg.contains("loss (log scale)"),
            "{axis}"
        );
    }

    // The export of a short-context model: a note, max_length, and a model card that
    // says what it trained on.
    let export = quill(
        &[
            "export",
            "--format",
            "hf",
            "--checkpoint",
            "run",
            "--out",
            "hf-out",
        ],
        dir.path(),
    );
    assert!(export.status.success(), "{}", error_line(&export));
    assert!(
        String::from_utf8_lossy(&export.stderr).contains(
            "note: the model's context is 16 tokens: transformers stops with an IndexError past them"
        ),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let generation: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("hf-out/generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(generation["max_length"], 16);
    let card = fs::read_to_string(dir.path().join("hf-out/README.md")).unwrap();
    assert!(
        card.contains("| trained on | `corpus.txt`, char tokenizer |"),
        "{card}"
    );
    assert!(
        card.contains("| context | 16 tokens (`n_positions`) |"),
        "{card}"
    );
    assert!(card.contains("max_length=16"), "{card}");

    // A Hugging Face directory: import it first.
    let hf = dir.path().join("hf");
    fs::create_dir(&hf).unwrap();
    fs::write(hf.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    fs::write(hf.join("model.safetensors"), b"").unwrap();
    let refused = quill(&["sample", "--checkpoint", "hf"], dir.path());
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        error_line(&refused),
        "error: hf is a Hugging Face model directory, not a quill checkpoint: import it first: quill import gpt2 --from hf --out ckpt/NAME"
    );
}

#[test]
fn missing_arguments_are_named_with_the_usage_line() {
    let dir = setup();
    for (command, missing, usage) in [
        (
            vec!["sample"],
            "--checkpoint <DIR>",
            "quill sample --checkpoint <DIR>",
        ),
        (
            vec!["serve"],
            "--checkpoint <DIR>",
            "quill serve --checkpoint <DIR>",
        ),
        (
            vec!["eval"],
            "--checkpoint <DIR>",
            "quill eval --checkpoint <DIR>",
        ),
        (vec!["plot"], "<RUN>...", "quill plot <RUN>..."),
    ] {
        let out = quill(&command, dir.path());
        assert_eq!(out.status.code(), Some(2));
        let line = error_line(&out);
        assert!(
            line.starts_with(&format!(
                "error: the following required arguments were not provided: {missing}"
            )) && line.contains(&format!("usage: {usage}"))
                && line.ends_with("; see --help)"),
            "{command:?}: {line}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    }
}

/// Ctrl-C saves a checkpoint, redraws the loss picture with the steps taken, and exits
/// with 130.
#[test]
fn ctrl_c_saves_redraws_and_exits_130() {
    let dir = setup();
    let mut args = vec!["train", "--out", "run"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&[
        "--data",
        "corpus.txt",
        "--eval-interval",
        "100000",
        "--eval-iters",
        "1",
        "--max-iters",
        "1000000",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some steps are recorded past the first evaluation's picture.
    let steps = dir.path().join("run/loss.svg");
    let start = Instant::now();
    while !steps.exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = fs::read_to_string(&steps).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("run/last/state.json")).unwrap())
            .unwrap();
    let iter = state["iter"].as_u64().unwrap();
    assert!(iter > 0, "{state}");
    let after = fs::read_to_string(&steps).unwrap();
    assert_ne!(before, after, "loss.svg was not redrawn");
    // The title counts the tokens the run saw: 4 rows × 16 tokens a step.
    let seen = iter * 64;
    let shown = if seen >= 1000 {
        format!("{:.1} k tokens seen", seen as f64 / 1000.0)
    } else {
        format!("{seen} tokens seen")
    };
    assert!(after.contains(&shown), "{shown} not in the title");
}

/// Offline, the first command says both ways out; `quill data get --from FILE` puts a
/// copy in place (checked), after which the same command trains.
#[test]
fn offline_the_corpus_is_placed_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let offline = [
        ("ALL_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("https_proxy", "http://127.0.0.1:9"),
    ];
    let mut args = vec!["train", "--max-iters", "1", "--eval-iters", "1"];
    args.extend_from_slice(&["--final-eval-iters", "1", "--sample-tokens", "5"]);
    let out = common::quill_with_env(&args, dir.path(), &offline);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.starts_with(
            "error: tiny Shakespeare is not at data/tinyshakespeare/input.txt and could not be downloaded ("
        ) && line.ends_with(
            "): with a copy of it, `quill data get --from FILE` puts it there; or train on your own text with `--data FILE`"
        ),
        "{line}"
    );
    assert!(!dir.path().join("data/tinyshakespeare/input.txt").exists());

    // A file that is not tiny Shakespeare is refused, and nothing lands.
    fs::write(dir.path().join("other.txt"), "to be or not to be\n").unwrap();
    let wrong = quill(&["data", "get", "--from", "other.txt"], dir.path());
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        error_line(&wrong).starts_with("error: checksum mismatch for other.txt"),
        "{}",
        error_line(&wrong)
    );
    assert!(!dir.path().join("data/tinyshakespeare").exists());

    let copy = common::tiny_shakespeare();
    let copy = copy.to_str().unwrap();
    let placed = quill(&["data", "get", "--from", copy], dir.path());
    assert!(placed.status.success(), "{}", error_line(&placed));
    assert_eq!(
        stdout(&placed),
        "tiny Shakespeare is in place: data/tinyshakespeare/input.txt\n"
    );
    assert_eq!(
        fs::read(dir.path().join("data/tinyshakespeare/input.txt")).unwrap(),
        fs::read(copy).unwrap()
    );
    let shown = common::quill_with_env(&["data"], dir.path(), &offline);
    assert!(shown.status.success(), "{}", error_line(&shown));
    assert!(stdout(&shown).starts_with("length of dataset in characters: 1115394\n"));
}

/// Piped output (not a terminal) gets nanoGPT's step line every --log-interval steps;
/// every run and --dry-run say how long the run takes; the last line's times say what
/// they count.
#[test]
fn piped_runs_print_steps_and_every_run_its_time() {
    let dir = setup();
    let out = train(
        dir.path(),
        &["--out", "run", "--max-iters", "12", "--log-interval", "4"],
    );
    assert!(out.status.success(), "{}", error_line(&out));
    let text = stdout(&out);
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("step ") && l.contains(": loss "))
        .collect();
    assert_eq!(steps.len(), 3, "{text}");
    for (line, n) in steps.iter().zip([4, 8, 12]) {
        assert!(line.starts_with(&format!("step {n}: loss ")), "{line}");
        assert!(
            line.contains(" ms, ") && line.ends_with(" GFLOP/s"),
            "{line}"
        );
    }
    let time = text
        .lines()
        .find(|l| l.starts_with("# time: about "))
        .unwrap();
    // Measured after steps 1–3, over steps 4 and 5: 7 steps left of 12.
    assert!(
        time.ends_with(" for the 7 steps left (evaluations extra)"),
        "{time}"
    );
    assert!(
        text.contains("evaluated in ")
            && text.contains("s in all (loading, the last evaluation and sampling included)"),
        "{text}"
    );

    let quiet = train(dir.path(), &["--max-iters", "12", "--log-interval", "0"]);
    assert!(!stdout(&quiet).contains(": loss "), "{}", stdout(&quiet));

    let dry = stdout(&train(dir.path(), &["--dry-run", "--max-iters", "40"]));
    let time = dry
        .lines()
        .find(|l| l.starts_with("# time: about "))
        .unwrap();
    assert!(
        time.ends_with(" for the 40 steps left (evaluations extra)"),
        "{dry}"
    );
}

/// `quill runs` says what each run trained on, and `--diff` names different data.
#[test]
fn runs_show_and_compare_their_data() {
    let dir = setup();
    let verse = fs::read_to_string(dir.path().join("corpus.txt")).unwrap();
    fs::write(dir.path().join("other.txt"), verse.to_uppercase()).unwrap();
    for data in ["corpus.txt", "other.txt"] {
        let out = train(dir.path(), &["--data", data]);
        assert!(out.status.success(), "{}", error_line(&out));
    }
    let table = stdout(&quill(&["runs"], dir.path()));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header[..4],
        ["run", "preset", "data", "tokenizer"],
        "{table}"
    );
    let diff = stdout(&quill(
        &["runs", "--diff", "runs/cpu", "runs/cpu-2"],
        dir.path(),
    ));
    let rows: Vec<Vec<&str>> = diff
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Columns in the table's order (best val first).
    let data = rows.iter().find(|r| r[0] == "data").expect(&diff);
    let mut named = data[1..].to_vec();
    named.sort();
    assert_eq!(named, ["corpus.txt", "other.txt"], "{diff}");
}

/// The sample of `run` from "a", greedy unless `extra` names a temperature:
/// (stdout, stderr).
fn greedy(dir: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "sample",
        "--checkpoint",
        "run",
        "--prompt",
        "a",
        "--max-new-tokens",
        "60",
    ];
    if !extra.contains(&"--temperature") {
        args.extend_from_slice(&["--temperature", "0"]);
    }
    args.extend_from_slice(extra);
    let out = quill(&args, dir);
    assert!(out.status.success(), "{}", error_line(&out));
    (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn penalties_take_greedy_text_out_of_its_loop_and_verbose_says_where_time_went() {
    let dir = setup();
    let out = train(dir.path(), &["--out", "run", "--max-iters", "20"]);
    assert!(out.status.success(), "{}", error_line(&out));
    let (plain, _) = greedy(dir.path(), &[]);
    // Greedy text of a small model loops: few distinct characters in its 60.
    let distinct = |text: &str| {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort();
        chars.dedup();
        chars.len()
    };
    for flags in [
        &["--repetition-penalty", "1.5"][..],
        &["--frequency-penalty", "1.0"][..],
        &["--presence-penalty", "2", "--frequency-penalty", "-0.5"][..],
    ] {
        let (penalised, _) = greedy(dir.path(), flags);
        assert!(
            distinct(&penalised) > distinct(&plain),
            "{flags:?}: {penalised:?} against {plain:?}"
        );
        // Deterministic: the same flags give the same text.
        assert_eq!(greedy(dir.path(), flags).0, penalised);
    }
    // min-p 1 keeps only the most likely token: greedy text at any temperature.
    let (kept, _) = greedy(dir.path(), &["--min-p", "1", "--temperature", "1.5"]);
    assert_eq!(kept, plain);

    let (text, timings) = greedy(dir.path(), &["--verbose"]);
    assert_eq!(text, plain, "--verbose changes only stderr");
    let lines: Vec<&str> = timings.lines().filter(|l| l.starts_with("# ")).collect();
    let heads: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        heads,
        ["# load", "# prompt", "# decoding", "# total"],
        "{timings}"
    );
    assert!(lines[1].starts_with("# prompt: 1 token in "), "{timings}");
    assert!(
        lines[2].starts_with("# decoding: 59 tokens in "),
        "{timings}"
    );
    assert!(lines[2].ends_with(" tokens/s)"), "{timings}");

    for (flag, value, says) in [
        (
            "--frequency-penalty",
            "3",
            "frequency_penalty must be between -2 and 2",
        ),
        (
            "--presence-penalty",
            "-2.5",
            "presence_penalty must be between -2 and 2",
        ),
        (
            "--repetition-penalty",
            "0",
            "repetition_penalty must be a finite number > 0",
        ),
        ("--min-p", "1.5", "min_p must be in [0, 1]"),
    ] {
        let out = quill(&["sample", "--checkpoint", "run", flag, value], dir.path());
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let line = error_line(&out);
        assert!(line.contains(says), "{flag} {value}: {line}");
    }
}

/// Ctrl-C during an evaluation (a big model's first one takes minutes on a CPU) stops
/// at once; the checkpoint says the evaluation is owed, and the resumed run does it
/// first, training exactly as a run never stopped.
#[test]
fn ctrl_c_during_an_evaluation_stops_it_and_resume_does_it_first() {
    let dir = setup();
    let schedule = ["--data", "corpus.txt", "--eval-interval", "4"];
    let mut args = vec!["train", "--out", "stopped"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&schedule);
    // An evaluation that would take hours.
    args.extend_from_slice(&["--eval-iters", "100000000", "--max-iters", "8"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_quill"))
        .args(&args)
        .current_dir(dir.path())
        .stdout(fs::File::create(dir.path().join("out.txt")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    // SAFETY: kill(2) on our own child's pid, with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    let state: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("stopped/last/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (state["iter"].as_u64(), state["eval_pending"].as_bool()),
        (Some(0), Some(true))
    );
    // Before any step, the long evaluation said what it would take, and the run.
    let out = fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert!(
        out.contains("# evaluating 200000000 batches: about ")
            && out.contains(" h (Ctrl-C stops it and saves the run)\n# time: about "),
        "{out}"
    );
    let metrics = dir.path().join("stopped/metrics.jsonl");
    assert!(!metrics.exists(), "no evaluation recorded");

    let resumed = quill(
        &[
            "train",
            "--resume",
            "stopped",
            "--eval-iters",
            "1",
            "--final-eval-iters",
            "1",
        ],
        dir.path(),
    );
    assert!(resumed.status.success(), "{}", error_line(&resumed));
    let mut args = vec!["train", "--out", "whole"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&schedule);
    args.extend_from_slice(&[
        "--eval-iters",
        "1",
        "--final-eval-iters",
        "1",
        "--max-iters",
        "8",
    ]);
    let whole = quill(&args, dir.path());
    assert!(whole.status.success(), "{}", error_line(&whole));
    let evals = |run: &str| -> Vec<(u64, f64)> {
        best_val(&dir.path().join(run))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["iter"].as_u64().unwrap(), v["val_loss"].as_f64().unwrap())
            })
            .collect()
    };
    assert_eq!(
        evals("stopped").iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 4, 8]
    );
    assert_eq!(evals("stopped"), evals("whole"));
    assert_eq!(
        common::step_losses(dir.path(), "stopped"),
        common::step_losses(dir.path(), "whole")
    );
    // Resuming a finished run says what it does and how to train further.
    let again = quill(&["train", "--resume", "whole"], dir.path());
    assert!(again.status.success(), "{}", error_line(&again));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        said.contains("note: whole/last has taken all 8 steps of its run (max_iters): it is evaluated again; --max-iters N (more than 8) trains it further"),
        "{said}"
    );
}

/// nanoGPT's names of the settings quill names shorter work as flags and file keys.
#[test]
fn nanogpt_setting_names_are_understood() {
    let dir = setup();
    fs::write(dir.path().join("my.toml"), "learning_rate = 2e-3\n").unwrap();
    for args in [
        &[
            "--learning-rate",
            "2e-3",
            "--gradient-accumulation-steps",
            "3",
        ][..],
        &["--config", "my.toml", "--grad-accum", "3"][..],
    ] {
        let mut all = vec!["train", "--dry-run", "--data", "corpus.txt"];
        all.extend_from_slice(TINY_MODEL);
        all.extend_from_slice(args);
        let out = quill(&all, dir.path());
        assert!(out.status.success(), "{args:?}: {}", error_line(&out));
        let text = stdout(&out);
        assert!(
            text.contains("\nlr = 0.002\n") && text.contains("\ngrad_accum = 3\n"),
            "{text}"
        );
    }
    // The former name of --sample-tokens still works.
    let mut all = vec![
        "train",
        "--dry-run",
        "--data",
        "corpus.txt",
        "--sample-chars",
        "7",
    ];
    all.extend_from_slice(TINY_MODEL);
    let out = quill(&all, dir.path());
    assert!(
        stdout(&out).contains("\nsample_tokens = 7\n"),
        "{}",
        error_line(&out)
    );
}
