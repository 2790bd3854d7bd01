//! `quill import nanogpt` from the command line: nanoGPT's checkpoint (the fixture of
//! `scripts/nanogpt_fixture.py`) samples nanoGPT's greedy text, evaluates, fine-tunes
//! and resumes; what is not a nanoGPT checkpoint is a one-line error, and `--out` is
//! only ever an empty or quill-owned directory.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{error_line, quill, stdout, tiny_shakespeare};

fn fixture(name: &str) -> String {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../quill-train/tests/fixtures/nanogpt")
        .join(name);
    path.to_str().unwrap().to_string()
}

#[test]
fn a_nanogpt_checkpoint_samples_evaluates_and_resumes() {
    let corpus = tiny_shakespeare();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (ckpt, meta) = (fixture("ckpt.pt"), fixture("meta.pkl"));
    let import = |from: &str, out: &str| {
        quill(
            &[
                "import", "nanogpt", "--from", from, "--meta", &meta, "--out", out,
            ],
            cwd,
        )
    };
    let out = stdout(&import(&ckpt, "ng"));
    assert!(out.contains("step 400, with AdamW's state"), "{out}");

    let expected: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    #[rustfmt::skip]
    let greedy = stdout(&quill(
        &["sample", "--checkpoint", "ng", "--prompt", "ROMEO:", "--temperature", "0", "--max-new-tokens", "100"],
        cwd,
    ));
    assert_eq!(
        greedy,
        format!("ROMEO:{}\n", expected["greedy"].as_str().unwrap())
    );

    let data = corpus.to_str().unwrap();
    let eval = stdout(&quill(
        &[
            "eval",
            "--checkpoint",
            "ng",
            "--data",
            data,
            "--eval-iters",
            "2",
        ],
        cwd,
    ));
    assert!(eval.contains("val loss"), "{eval}");
    // The run goes on from nanoGPT's step 400, with its moments.
    #[rustfmt::skip]
    stdout(&quill(
        &["train", "--resume", "ng", "--data", data, "--max-iters", "403", "--eval-iters", "1",
          "--final-eval-iters", "1", "--sample-tokens", "0", "--out", "resumed"],
        cwd,
    ));
    let steps = fs::read_to_string(cwd.join("resumed/steps.jsonl")).unwrap();
    assert!(
        steps.lines().next().unwrap().starts_with("{\"iter\":401,"),
        "{steps}"
    );
    #[rustfmt::skip]
    stdout(&quill(
        &["train", "--init-from", "ng", "--data", data, "--max-iters", "2", "--eval-iters", "1",
          "--final-eval-iters", "1", "--sample-tokens", "0", "--out", "tuned"],
        cwd,
    ));

    // Errors: one line each, nothing written.
    fs::create_dir(cwd.join("mine")).unwrap();
    fs::write(cwd.join("mine/notes.txt"), "mine").unwrap();
    let owned = error_line(&import(&ckpt, "mine"));
    assert!(owned.contains("holds files quill did not write"), "{owned}");
    assert_eq!(
        fs::read_to_string(cwd.join("mine/notes.txt")).unwrap(),
        "mine"
    );
    let evil = error_line(&import(&fixture("evil.pt"), "x"));
    assert!(
        evil.contains("quill reads only tensors and plain values"),
        "{evil}"
    );
    let bare = error_line(&import(&fixture("not-nanogpt.pt"), "x"));
    assert!(bare.contains("not a nanoGPT checkpoint"), "{bare}");
    let no_meta = error_line(&quill(
        &["import", "nanogpt", "--from", &ckpt, "--out", "x"],
        cwd,
    ));
    assert!(no_meta.contains("needs its meta.pkl"), "{no_meta}");
    assert!(!cwd.join("x").exists());
}

/// The files of `scripts/hostile_nanogpt.py`: each a one-line error within a second and
/// little memory, never zeros, an abort or a checkpoint quill cannot load; nothing is
/// written and no "sample:" hint is printed.
#[test]
fn hostile_and_broken_checkpoints_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let import = |from: &str, meta: &str| {
        let out = quill(
            &[
                "import", "nanogpt", "--from", from, "--meta", meta, "--out", "x",
            ],
            dir.path(),
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("sample:"));
        let line = error_line(&out);
        assert!(!dir.path().join("x").exists(), "{line}");
        line
    };
    let hostile = |name: &str| fixture(&format!("hostile/{name}"));
    let meta = fixture("meta.pkl");
    let cases = [
        (
            "short-storage.pt",
            "storage 0 holds 2080 bytes; the tensor needs 4160",
        ),
        ("missing-storage.pt", "storage 0 cannot be read"),
        (
            "offset-past-end.pt",
            "storage 0: elements 1056..2096 of a storage of 1040",
        ),
        (
            "strided.pt",
            "shape [65, 16] with stride [1, 65] is not a contiguous tensor",
        ),
        (
            "shape-lie.pt",
            "elements 0..1099511627776 of a storage of 1040",
        ),
        ("laughs.pt", "its memo copies more than 1048576 objects"),
        (
            "deep.pt",
            "more than 8192 objects on the pickle machine's stack",
        ),
        (
            "nan-lr.pt",
            "its config: invalid configuration: lr must be a positive number",
        ),
        ("eval-interval-0.pt", "eval_interval must be at least 1"),
        ("beta2-2.pt", "beta2 must be in [0, 1)"),
        (
            "warmup-negative.pt",
            "config[\"warmup_iters\"] is Int(-5), not a whole number",
        ),
        ("grad-accum-2-40.pt", "grad_accum must be at most 65536"),
        (
            "iter-num-2-62.pt",
            "iter_num is not a whole number from 0 to 1099511627776",
        ),
    ];
    for (name, reason) in cases {
        let line = import(&hostile(name), &meta);
        assert!(line.contains(reason), "{name}: {line}");
    }
    for (name, reason) in [
        (
            "laughs-meta.pkl",
            "its memo copies more than 1048576 objects",
        ),
        (
            "deep-meta.pkl",
            "more than 8192 objects on the pickle machine's stack",
        ),
    ] {
        let line = import(&fixture("ckpt.pt"), &hostile(name));
        assert!(line.contains(reason), "{name}: {line}");
    }
    // A FIFO or a link to a device in place of a file: refused, never read.
    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.pt");
        common::mkfifo(&fifo);
        let line = import(fifo.to_str().unwrap(), &meta);
        assert!(line.contains("not a regular file (a FIFO)"), "{line}");
        let zero = dir.path().join("zero.pkl");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let line = import(&fixture("ckpt.pt"), zero.to_str().unwrap());
        assert!(line.contains("not a regular file (a device)"), "{line}");
    }
}
