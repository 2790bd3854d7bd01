//! Subword tokens end to end: `quill data prepare` → `quill train` → `quill sample` /
//! `eval` for each tokenizer, and one-line errors for broken datasets.

use crate::common;

use std::fs;
use std::path::Path;

use common::{TINY_MODEL, error_line, quill, stdout, step_losses};

/// A small corpus with characters that take several GPT-2 tokens (emoji, CJK).
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let verse = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. 🦀 日本\n\n";
    fs::write(dir.path().join("corpus.txt"), verse.repeat(60)).unwrap();
    dir
}

/// The tiny model's schedule here: a higher learning rate, to see the loss fall in 50
/// steps (the model is `common::TINY_MODEL`).
const TINY: &[&str] = &[
    "--max-iters",
    "50",
    "--eval-interval",
    "25",
    "--eval-iters",
    "2",
    "--final-eval-iters",
    "2",
    "--sample-tokens",
    "10",
    "--warmup-iters",
    "5",
    "--lr",
    "1e-2",
];

fn prepare(dir: &Path, tokenizer: &str, out: &str) -> serde_json::Value {
    let json = stdout(&quill(
        &[
            "data",
            "prepare",
            "--data",
            "corpus.txt",
            "--tokenizer",
            tokenizer,
            "--out",
            out,
            "--json",
        ],
        dir,
    ));
    serde_json::from_str(&json).unwrap()
}

#[test]
fn prepare_train_sample_and_eval_with_each_tokenizer() {
    let dir = setup();
    for (tokenizer, vocab_size) in [("char", 33), ("gpt2", 50_257), ("bpe:300", 300)] {
        let data = format!("data/{}", tokenizer.replace(':', ""));
        let report = prepare(dir.path(), tokenizer, &data);
        assert_eq!(report["dataset"]["tokenizer"], tokenizer, "{report}");
        assert_eq!(report["dataset"]["vocab_size"], vocab_size, "{report}");
        let shown = stdout(&quill(&["data", &data], dir.path()));
        assert!(
            shown.contains(&format!("tokenizer: {tokenizer} (vocab_size {vocab_size})")),
            "{shown}"
        );

        let run = format!("run-{}", tokenizer.replace(':', ""));
        let mut args = vec!["train", "--data", &data, "--out", &run];
        args.extend_from_slice(TINY_MODEL);
        args.extend_from_slice(TINY);
        let out = stdout(&quill(&args, dir.path()));
        assert!(out.contains(&format!("tokenizer {tokenizer})")), "{out}");
        let loss_at = |step: &str| -> f64 {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("step {step}: train loss")))
                .unwrap();
            line.split_whitespace()
                .nth(4)
                .unwrap()
                .trim_end_matches(',')
                .parse()
                .unwrap()
        };
        assert!(loss_at("50") < loss_at("0") - 0.3, "{tokenizer}: {out}");

        // Sampling streams valid UTF-8 even where the model cuts a character between
        // tokens (stdout() insists on UTF-8), and continues the prompt.
        let sample = stdout(&quill(
            &[
                "sample",
                "--checkpoint",
                &format!("{run}/best"),
                "--prompt",
                "Speak 🦀",
                "--max-new-tokens",
                "40",
                "--seed",
                "7",
            ],
            dir.path(),
        ));
        assert!(sample.starts_with("Speak 🦀"), "{sample:?}");
        let eval = stdout(&quill(
            &[
                "eval",
                "--checkpoint",
                &format!("{run}/best"),
                "--data",
                &data,
                "--eval-iters",
                "2",
                "--json",
            ],
            dir.path(),
        ));
        let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
        assert!(eval["val_loss"].as_f64().unwrap() > 0.0, "{eval}");
    }
    // A checkpoint's tokenizer must be the data's.
    let err = error_line(&quill(
        &[
            "train",
            "--resume",
            "run-gpt2/last",
            "--data",
            "data/char",
            "--max-iters",
            "60",
        ],
        dir.path(),
    ));
    assert_eq!(
        err,
        "error: the data's tokenizer (char) differs from the checkpoint's (gpt2)"
    );
    let err = error_line(&quill(
        &[
            "eval",
            "--checkpoint",
            "run-bpe300/best",
            "--data",
            "data/gpt2",
        ],
        dir.path(),
    ));
    assert_eq!(
        err,
        "error: the data's tokenizer (gpt2) differs from the checkpoint's (bpe:300)"
    );
    // The checkpoint carries its tokenizer: bpe:300's ranks are inside it.
    assert!(dir.path().join("run-bpe300/best/bpe.tiktoken").is_file());
    assert!(dir.path().join("run-gpt2/best/tokenizer.json").is_file());
}

#[test]
fn broken_datasets_and_inputs_are_one_line_errors() {
    let dir = setup();
    prepare(dir.path(), "gpt2", "data/g");
    let train = dir.path().join("data/g/train.bin");
    let bytes = fs::read(&train).unwrap();
    let train_on = |data: &str| {
        let mut args = vec!["train", "--data", data, "--out", "run"];
        args.extend_from_slice(TINY_MODEL);
        args.extend_from_slice(TINY);
        error_line(&quill(&args, dir.path()))
    };

    fs::write(&train, &bytes[..bytes.len() - 3]).unwrap();
    let err = train_on("data/g");
    assert!(err.contains("train.bin: the header says"), "{err}");
    fs::write(&train, [&[0u8, 0, 0, 0][..], &bytes[4..]].concat()).unwrap();
    let err = train_on("data/g");
    assert!(
        err.contains("train.bin: magic number 0 is not llm.c's 20240520"),
        "{err}"
    );
    fs::remove_file(dir.path().join("data/g/meta.json")).unwrap();
    let err = train_on("data/g");
    assert!(
        err.contains("make a dataset with `quill data prepare`"),
        "{err}"
    );

    fs::write(dir.path().join("bad.txt"), b"fine\n\xc3\x28 not fine").unwrap();
    let err = error_line(&quill(
        &[
            "data",
            "prepare",
            "--data",
            "bad.txt",
            "--tokenizer",
            "gpt2",
            "--out",
            "data/b",
        ],
        dir.path(),
    ));
    assert_eq!(
        err,
        "error: bad.txt: not valid UTF-8 at byte offset 5 (--lossy replaces invalid sequences and counts them)"
    );
    let err = error_line(&quill(
        &[
            "data",
            "prepare",
            "--data",
            "corpus.txt",
            "--tokenizer",
            "bpe",
            "--out",
            "data/x",
        ],
        dir.path(),
    ));
    assert!(err.contains("unknown tokenizer \"bpe\""), "{err}");
    assert!(!dir.path().join("data/b").exists() && !dir.path().join("data/x").exists());
}

/// Training on token files resumes exactly: 4 steps, then 4 more from the checkpoint,
/// take the same losses as 8 steps in one go (the Flex backend is deterministic).
#[test]
fn a_run_on_token_files_resumes_exactly() {
    let dir = setup();
    prepare(dir.path(), "gpt2", "data/g");
    let train = |args: &[&str]| {
        let mut all = vec!["train", "--data", "data/g", "--device", "flex"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--eval-interval", "4", "--eval-iters", "1"]);
        all.extend_from_slice(&["--final-eval-iters", "1", "--sample-tokens", "0"]);
        stdout(&quill(&all, dir.path()))
    };
    let mut straight = vec!["--out", "straight", "--max-iters", "8"];
    straight.extend_from_slice(TINY_MODEL);
    train(&straight);
    let mut split = vec!["--out", "split", "--max-iters", "4"];
    split.extend_from_slice(TINY_MODEL);
    train(&split);
    train(&["--resume", "split/last", "--max-iters", "8"]);
    let losses = |run: &str| step_losses(dir.path(), run);
    let expected = losses("straight");
    assert_eq!(expected.len(), 8);
    assert_eq!(losses("split"), expected);
}

/// `--preset shakespeare-gpt2` prepares nanoGPT's data/shakespeare from tiny
/// Shakespeare on first use; a dry run tokenizes in memory and writes nothing.
#[test]
fn the_shakespeare_gpt2_preset_prepares_its_data_once() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = common::tiny_shakespeare();
    fs::create_dir_all(dir.path().join("data/tinyshakespeare")).unwrap();
    fs::copy(&corpus, dir.path().join("data/tinyshakespeare/input.txt")).unwrap();
    let mut args = vec!["train", "--preset", "shakespeare-gpt2", "--out", "run"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&[
        "--max-iters",
        "2",
        "--eval-interval",
        "2",
        "--eval-iters",
        "1",
    ]);
    args.extend_from_slice(&["--final-eval-iters", "1", "--sample-tokens", "0"]);

    let dry = stdout(&quill(&[&args[..], &["--dry-run"]].concat(), dir.path()));
    assert!(dry.contains("tokenizer gpt2), vocab_size 50257"), "{dry}");
    assert!(!dir.path().join("data/shakespeare-gpt2").exists());
    assert!(!dir.path().join("run").exists());

    let out = stdout(&quill(&args, dir.path()));
    assert!(
        out.contains("# data: data/shakespeare-gpt2 (301966 train + 36059 val tokens, tokenizer gpt2), vocab_size 50257"),
        "{out}"
    );
    assert!(out.contains("done: 2 iterations"), "{out}");
    let meta = fs::read_to_string(dir.path().join("data/shakespeare-gpt2/meta.json")).unwrap();
    // The source's sha256 is tiny Shakespeare's.
    assert!(
        meta.contains("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
        "{meta}"
    );
}
