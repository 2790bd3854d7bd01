//! Corpora kept as many token files: `quill data prepare --shard-tokens N` and llm.c's
//! shard sets (`--data 'DIR/NAME_train_*.bin' --val-data 'DIR/NAME_val_*.bin'`, or a
//! directory holding both) train with exactly the losses of the same tokens in one
//! file, and resume.

use crate::common;

use std::fs;
use std::path::Path;

use common::{TINY_MODEL, error_line, quill, stdout, step_losses, tiny_shakespeare};

/// `quill train` on `data` for `iters` steps into `out`, with the tiny model.
fn train(cwd: &Path, data: &[&str], iters: &str, out: &str) {
    #[rustfmt::skip]
    let args = [
        &["train", "--max-iters", iters, "--eval-interval", "5", "--eval-iters", "1",
          "--final-eval-iters", "1", "--sample-tokens", "0", "--out", out][..],
        data,
        TINY_MODEL,
    ]
    .concat();
    stdout(&quill(&args, cwd));
}

fn names(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn shards_train_as_one_file_and_resume() {
    let corpus = tiny_shakespeare();
    let corpus = corpus.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let prepare = |out: &str, extra: &[&str]| {
        #[rustfmt::skip]
        let args = [&["data", "prepare", "--data", corpus, "--tokenizer", "gpt2", "--out", out][..], extra].concat();
        stdout(&quill(&args, cwd));
    };
    prepare("one", &[]);
    prepare("sharded", &["--shard-tokens", "20000"]);
    // 301,966 training tokens: 15 full shards and the rest; 36,059 validating.
    let train_names = names(&cwd.join("sharded"), "train_");
    assert_eq!(train_names.len(), 16);
    assert_eq!(names(&cwd.join("sharded"), "val_").len(), 2);
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(cwd.join("sharded/meta.json")).unwrap()).unwrap();
    assert_eq!(meta["train_files"][15], "train_000015.bin");
    assert_eq!(meta["train_tokens"], 301_966);

    // llm.c's names, in a directory of their own.
    fs::create_dir(cwd.join("fw")).unwrap();
    for split in ["train", "val"] {
        for (i, name) in names(&cwd.join("sharded"), &format!("{split}_"))
            .iter()
            .enumerate()
        {
            let to = cwd.join(format!("fw/fineweb_{split}_{i:06}.bin"));
            fs::copy(cwd.join("sharded").join(name), to).unwrap();
        }
    }

    train(cwd, &["--data", "one"], "10", "runs/one");
    let expected = step_losses(cwd, "runs/one");
    assert_eq!(expected.len(), 10);
    train(cwd, &["--data", "sharded"], "10", "runs/sharded");
    #[rustfmt::skip]
    let pattern = ["--data", "fw/fineweb_train_*.bin", "--val-data", "fw/fineweb_val_*.bin"];
    train(cwd, &pattern, "10", "runs/pattern");
    train(cwd, &["--data", "fw"], "10", "runs/directory");
    for run in ["runs/sharded", "runs/pattern", "runs/directory"] {
        assert_eq!(step_losses(cwd, run), expected, "{run}");
    }

    // Half the steps, then a resume on the shards: the same ten losses.
    train(cwd, &pattern, "5", "runs/half");
    #[rustfmt::skip]
    let resume = [&["train", "--resume", "runs/half/last", "--max-iters", "10", "--out", "runs/rest"][..], &pattern].concat();
    stdout(&quill(&resume, cwd));
    let mut resumed = step_losses(cwd, "runs/half");
    resumed.extend(step_losses(cwd, "runs/rest"));
    assert_eq!(resumed, expected);
    // Without --data, the resumed run trains on the shards the checkpoint recorded.
    let again = quill(
        &[
            "train",
            "--resume",
            "runs/half/last",
            "--max-iters",
            "10",
            "--out",
            "runs/again",
        ],
        cwd,
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains(
        "note: the run continues on the data it trained on, fw/fineweb_train_*.bin (val fw/fineweb_val_*.bin)"
    ));
    assert_eq!(
        step_losses(cwd, "runs/again"),
        step_losses(cwd, "runs/rest")
    );

    // `quill data` describes a shard set.
    let shown = stdout(&quill(&["data", "fw"], cwd));
    assert!(
        shown.contains(
            "(16 train shards, 301966 tokens; 2 val shards, 36059 tokens; tokenizer gpt2)"
        ),
        "{shown}"
    );
    #[rustfmt::skip]
    let json = stdout(&quill(&["data", "--json", "fw/fineweb_train_*.bin", "--val-data", "fw/fineweb_val_*.bin"], cwd));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (json["train_tokens"].as_u64(), json["vocab_size"].as_u64()),
        (Some(301_966), Some(50_257))
    );

    // A pattern of training shards needs its validation shards; a pattern must match;
    // shards of different token widths are not one set.
    let no_val = error_line(&quill(&["train", "--data", "fw/fineweb_train_*.bin"], cwd));
    assert!(
        no_val.contains("name the validation shards with --val-data"),
        "{no_val}"
    );
    #[rustfmt::skip]
    let none = error_line(&quill(&["train", "--data", "fw/nothing_*.bin", "--val-data", "fw/fineweb_val_*.bin"], cwd));
    assert!(none.contains("no file matches"), "{none}");
    let wide = cwd.join("fw/fineweb_train_000099.bin");
    let mut header = vec![0u8; 1024];
    for (i, v) in [20_240_520i32, 7, 2].into_iter().enumerate() {
        header[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    header.extend([1u8, 0, 0, 0, 2, 0, 0, 0]);
    fs::write(&wide, header).unwrap();
    let mixed = error_line(&quill(&["train", "--data", "fw"], cwd));
    assert!(mixed.contains("one token width"), "{mixed}");
}

/// quill's own character shards named by a pattern are read with the dataset's
/// tokenizer (its meta.json), not as GPT-2 tokens.
#[test]
fn a_pattern_over_quills_own_shards_uses_their_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let verse = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n";
    fs::write(cwd.join("corpus.txt"), verse.repeat(200)).unwrap();
    #[rustfmt::skip]
    stdout(&quill(&["data", "prepare", "--data", "corpus.txt", "--out", "chars", "--shard-tokens", "4000"], cwd));
    #[rustfmt::skip]
    let args = [&["train", "--dry-run", "--out", "run", "--data", "chars/train_*.bin",
                  "--val-data", "chars/val_*.bin"][..], TINY_MODEL].concat();
    let out = stdout(&quill(&args, cwd));
    assert!(out.starts_with("# run directory: run\n"), "{out}");
    assert!(out.contains("vocab_size 28\n"), "{out}");
    assert!(out.contains("tokenizer char"), "{out}");
}
