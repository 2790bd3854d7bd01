//! `quill import nanogpt` from the command line: nanoGPT's checkpoint (the fixture of
//! `scripts/nanogpt_fixture.py`) samples nanoGPT's greedy text, evaluates, fine-tunes
//! and resumes; what is not a nanoGPT checkpoint is a one-line error, and `--out` is
//! only ever an empty or quill-owned directory.

mod common;

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
