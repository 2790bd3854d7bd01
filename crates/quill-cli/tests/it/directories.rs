//! quill writes only into directories that are new, empty or its own: a user's files,
//! whatever their names, survive every command byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common;

use common::{TINY_MODEL, error_line, quill, stdout};

/// Every file under `dir` (hidden ones too) with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

/// Writes `files` (path → text) under `dir`.
fn put(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let verse = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n";
    fs::write(dir.path().join("corpus.txt"), verse.repeat(60)).unwrap();
    dir
}

/// `quill train` on the tiny model for `iters` steps, plus `extra` arguments.
fn train_args<'a>(iters: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", "corpus.txt", "--max-iters", iters];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&["--eval-iters", "1", "--final-eval-iters", "1"]);
    args.extend_from_slice(&["--sample-tokens", "0"]);
    args.extend_from_slice(extra);
    args
}

/// Names quill uses for its own temporary entries, on a user's files: `train --out`
/// refuses the directory and touches nothing in it.
#[test]
fn train_refuses_a_directory_of_a_users_files() {
    let dir = setup();
    let mine = dir.path().join("mine");
    put(
        &mine,
        &[
            ("last/thesis.txt", "chapter one"),
            (".notes.tmp-123/todo.txt", "call mum"),
            (".report.2024.tmp", "draft"),
            (".photos.old-42/cat.jpg", "meow"),
        ],
    );
    let before = snapshot(&mine);
    let err = error_line(&quill(&train_args("2", &["--out", "mine"]), dir.path()));
    assert_eq!(
        err,
        "error: mine holds files quill did not write (.notes.tmp-123, .photos.old-42, .report.2024.tmp, …); use an empty directory"
    );
    assert_eq!(snapshot(&mine), before);
    assert!(!dir.path().join("mine/photos").exists());
}

/// A checkpoint downloaded beside a user's files is resumed into a run directory of its
/// own (under `runs/`, or named with `--out`); its own directory is not taken for one.
#[test]
fn resume_writes_only_into_a_quill_run_directory() {
    let dir = setup();
    stdout(&quill(&train_args("2", &["--out", "run"]), dir.path()));
    let downloads = dir.path().join("Downloads");
    put(
        &downloads,
        &[
            ("best/tax.pdf", "%PDF tax"),
            (".cache.tmp-99/cookie", "secret"),
        ],
    );
    let ckpt = downloads.join("shared-ckpt");
    fs::create_dir(&ckpt).unwrap();
    for entry in fs::read_dir(dir.path().join("run/last")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, ckpt.join(path.file_name().unwrap())).unwrap();
    }
    let before = snapshot(&downloads);
    let resume = |extra: &[&'static str]| {
        let args = [&["--resume", "Downloads/shared-ckpt"][..], extra].concat();
        quill(&train_args("4", &args), dir.path())
    };
    // Without --out, a new run directory of its own under runs/.
    let out = stdout(&resume(&[]));
    assert!(
        out.starts_with("# run directory: runs/shared-ckpt (Downloads/shared-ckpt is not in a run directory; --out chooses another)\n"),
        "{out}"
    );
    assert!(out.contains("done: 4 iterations"), "{out}");
    assert_eq!(snapshot(&downloads), before);
    // Nor into it when named with --out.
    let err = error_line(&resume(&["--out", "Downloads"]));
    assert!(
        err.contains("Downloads holds files quill did not write"),
        "{err}"
    );
    assert_eq!(snapshot(&downloads), before);
    // With an --out of its own it runs.
    let out = stdout(&resume(&["--out", "resumed"]));
    assert!(out.contains("done: 4 iterations"), "{out}");
    assert_eq!(snapshot(&downloads), before);
    // A run directory quill wrote is still resumed in place without --out.
    let out = stdout(&quill(
        &train_args("4", &["--resume", "run/last"]),
        dir.path(),
    ));
    assert!(out.contains("done: 4 iterations"), "{out}");
}

/// `import gpt2` and `data prepare` replace only a checkpoint or a dataset that quill
/// wrote, not any directory holding a file of the same name.
#[test]
fn import_and_prepare_refuse_a_directory_that_merely_looks_like_theirs() {
    let dir = setup();
    let app = dir.path().join("myapp");
    put(
        &app,
        &[
            ("state.json", r#"{"format": "myapp-state"}"#),
            ("meta.json", r#"{"name": "myapp"}"#),
            ("src/main.rs", "fn main() {}"),
        ],
    );
    let before = snapshot(&app);
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../quill-train/tests/fixtures/tiny-gpt2");
    let err = error_line(&quill(
        &[
            "import",
            "gpt2",
            "--from",
            fixture.to_str().unwrap(),
            "--out",
            "myapp",
        ],
        dir.path(),
    ));
    assert_eq!(
        err,
        "error: myapp holds files quill did not write (meta.json, src, state.json); use an empty directory"
    );
    let err = error_line(&quill(
        &["data", "prepare", "--data", "corpus.txt", "--out", "myapp"],
        dir.path(),
    ));
    assert!(
        err.contains("myapp holds files quill did not write"),
        "{err}"
    );
    assert_eq!(snapshot(&app), before);
    // What quill wrote there, it may write again.
    for _ in 0..2 {
        stdout(&quill(
            &["data", "prepare", "--data", "corpus.txt", "--out", "ds"],
            dir.path(),
        ));
    }
    assert!(dir.path().join("ds/train.bin").is_file());
}

/// A downloaded checkpoint named `last/` does not make its folder a run directory:
/// resumed without `--out`, the run writes to a new directory under `runs/` and the
/// folder's files stay as they were.
#[test]
fn a_downloaded_last_does_not_make_its_folder_a_run_directory() {
    let dir = setup();
    stdout(&quill(&train_args("2", &["--out", "run"]), dir.path()));
    let downloads = dir.path().join("Downloads");
    put(
        &downloads,
        &[
            ("metrics.jsonl", "{\"mine\": 1}\n"),
            ("steps.jsonl", "{\"mine\": 2}\n"),
            ("loss.png", "my picture"),
            ("events.out.tfevents.1.host", "my events"),
        ],
    );
    fs::create_dir(downloads.join("last")).unwrap();
    for entry in fs::read_dir(dir.path().join("run/last")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(
            &path,
            downloads.join("last").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let before = snapshot(&downloads);
    let out = stdout(&quill(
        &train_args("4", &["--resume", "Downloads/last"]),
        dir.path(),
    ));
    assert!(
        out.starts_with(
            "# run directory: runs/Downloads (Downloads/last is not in a run directory; --out chooses another)\n"
        ),
        "{out}"
    );
    assert!(out.contains("done: 4 iterations"), "{out}");
    assert!(dir.path().join("runs/Downloads/last").is_dir());
    assert_eq!(snapshot(&downloads), before);
    let out = stdout(&quill(
        &train_args("4", &["--resume", "Downloads/last", "--out", "resumed"]),
        dir.path(),
    ));
    assert!(out.contains("done: 4 iterations"), "{out}");
    assert_eq!(snapshot(&downloads), before);
}

/// A directory quill wrote that also holds a user's file is not replaced away:
/// `import`, `export` and `data prepare` refuse while the file is there.
#[test]
fn a_users_file_inside_quills_directories_survives() {
    let dir = setup();
    stdout(&quill(&train_args("2", &["--out", "run"]), dir.path()));
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../quill-train/tests/fixtures/tiny-gpt2");
    let import = ["import", "gpt2", "--from", fixture.to_str().unwrap()];
    let export = ["export", "--format", "hf", "--checkpoint", "run/last"];
    let prepare = ["data", "prepare", "--data", "corpus.txt"];
    for (command, out, mine) in [
        (&import[..], "ckpt", "src/main.rs"),
        (&export[..], "hf", "app.py"),
        (&prepare[..], "ds", "data.csv"),
    ] {
        let args = [command, &["--out", out]].concat();
        stdout(&quill(&args, dir.path()));
        put(&dir.path().join(out), &[(mine, "mine")]);
        let before = snapshot(&dir.path().join(out));
        let err = error_line(&quill(&args, dir.path()));
        let first = mine.split('/').next().unwrap();
        assert_eq!(
            err,
            format!(
                "error: {out} holds files quill did not write ({first}); use an empty directory"
            )
        );
        assert_eq!(snapshot(&dir.path().join(out)), before);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
