//! GPT-2 weights end to end on the tiny random transformers model of
//! `quill-train/tests/fixtures/tiny-gpt2`: `quill import gpt2` (from a directory and
//! over HTTP) → `quill sample` → `quill train --init-from` → `quill export --format hf`
//! → `quill import` again, and one-line errors.

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::{TINY_MODEL, error_line, quill, quill_with_env, stdout};
use safetensors::SafeTensors;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../quill-train/tests/fixtures/tiny-gpt2")
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&fs::read(fixture().join("expected.json")).unwrap()).unwrap()
}

/// A temporary directory with the fixture imported as `ck` and a GPT-2 dataset of a
/// few verses as `data/verse`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = fixture();
    let out = stdout(&quill(
        &[
            "import",
            "gpt2",
            "--from",
            from.to_str().unwrap(),
            "--out",
            "ck",
        ],
        dir.path(),
    ));
    assert!(
        out.contains("2 layers, 2 heads, 32 wide, context 64, vocabulary 50257"),
        "{out}"
    );
    let verse = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n\n";
    fs::write(dir.path().join("verse.txt"), verse.repeat(200)).unwrap();
    let prepare = [
        "data",
        "prepare",
        "--data",
        "verse.txt",
        "--tokenizer",
        "gpt2",
        "--out",
        "data/verse",
    ];
    stdout(&quill(&prepare, dir.path()));
    dir
}

/// Every tensor of a safetensors file, by name, as raw bytes with dtype and shape.
fn tensors(path: &Path) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let bytes = fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                format!("{:?}", view.dtype()),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn import_sample_finetune_export_reimport() {
    let dir = setup();
    let cwd = dir.path();

    // Greedy sampling (top-k 1) streams transformers' greedy continuation.
    let prompt = &expected()["prompts"][0];
    let text = prompt["text"].as_str().unwrap();
    let out = stdout(&quill(
        &[
            "sample",
            "--checkpoint",
            "ck",
            "--prompt",
            text,
            "--max-new-tokens",
            "20",
            "--top-k",
            "1",
        ],
        cwd,
    ));
    let greedy: Vec<u32> = serde_json::from_value(prompt["greedy"].clone()).unwrap();
    let continuation = quill_data::Tokenizer::gpt2().decode(&greedy).unwrap();
    assert_eq!(out.trim_end_matches('\n'), format!("{text}{continuation}"));

    // Evaluation on a prepared GPT-2 dataset: the random model is near ln 50257 = 10.8.
    let out = stdout(&quill(
        &[
            "eval",
            "--checkpoint",
            "ck",
            "--data",
            "data/verse",
            "--eval-iters",
            "2",
            "--json",
        ],
        cwd,
    ));
    let val = serde_json::from_str::<serde_json::Value>(&out).unwrap()["val_loss"]
        .as_f64()
        .unwrap();
    assert!((9.5..12.0).contains(&val), "{val}");

    // Finetuning: 20 steps at a shorter context, a fresh optimizer, the loss falls.
    let finetune = [
        "train",
        "--init-from",
        "ck",
        "--data",
        "data/verse",
        "--out",
        "runs/ft",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--max-iters",
        "20",
        "--eval-interval",
        "10",
        "--eval-iters",
        "2",
        "--final-eval-iters",
        "2",
        "--lr",
        "3e-3",
        "--sample-tokens",
        "0",
    ];
    let out = stdout(&quill(&finetune, cwd));
    assert!(
        out.contains("# effective configuration (finetuning ck)"),
        "{out}"
    );
    assert!(out.contains("activation = \"gelu-tanh\""), "{out}");
    let metrics = fs::read_to_string(cwd.join("runs/ft/metrics.jsonl")).unwrap();
    let val: Vec<f64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(val.len(), 3, "{metrics}");
    assert!(val[2] < val[0] - 1.0, "the loss should fall: {val:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(cwd.join("runs/ft/last/state.json")).unwrap()).unwrap();
    assert_eq!(state["iter"], 20);

    // Export, then import the export: the same weights, bit for bit.
    stdout(&quill(
        &[
            "export",
            "--format",
            "hf",
            "--checkpoint",
            "runs/ft/last",
            "--out",
            "hf",
        ],
        cwd,
    ));
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(cwd.join("hf/config.json")).unwrap()).unwrap();
    assert_eq!(
        (config["n_positions"].as_u64(), config["n_layer"].as_u64()),
        (Some(32), Some(2))
    );
    stdout(&quill(
        &["import", "gpt2", "--from", "hf", "--out", "again"],
        cwd,
    ));
    let (before, after) = (
        tensors(&cwd.join("runs/ft/last/model.safetensors")),
        tensors(&cwd.join("again/model.safetensors")),
    );
    assert_eq!(before.len(), after.len());
    assert!(before == after, "the round trip changed the weights");
    // The reimported model samples what the finetuned one samples.
    let sample = |ck: &str| {
        let args = [
            "sample",
            "--checkpoint",
            ck,
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "12",
            "--seed",
            "5",
        ];
        stdout(&quill(&args, cwd))
    };
    let text = sample("runs/ft/last");
    assert_eq!(sample("again"), text);
    assert!(
        text.starts_with("ROMEO:") && text.len() > "ROMEO:".len(),
        "{text}"
    );
}

#[test]
fn finetuning_errors_are_one_line() {
    let dir = setup();
    let cwd = dir.path();
    let base = [
        "train",
        "--init-from",
        "ck",
        "--max-iters",
        "1",
        "--dry-run",
    ];
    let run = |extra: &[&str]| error_line(&quill(&[&base[..], extra].concat(), cwd));
    assert_eq!(
        run(&["--data", "data/verse", "--n-layer", "4"]),
        "error: n_layer is 2 in the model being finetuned but 4 here; only training settings, dropout and a smaller block_size may change with --init-from"
    );
    assert_eq!(
        run(&["--data", "data/verse", "--block-size", "128"]),
        "error: invalid configuration: block_size 128 exceeds the block_size 64 of the model being finetuned"
    );
    stdout(&quill(
        &[
            "data",
            "prepare",
            "--data",
            "verse.txt",
            "--out",
            "data/chars",
        ],
        cwd,
    ));
    assert_eq!(
        run(&["--data", "data/chars"]),
        "error: the data's tokenizer (char) differs from the checkpoint's (gpt2)"
    );
    assert!(
        run(&["--data", "data/verse", "--resume", "ck"]).contains("cannot be used with"),
        "--init-from and --resume exclude each other"
    );
    // A dry run with a smaller context and another dropout is fine.
    let ok = stdout(&quill(
        &[
            &base[..],
            &[
                "--data",
                "data/verse",
                "--block-size",
                "16",
                "--dropout",
                "0.1",
            ],
        ]
        .concat(),
        cwd,
    ));
    assert!(
        ok.contains("block_size = 16") && ok.contains("dropout = 0.1"),
        "{ok}"
    );

    // Export refuses what Hugging Face GPT-2 cannot hold, and a directory of other files.
    let rotary = [
        "train",
        "--data",
        "data/chars",
        "--out",
        "runs/rotary",
        "--position",
        "rotary",
        "--max-iters",
        "1",
        "--eval-iters",
        "1",
        "--final-eval-iters",
        "1",
        "--sample-tokens",
        "0",
    ];
    stdout(&quill(&[&rotary[..], TINY_MODEL].concat(), cwd));
    assert!(
        error_line(&quill(
            &[
                "export",
                "--format",
                "hf",
                "--checkpoint",
                "runs/rotary/last",
                "--out",
                "x"
            ],
            cwd
        ))
        .contains("position = rotary, which Hugging Face GPT-2 cannot express")
    );
    fs::write(cwd.join("notes.txt"), "mine").unwrap();
    assert!(
        error_line(&quill(
            &[
                "export",
                "--format",
                "hf",
                "--checkpoint",
                "ck",
                "--out",
                "."
            ],
            cwd
        ))
        .contains("holds files quill did not write")
    );
    assert!(
        error_line(&quill(
            &["import", "gpt2", "--from", "ck", "--out", "y"],
            cwd
        ))
        .contains("model_type is missing, but quill imports GPT-2 checkpoints")
    );
    assert!(
        error_line(&quill(
            &[
                "import",
                "gpt2",
                "--from",
                fixture().to_str().unwrap(),
                "--out",
                "data"
            ],
            cwd
        ))
        .contains("data holds files quill did not write")
    );
}

/// Serves `files` (URL path → bytes) over HTTP/1.1 on localhost, one request per
/// connection, for `requests` requests; a file served as `(bytes, claimed)` announces
/// `claimed` bytes, so a shorter body is a cut download.
fn serve(files: Vec<(String, Vec<u8>, usize)>, requests: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("");
            match files.iter().find(|(p, _, _)| p == path) {
                Some((_, body, claimed)) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(body));
                }
                None => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    port
}

#[test]
fn downloads_from_the_hub_endpoint_and_checks_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let file = |name: &str| fs::read(fixture().join(name)).unwrap();
    let (config, weights) = (file("config.json"), file("model.safetensors"));
    // `quill import gpt2` from the server on `port`: its one-line error.
    let import_from = |port: u16| {
        let endpoint = format!("http://127.0.0.1:{port}");
        let args = ["import", "gpt2", "--out", "ck"];
        error_line(&quill_with_env(&args, cwd, &[("HF_ENDPOINT", &endpoint)]))
    };

    // A download cut short lands nothing.
    let cut = weights[..1000].to_vec();
    let port = serve(
        vec![
            (
                "/gpt2/resolve/main/config.json".into(),
                config.clone(),
                config.len(),
            ),
            (
                "/gpt2/resolve/main/model.safetensors".into(),
                cut,
                weights.len(),
            ),
        ],
        2,
    );
    let err = import_from(port);
    assert!(err.starts_with("error: could not download gpt2"), "{err}");
    assert!(cwd.join("data/hf/gpt2/config.json").is_file());
    let leftovers: Vec<_> = fs::read_dir(cwd.join("data/hf/gpt2"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["config.json"],
        "no partial model.safetensors, no temporary file"
    );

    // A whole download: the files land, then the importer sees that this is not the
    // released gpt2 (the fixture is 2 layers, 32 wide), and says so.
    let port = serve(
        vec![(
            "/gpt2/resolve/main/model.safetensors".into(),
            weights.clone(),
            weights.len(),
        )],
        1,
    );
    let err = import_from(port);
    assert!(
        err.ends_with("n_layer, n_head, n_embd are (2, 2, 32), but gpt2 has (12, 12, 768); delete the directory to download it again"),
        "{err}"
    );
    assert_eq!(
        fs::read(cwd.join("data/hf/gpt2/model.safetensors")).unwrap(),
        weights
    );
    assert!(!cwd.join("ck").exists());

    let err = error_line(&quill(
        &["import", "gpt2", "--model", "gpt3", "--out", "ck"],
        cwd,
    ));
    assert!(err.contains("unknown --model \"gpt3\""), "{err}");
}
