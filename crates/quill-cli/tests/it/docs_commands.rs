//! Every `quill` command of README.md and `docs/*.md` runs as written.
//!
//! Each page's `sh` blocks are read, and their `quill` commands run in order, in a
//! fresh directory per page, as a reader would type them (`cargo run --release --` is
//! the `quill` binary). Small settings are added where a command leaves them out — a
//! 1-layer model, a few steps, one evaluation batch — and a setting a command gives is
//! never changed. What a reader brings is made first from small fixtures: tiny
//! Shakespeare, their own corpus and config file, nanoGPT's `ckpt.pt`, GPT-2 (imported
//! from a 2-layer Hugging Face fixture instead of the Hub), and for the `docs/` pages,
//! which are read after the README, the README's first two runs. A command that needs the
//! network, a GPU, several machines, a server left running or minutes of measuring is
//! skipped for the reason [`skip_reason`] gives, and the test prints what it ran and
//! skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `quill` commands of a page's `sh` blocks, split into words as a shell would
/// (quotes, `$'…'`, `\` continuations, `#` comments).
fn commands(page: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in page.lines() {
        let trimmed = line.trim();
        if let Some(lang) = trimmed.strip_prefix("```") {
            in_block = !in_block && (lang == "sh" || lang == "bash");
            continue;
        }
        if !in_block {
            continue;
        }
        pending.push_str(trimmed);
        if let Some(stripped) = pending.strip_suffix('\\') {
            pending = format!("{stripped} ");
            continue;
        }
        let words = split(&std::mem::take(&mut pending));
        let words = match words.first().map(String::as_str) {
            Some("quill") => words,
            Some("cargo") if words.starts_with(&cargo_run()) => {
                let mut w = vec!["quill".to_string()];
                w.extend(words[cargo_run().len()..].iter().cloned());
                w
            }
            _ => continue,
        };
        out.push(words);
    }
    out
}

fn cargo_run() -> Vec<String> {
    ["cargo", "run", "--release", "--"]
        .map(String::from)
        .to_vec()
}

/// Shell words: `'…'`, `"…"`, `$'…'` (with `\n`), a `#` comment after a space, and
/// a trailing `&` kept as a word.
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                words.extend(word.take());
            }
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    w.push(c);
                }
            }
            '$' if chars.peek() == Some(&'\'') => {
                chars.next();
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '\'' => break,
                        '\\' => match chars.next() {
                            Some('n') => w.push('\n'),
                            Some('t') => w.push('\t'),
                            Some(other) => w.push(other),
                            None => {}
                        },
                        c => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Why a command is not run here; `None` for those that run.
fn skip_reason(words: &[String]) -> Option<&'static str> {
    let has = |w: &str| words.iter().any(|x| x == w);
    let template = words.iter().any(|w| {
        w.starts_with('[')
            || w.contains("NAME")
            || w.contains("PATH")
            || w == "DIR"
            || w.contains('|')
    });
    if template {
        return Some("a template: the words in capitals or brackets are the reader's");
    }
    if words
        .iter()
        .any(|w| w.starts_with("cuda") || w.starts_with("wgpu"))
        || has("parity")
    {
        return Some("needs a GPU");
    }
    if has("serve") {
        return Some("serves until stopped (tests/it/serve.rs runs the server)");
    }
    if has("import") && has("gpt2") && !has("--from") {
        return Some("downloads from the Hugging Face Hub (here: imported from a fixture)");
    }
    if has("--nnodes") || has("--world-size") || has("&") {
        return Some("several machines or shells");
    }
    if has("--to-loss") {
        return Some("a measurement of minutes");
    }
    if words.iter().any(|w| w.contains("fineweb")) {
        return Some("needs FineWeb's shards");
    }
    None
}

/// Small settings, added where `words` leaves them out.
fn shrink(mut words: Vec<String>) -> Vec<String> {
    let has = |words: &[String], flag: &str| words.iter().any(|w| w == flag);
    let add = |words: &mut Vec<String>, flag: &str, value: &str| {
        if !has(words, flag) {
            words.push(flag.into());
            words.push(value.into());
        }
    };
    let command = words.iter().position(|w| w == "train" || w == "bench");
    let Some(at) = command else {
        match words.get(1).map(String::as_str) {
            Some("sample") => add(&mut words, "--max-new-tokens", "20"),
            Some("eval") => add(&mut words, "--eval-iters", "1"),
            _ => {}
        }
        return words;
    };
    if words[at] == "bench" {
        for (flag, value) in [
            ("--iters", "2"),
            ("--warmup", "1"),
            ("--eval-iters", "1"),
            ("--sample-tokens", "5"),
        ] {
            add(&mut words, flag, value);
        }
        return words;
    }
    let fresh = !has(&words, "--resume") && !has(&words, "--init-from");
    if fresh {
        for (flag, value) in [
            ("--n-layer", "1"),
            ("--n-head", "2"),
            ("--n-embd", "16"),
            ("--batch-size", "4"),
        ] {
            add(&mut words, flag, value);
        }
    }
    if !has(&words, "--resume") {
        add(&mut words, "--block-size", "16");
        add(&mut words, "--grad-accum", "1");
    }
    let iters: usize = match words.iter().position(|w| w == "--max-iters") {
        Some(i) => words[i + 1].parse().unwrap(),
        None => 4,
    };
    add(&mut words, "--max-iters", &iters.to_string());
    add(
        &mut words,
        "--eval-interval",
        &iters.div_ceil(2).to_string(),
    );
    add(&mut words, "--eval-iters", "1");
    add(&mut words, "--final-eval-iters", "1");
    add(&mut words, "--sample-tokens", "10");
    add(&mut words, "--warmup-iters", "0");
    add(&mut words, "--cooldown-iters", "1");
    words
}

/// What a reader brings, in `dir`: tiny Shakespeare in its place and as `input.txt`,
/// their own corpus, config file and books, nanoGPT's files, and GPT-2 (imported from
/// the fixture, where the docs download it).
fn bring(dir: &Path) {
    let shakespeare = common::tiny_shakespeare();
    let text = fs::read_to_string(&shakespeare).unwrap();
    fs::create_dir_all(dir.join("data/tinyshakespeare")).unwrap();
    fs::copy(&shakespeare, dir.join("data/tinyshakespeare/input.txt")).unwrap();
    fs::write(dir.join("input.txt"), &text).unwrap();
    fs::write(dir.join("my-corpus.txt"), &text[..20_000]).unwrap();
    // Another text in the same characters (a character model finetunes on its own).
    let other: Vec<&str> = text.lines().rev().collect();
    fs::write(dir.join("other.txt"), other.join("\n")).unwrap();
    fs::create_dir_all(dir.join("books")).unwrap();
    fs::write(dir.join("books/a.txt"), &text[..30_000]).unwrap();
    fs::write(dir.join("books/b.txt"), &text[30_000..60_000]).unwrap();
    fs::write(dir.join("my.toml"), "lr = 3e-4\nn_layer = 1\n").unwrap();
    let nanogpt = root().join("crates/quill-train/tests/fixtures/nanogpt");
    fs::create_dir_all(dir.join("out-shakespeare-char")).unwrap();
    fs::create_dir_all(dir.join("data/shakespeare_char")).unwrap();
    fs::copy(
        nanogpt.join("ckpt.pt"),
        dir.join("out-shakespeare-char/ckpt.pt"),
    )
    .unwrap();
    fs::copy(
        nanogpt.join("meta.pkl"),
        dir.join("data/shakespeare_char/meta.pkl"),
    )
    .unwrap();
    let gpt2 = root().join("crates/quill-train/tests/fixtures/tiny-gpt2");
    let out = common::quill(
        &[
            "import",
            "gpt2",
            "--from",
            gpt2.to_str().unwrap(),
            "--out",
            "ckpt/gpt2",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", common::error_line(&out));
}

/// Runs a page's commands in order in a fresh directory; returns the failures, and
/// the run directory each new (not resumed) training run named in its first line.
fn run_page(name: &str) -> (Vec<String>, Vec<String>) {
    let page = fs::read_to_string(root().join(name)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    bring(dir.path());
    // The docs are read after the README: its first two runs (runs/cpu, runs/cpu-2)
    // are there.
    for _ in 0..2 * usize::from(name != "README.md") {
        let first = shrink(["quill", "train"].map(String::from).to_vec());
        let args: Vec<&str> = first[1..].iter().map(String::as_str).collect();
        let out = common::quill(&args, dir.path());
        assert!(out.status.success(), "{}", common::error_line(&out));
    }
    let mut failures = Vec::new();
    let mut runs = Vec::new();
    for words in commands(&page) {
        let shown = words.join(" ");
        if let Some(reason) = skip_reason(&words) {
            println!("{name}: skipped `{shown}`: {reason}");
            continue;
        }
        let words = shrink(words);
        // `quill launch` listens on its default port: one at a time.
        static LAUNCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = (words[1] == "launch").then(|| LAUNCH.lock().unwrap_or_else(|e| e.into_inner()));
        let out = Command::new(env!("CARGO_BIN_EXE_quill"))
            .args(&words[1..])
            .current_dir(dir.path())
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        if let Some(run) = first.strip_prefix("# run directory: ")
            && out.status.success()
            && !words.iter().any(|w| w == "--resume" || w == "--dry-run")
        {
            let run = run.split(" (").next().unwrap().to_string();
            assert!(
                dir.path().join(&run).join("best").is_dir(),
                "{shown}: no {run}/best"
            );
            runs.push(run);
        }
        match out.status.success() {
            true => println!("{name}: ran `{shown}`"),
            false => failures.push(format!(
                "{name}: `{}` failed: {}",
                words.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
    (failures, runs)
}

#[test]
fn the_words_of_a_command_are_split_as_a_shell_would() {
    assert_eq!(
        split(r#"quill sample --stop $'\n\n' --prompt "ROMEO:" --data 'a b'  # comment"#),
        [
            "quill", "sample", "--stop", "\n\n", "--prompt", "ROMEO:", "--data", "a b"
        ]
    );
    let page = "text\n```sh\nquill a \\\n   --b 1   # c\nls\n```\n```python\nquill no\n```\n";
    assert_eq!(commands(page), [vec!["quill", "a", "--b", "1"]]);
}

#[test]
fn the_readme_runs_as_written_and_no_run_replaces_another() {
    let (failures, runs) = run_page("README.md");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every training run the README starts without --out has a directory of its own.
    let mut distinct = runs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), runs.len(), "{runs:?}");
    assert!(runs.len() >= 6, "{runs:?}");
    // `cargo run --release -- train`, then `quill train`, then another preset.
    assert_eq!(
        runs[..3],
        ["runs/cpu", "runs/cpu-2", "runs/shakespeare-char"],
        "{runs:?}"
    );
}

#[test]
fn the_docs_run_as_written() {
    let mut pages: Vec<String> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    pages.sort();
    let failures: Vec<String> = pages.iter().flat_map(|p| run_page(p).0).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
