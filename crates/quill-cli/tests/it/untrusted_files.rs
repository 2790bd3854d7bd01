//! Checkpoints, configs and settings from elsewhere are checked before use: absurd or
//! broken values are one `error: …` line naming what is wrong, never an abort, a panic
//! or a hang.

use std::fs;
use std::path::Path;

use crate::common;

use common::{TINY_MODEL, error_line, quill, stdout};
use safetensors::SafeTensors;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let verse = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n";
    fs::write(dir.path().join("corpus.txt"), verse.repeat(60)).unwrap();
    let mut args = vec!["train", "--data", "corpus.txt", "--out", "run"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(&["--max-iters", "2", "--eval-iters", "1"]);
    args.extend_from_slice(&["--final-eval-iters", "1", "--sample-tokens", "0"]);
    stdout(&quill(&args, dir.path()));
    dir
}

/// A copy of `run/last` as `name`, with `change` applied to its `config.json`.
fn altered(dir: &Path, name: &str, change: impl FnOnce(&mut serde_json::Value)) {
    let to = dir.join(name);
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(dir.join("run/last")).unwrap() {
        let path = entry.unwrap().path();
        fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(to.join("config.json")).unwrap()).unwrap();
    change(&mut config);
    fs::write(to.join("config.json"), config.to_string()).unwrap();
}

/// A model too large for any machine, or whose sizes overflow, is refused by every
/// command that builds one from a file, before anything is allocated.
#[test]
fn huge_models_from_files_are_refused_before_they_are_built() {
    let dir = setup();
    let d = dir.path();
    // 2^20 wide: 48 TB of weights; a context of 2^40: its scores overflow.
    for (name, setting, value) in [
        ("big", "n_embd", 1u64 << 20),
        ("overflow", "block_size", 1 << 40),
    ] {
        altered(d, name, |c| {
            c["model"][setting] = value.into();
            c["train"][setting] = value.into();
        });
        for args in [
            &["eval", "--checkpoint", name, "--data", "corpus.txt"][..],
            &["sample", "--checkpoint", name, "--max-new-tokens", "5"],
            &[
                "train",
                "--resume",
                name,
                "--out",
                "r",
                "--data",
                "corpus.txt",
            ],
        ] {
            let line = error_line(&quill(args, d));
            let expected = match name {
                "big" => "needs about",
                _ => "block_size × block_size is too large",
            };
            assert!(line.contains(expected), "{args:?}: {line}");
        }
    }
    // A Hugging Face config with n_positions or n_layer of 2^40.
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../quill-train/tests/fixtures/tiny-gpt2");
    for field in ["n_positions", "n_layer"] {
        let hf = d.join(format!("hf-{field}"));
        fs::create_dir_all(&hf).unwrap();
        fs::copy(
            fixture.join("model.safetensors"),
            hf.join("model.safetensors"),
        )
        .unwrap();
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(fixture.join("config.json")).unwrap()).unwrap();
        config[field] = (1u64 << 40).into();
        fs::write(hf.join("config.json"), config.to_string()).unwrap();
        let from = hf.to_str().unwrap();
        let line = error_line(&quill(&["import", "gpt2", "--from", from, "--out", "x"], d));
        assert!(
            line.contains("too large") || line.contains("needs about"),
            "{field}: {line}"
        );
    }
    let from = fixture.to_str().unwrap();
    let pad = (1u64 << 62).to_string();
    let line = error_line(&quill(
        &[
            "import",
            "gpt2",
            "--from",
            from,
            "--out",
            "x",
            "--pad-vocab",
            &pad,
        ],
        d,
    ));
    assert!(line.contains("vocab_size × n_embd is too large"), "{line}");
}

/// Settings that JSON cannot store, or that would hang a run, are refused where they
/// are read: in a config file, and in a checkpoint's config.json.
#[test]
fn settings_out_of_range_are_refused_where_they_are_read() {
    let dir = setup();
    let d = dir.path();
    for (setting, message) in [
        ("eps = inf", "eps must be a number > 0"),
        ("grad_clip = inf", "grad_clip must be a number ≥ 0"),
        ("weight_decay = nan", "weight_decay must be a number ≥ 0"),
        (
            "sample_tokens = 100000000000",
            "sample_tokens must be at most 100000",
        ),
    ] {
        fs::write(d.join("bad.toml"), setting).unwrap();
        let mut args = vec!["train", "--data", "corpus.txt", "--out", "x"];
        args.extend_from_slice(&["--config", "bad.toml"]);
        let line = error_line(&quill(&args, d));
        assert!(line.contains(message), "{setting}: {line}");
    }
    altered(d, "negative", |c| c["train"]["eps"] = (-1.0).into());
    let line = error_line(&quill(&["sample", "--checkpoint", "negative"], d));
    assert!(
        line.contains("negative: not a valid quill checkpoint: config.json: invalid configuration: eps must be a number > 0"),
        "{line}"
    );
}

/// Rewrites the safetensors file `path` with `change` applied to its tensors (name,
/// shape, little-endian f32 bytes, sorted by name).
fn rewrite(path: &Path, change: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let bytes = fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec(), t.data().to_vec()))
        .collect();
    tensors.sort();
    change(&mut tensors);
    let views = tensors.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
        (name.clone(), view.unwrap())
    });
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Optimizer moments that do not fit the model, and weights of the wrong shape, are
/// errors naming the tensor.
#[test]
fn tensors_that_do_not_fit_the_model_are_refused() {
    let dir = setup();
    let d = dir.path();
    altered(d, "moments", |_| {});
    let mut name = String::new();
    rewrite(&d.join("moments/optimizer.safetensors"), |tensors| {
        let first = &mut tensors[0];
        first.1 = vec![first.1.iter().product::<usize>() - 1];
        first.2.truncate(first.2.len() - 4);
        name = first.0.clone();
    });
    let line = error_line(&quill(
        &[
            "train",
            "--resume",
            "moments",
            "--out",
            "r",
            "--data",
            "corpus.txt",
            "--max-iters",
            "3",
        ],
        d,
    ));
    assert!(line.contains(&format!("{name} has ")), "{line}");
    assert!(line.contains("but the parameter"), "{line}");

    // A Linear weight flattened to one dimension cannot be exported (the config says
    // the model has biases, as an exportable GPT-2 does).
    altered(d, "flat", |c| {
        c["model"]["bias"] = true.into();
        c["train"]["bias"] = true.into();
    });
    let weight = "transformer.h.0.attn.c_attn.weight";
    rewrite(&d.join("flat/model.safetensors"), |tensors| {
        let t = tensors.iter_mut().find(|t| t.0 == weight).unwrap();
        t.1 = vec![t.1.iter().product()];
    });
    let line = error_line(&quill(
        &[
            "export",
            "--format",
            "hf",
            "--checkpoint",
            "flat",
            "--out",
            "hf",
        ],
        d,
    ));
    assert!(
        line.contains(&format!("the checkpoint's tensor {weight} has shape [")),
        "{line}"
    );
    assert!(!d.join("hf").exists());
}

/// A FIFO or a link to `/dev/zero` in place of a run's files: `quill runs`, `quill plot`
/// and `sample` neither hang nor read without end.
#[cfg(unix)]
#[test]
fn fifos_and_devices_in_a_run_directory_are_never_read() {
    let dir = setup();
    let run = dir.path().join("run");
    common::mkfifo(&run.join(".lock"));
    common::mkfifo(&run.join("metrics.jsonl"));
    fs::remove_file(run.join("last/state.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", run.join("last/state.json")).unwrap();
    let started = std::time::Instant::now();
    let table = stdout(&quill(&["runs", "run"], dir.path()));
    assert!(table.contains("run"), "{table}");
    let _ = quill(&["plot", "run", "--out", "x.png"], dir.path());
    let line = error_line(&quill(&["sample", "--checkpoint", "run/last"], dir.path()));
    assert!(
        line.contains("state.json: not a regular file (a device)"),
        "{line}"
    );
    assert!(started.elapsed().as_secs() < 30);
}
