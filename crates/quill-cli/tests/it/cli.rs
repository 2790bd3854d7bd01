//! The `quill` binary end to end, on a small corpus and a tiny model.

use std::fs;
use std::path::Path;

use crate::common;

#[cfg(feature = "wgpu")]
use common::quill_with_env;
use common::{TINY_MODEL, error_line, quill, stdout};

/// The tiny model's schedule (the model is `common::TINY_MODEL`).
const TINY: &[&str] = &[
    "--eval-interval",
    "3",
    "--eval-iters",
    "1",
    "--final-eval-iters",
    "2",
    "--sample-tokens",
    "20",
];

fn setup() -> tempfile::TempDir {
    common::verse_dir()
}

fn train(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["train", "--data", "corpus.txt", "--out", "run"];
    args.extend_from_slice(TINY_MODEL);
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    stdout(&quill(&args, dir))
}

#[test]
fn data_prints_the_notebook_summary_and_json() {
    let dir = setup();
    let text = stdout(&quill(&["data", "--data", "corpus.txt"], dir.path()));
    assert!(
        text.starts_with(
            "length of dataset in characters: 4100\nfirst 100 characters:\nFirst Citizen:"
        ),
        "{text}"
    );
    assert!(text.contains("vocab_size: 30\n"), "{text}");
    assert!(
        text.contains("train tokens: 3690, val tokens: 410"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&quill(
        &["data", "--data", "corpus.txt", "--json"],
        dir.path(),
    )))
    .unwrap();
    assert_eq!(json["n_chars"], 4100);
    assert_eq!(json["vocab_size"], 30);
    assert_eq!(json["vocab"], "\n ,.:ABCFSacdefhiklmnoprstuwyz");
    assert_eq!(
        (json["train_tokens"].as_u64(), json["val_tokens"].as_u64()),
        (Some(3690), Some(410))
    );
}

#[test]
fn train_sample_eval_round_trip() {
    let dir = setup();
    let out = train(dir.path(), &["--max-iters", "6"]);
    assert!(
        out.contains("# effective configuration (preset cpu)\nmodel = \"gpt\"\nn_layer = 1\n"),
        "{out}"
    );
    assert!(
        out.contains("step 0: train loss")
            && out.contains("step 3: train loss")
            && out.contains("step 6: train loss"),
        "{out}"
    );
    assert!(out.contains("done: 6 iterations"), "{out}");
    assert!(out.contains("--- a sample from run/best ---"), "{out}");
    assert!(out.contains("\n# memory: about "), "{out}");
    for file in [
        "run/metrics.jsonl",
        "run/steps.jsonl",
        "run/loss.svg",
        "run/loss.png",
        "run/last/model.safetensors",
        "run/best/vocab.json",
    ] {
        assert!(dir.path().join(file).is_file(), "{file}");
    }

    let sample = |seed: &str| {
        stdout(&quill(
            &[
                "sample",
                "--checkpoint",
                "run/best",
                "--prompt",
                "Speak",
                "--max-new-tokens",
                "30",
                "--seed",
                seed,
            ],
            dir.path(),
        ))
    };
    let a = sample("1");
    assert_eq!(a, sample("1"));
    assert_ne!(a, sample("2"));
    assert!(
        a.starts_with("Speak") && a.trim_end_matches('\n').chars().count() == 35,
        "{a:?}"
    );

    // Beyond the block (16), without the cache: the same text.
    let long = |extra: &[&str]| {
        let mut args = vec![
            "sample",
            "--checkpoint",
            "run/best",
            "--max-new-tokens",
            "40",
            "--seed",
            "3",
        ];
        args.extend_from_slice(extra);
        stdout(&quill(&args, dir.path()))
    };
    assert_eq!(long(&[]), long(&["--no-kv-cache"]));

    let batch = stdout(&quill(
        &[
            "sample",
            "--checkpoint",
            "run/best",
            "--num-samples",
            "3",
            "--max-new-tokens",
            "10",
            "--prompt",
            "A",
        ],
        dir.path(),
    ));
    assert_eq!(batch.matches("---------------").count(), 3, "{batch}");

    let eval = |seed: &str| {
        let json = stdout(&quill(
            &[
                "eval",
                "--checkpoint",
                "run/best",
                "--data",
                "corpus.txt",
                "--eval-iters",
                "3",
                "--seed",
                seed,
                "--json",
            ],
            dir.path(),
        ));
        serde_json::from_str::<serde_json::Value>(&json).unwrap()
    };
    let e = eval("5");
    assert!(e["train_loss"].as_f64().unwrap() > 0.0 && e["val_loss"].as_f64().unwrap() > 0.0);
    assert_eq!(e, eval("5"));
    assert_ne!(e, eval("6"));
}

#[test]
fn resume_and_config_files() {
    let dir = setup();
    fs::write(dir.path().join("more.toml"), "max_iters = 9\n").unwrap();
    train(dir.path(), &["--max-iters", "3"]);
    let out = stdout(&quill(
        &[
            "train",
            "--resume",
            "run/last",
            "--data",
            "corpus.txt",
            "--config",
            "more.toml",
        ],
        dir.path(),
    ));
    assert!(
        out.contains("resumed from run/last")
            && out.contains("max_iters = 9")
            && out.contains("done: 9 iterations"),
        "{out}"
    );
    let metrics = fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let iters: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["iter"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(iters, vec![0, 3, 6, 9]);

    // Resumed into another directory, where the loss never beats the checkpoint's best:
    // there is no best/ there, and the final sample comes from last/.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../quill-train/tests/fixtures");
    let (checkpoint, text) = (
        fixtures.join("checkpoint-v1"),
        fixtures.join("shakespeare-lines.txt"),
    );
    let args = [
        "train",
        "--resume",
        checkpoint.to_str().unwrap(),
        "--data",
        text.to_str().unwrap(),
    ];
    let out = stdout(&quill(
        &[&args[..], &["--max-iters", "4", "--out", "elsewhere"]].concat(),
        dir.path(),
    ));
    assert!(
        out.contains("--- a sample from elsewhere/last ---"),
        "{out}"
    );
}

/// The weights of the checkpoint `dir`, as f32 values.
fn checkpoint_weights(dir: &Path) -> Vec<f32> {
    let bytes = fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut values = Vec::new();
    for (_, view) in file.tensors() {
        let data = view.data().chunks_exact(4);
        values.extend(data.map(|b| f32::from_le_bytes(b.try_into().unwrap())));
    }
    values
}

/// The JSON lines of `path`.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn sixteen_bit_floats_train_on_the_cpu_with_f32_master_weights() {
    for (dtype, extra, saved_16_bit) in [
        ("bf16", &[][..], false),
        ("bf16", &["--master-weights", "false"][..], true),
        ("f16", &[][..], false),
    ] {
        let dir = setup();
        let mut args = vec!["--dtype", dtype, "--max-iters", "3"];
        args.extend_from_slice(extra);
        train(dir.path(), &args);
        let run = dir.path().join("run");
        let weights = checkpoint_weights(&run.join("last"));
        let exact = |v: &f32| match dtype {
            "bf16" => burn::tensor::bf16::from_f32(*v).to_f32() == *v,
            _ => burn::tensor::f16::from_f32(*v).to_f32() == *v,
        };
        let all_16_bit = weights.iter().all(exact);
        // Checkpoints hold the f32 master copies, unless there are none.
        assert_eq!(all_16_bit, saved_16_bit, "{dtype} {extra:?}");
        // f16 scales the loss; bf16 needs no scale.
        let steps = json_lines(&run.join("steps.jsonl"));
        assert_eq!(steps.len(), 3);
        for step in &steps {
            assert_eq!(
                step["loss_scale"].as_f64(),
                (dtype == "f16").then_some(65_536.0)
            );
        }
        let sample = quill(
            &[
                "sample",
                "--checkpoint",
                "run/last",
                "--dtype",
                dtype,
                "--max-new-tokens",
                "5",
            ],
            dir.path(),
        );
        assert!(sample.status.success(), "{}", error_line(&sample));
    }
    let dir = setup();
    let out = quill(
        &[
            "train",
            "--data",
            "corpus.txt",
            "--dtype",
            "f16",
            "--emulate-bf16",
            "true",
        ],
        dir.path(),
    );
    assert!(
        error_line(&out).contains("emulate_bf16 rounds f32 parameters to bf16"),
        "{}",
        error_line(&out)
    );
}

#[test]
fn bad_input_gets_one_error_line() {
    let dir = setup();
    let e = |args: &[&str]| error_line(&quill(args, dir.path()));
    assert_eq!(
        e(&["data", "--data", "missing.txt"]),
        "error: corpus not found: missing.txt"
    );
    // What clap rejects is one line too, with its tip.
    let out = quill(&["train", "--nope"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: unexpected argument '--nope' found (see --help)\n"
    );
    assert_eq!(
        e(&["train", "--lr", "fast"]),
        "error: invalid value 'fast' for '--lr <LR>': invalid float literal (see --help)"
    );
    fs::write(dir.path().join("binary.txt"), b"ok\xff").unwrap();
    assert_eq!(
        e(&["data", "--data", "binary.txt"]),
        "error: binary.txt: not valid UTF-8 at byte offset 2"
    );
    assert!(
        e(&["train", "--preset", "nope", "--data", "corpus.txt"])
            .contains("unknown preset \"nope\"")
    );
    assert!(
        e(&["train", "--data", "corpus.txt", "--n-head", "3"])
            .contains("n_embd (128) must be divisible by n_head (3)")
    );
    // Backends and devices that are not there (which depends on the features compiled in).
    let train_on = |device: &str, dtype: &str| {
        e(&[
            "train",
            "--data",
            "corpus.txt",
            "--device",
            device,
            "--dtype",
            dtype,
        ])
    };
    if cfg!(feature = "wgpu") {
        assert!(train_on("wgpu:7", "f32").contains("no discrete GPU 7"));
    } else {
        assert!(train_on("wgpu", "f32").contains("--features wgpu"));
    }
    if cfg!(feature = "cuda") {
        assert!(train_on("cuda:99", "f32").contains("CUDA"));
    } else {
        assert!(train_on("cuda", "bf16").contains("--features cuda"));
    }
    assert!(train_on("ndarray", "bf16").contains("--dtype bf16 is not supported on cpu (ndarray"));
    // parity names a missing device at once, before its CPU reference run.
    let missing = if cfg!(feature = "cuda") {
        "cuda:99"
    } else {
        "cuda"
    };
    let out = quill(
        &["parity", "--data", "corpus.txt", "--device", missing],
        dir.path(),
    );
    assert!(error_line(&out).contains("cuda"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("device: cpu"), "{stderr}");
    assert!(
        e(&["train", "--data", "corpus.txt", "--block-size", "1000"])
            .contains("the val split has 410 tokens, but block_size 1000 needs at least 1001")
    );
    fs::write(dir.path().join("bad.toml"), "n_layers = 2").unwrap();
    assert!(e(&["train", "--data", "corpus.txt", "--config", "bad.toml"]).contains("n_layers"));
    assert!(
        e(&["sample", "--checkpoint", "nowhere"])
            .contains("nowhere: not a valid quill checkpoint: no such directory")
    );

    train(dir.path(), &["--max-iters", "1"]);
    assert!(
        e(&["sample", "--checkpoint", "run/last", "--prompt", "Speak!"])
            .ends_with("character '!' at position 5 is not in the vocabulary")
    );
    assert!(
        e(&["sample", "--checkpoint", "run/last", "--temperature=-1"])
            .contains("temperature must be")
    );
    fs::write(dir.path().join("other.txt"), "a different corpus entirely").unwrap();
    assert!(
        e(&["eval", "--checkpoint", "run/last", "--data", "other.txt"])
            .contains("differs from the checkpoint's (30 characters)")
    );
    fs::write(dir.path().join("run/last/model.safetensors"), b"garbage").unwrap();
    assert!(
        e(&["eval", "--checkpoint", "run/last", "--data", "corpus.txt"])
            .contains("not a valid quill checkpoint: model.safetensors")
    );
}

/// `--weights bf16|f16|q8` samples, evaluates and benchmarks a checkpoint with its
/// matrices stored narrower, converted at load and never written back: the checkpoint's
/// files are byte for byte what training wrote. `--weights f32` is the default, bit for
/// bit; a narrow format off the f32 CPU path is one error line.
#[test]
fn narrow_weights_leave_the_checkpoint_as_it_was() {
    let dir = setup();
    // n_embd 32: every block matrix has rows of a multiple of 32, so q8 converts them.
    let mut args = vec![
        "train",
        "--data",
        "corpus.txt",
        "--out",
        "run",
        "--n-layer",
        "1",
    ];
    args.extend(["--n-head", "2", "--n-embd", "32", "--block-size", "16"]);
    args.extend(["--batch-size", "4", "--max-iters", "20"]);
    args.extend_from_slice(TINY);
    stdout(&quill(&args, dir.path()));
    let ck = dir.path().join("run/last");
    let files = |dir: &Path| {
        let mut all: Vec<(String, Vec<u8>)> = (fs::read_dir(dir).unwrap())
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
            .collect();
        all.sort();
        all
    };
    let before = files(&ck);
    let greedy = |extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", "run/last", "--prompt", "Speak"];
        args.extend(["--temperature", "0", "--max-new-tokens", "40"]);
        args.extend_from_slice(extra);
        stdout(&quill(&args, dir.path()))
    };
    let plain = greedy(&[]);
    assert_eq!(greedy(&["--weights", "f32"]), plain);
    let eval = |weights: &str| {
        let args = ["eval", "--checkpoint", "run/last", "--data", "corpus.txt"];
        let out = stdout(&quill(
            &[&args[..], &["--json", "--weights", weights]].concat(),
            dir.path(),
        ));
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        report["val_loss"].as_f64().unwrap()
    };
    let f32_loss = eval("f32");
    for weights in ["bf16", "f16", "q8"] {
        let text = greedy(&["--weights", weights]);
        assert!(
            text.starts_with("Speak") && text.len() > 40,
            "{weights}: {text}"
        );
        let loss = eval(weights);
        assert!(
            (loss - f32_loss).abs() < 0.05,
            "{weights}: {loss} vs {f32_loss}"
        );
        let args = ["bench", "--checkpoint", "run/last", "--sample-tokens", "5"];
        let out = stdout(&quill(
            &[&args[..], &["--json", "--weights", weights]].concat(),
            dir.path(),
        ));
        let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        assert_eq!(report["weights"], weights);
        assert!(report["read_bandwidth_gb_s"].as_f64().unwrap() > 0.0);
        assert!(report["fraction_of_bound"].as_f64().unwrap() > 0.0);
    }
    assert!(files(&ck) == before, "the checkpoint changed");
    let out = quill(
        &[
            "sample",
            "--checkpoint",
            "run/last",
            "--weights",
            "q8",
            "--dtype",
            "bf16",
        ],
        dir.path(),
    );
    assert!(
        error_line(&out)
            .starts_with("error: --weights q8 runs on the CPU (--device cpu) with --dtype f32"),
        "{}",
        error_line(&out)
    );
}

#[test]
fn bench_reports_training_eval_and_sampling_speed_as_json() {
    let dir = setup();
    let out = stdout(&quill(
        &[
            "bench",
            "--preset",
            "cpu",
            "--data",
            "corpus.txt",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--eval-iters",
            "1",
            "--sample-tokens",
            "12",
            "--json",
        ],
        dir.path(),
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "train_tokens_per_s",
        "ms_per_iter",
        "first_step_s",
        "achieved_tflops",
        "eval_tokens_per_s",
        "peak_rss_mb",
        "sample_tokens_per_s",
        "sample_tokens_per_s_no_cache",
        "kv_cache_speedup",
    ] {
        assert!(json[key].as_f64().unwrap() > 0.0, "{key}: {json}");
    }
    // tokens/s and ms/iter describe the same steps: 12 x 64 tokens per step.
    let per_s = json["train_tokens_per_s"].as_f64().unwrap();
    let ms = json["ms_per_iter"].as_f64().unwrap();
    assert!((per_s * ms / 1e3 - 768.0).abs() < 1e-6, "{json}");
    // nanoGPT's 6N + 12·L·C·T for the cpu preset (no bias, tied) on this vocabulary.
    let text = fs::read_to_string(dir.path().join("corpus.txt")).unwrap();
    let v = text
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .len() as f64;
    let (l, c, t) = (4.0, 128.0, 64.0);
    let n = v * c + l * (12.0 * c * c + 2.0 * c) + c;
    assert_eq!(
        json["flops_per_token"].as_f64(),
        Some(6.0 * n + 12.0 * l * c * t)
    );
    // The loss of the first steps is about ln(vocab).
    let loss = json["mean_loss"].as_f64().unwrap();
    assert!((loss - v.ln()).abs() < 0.5, "{loss} vs ln {v}");
    assert_eq!(json["identical_tokens"], true);
    assert_eq!(
        (
            json["sample_new_tokens"].as_u64(),
            json["block_size"].as_u64(),
            json["iters"].as_u64(),
        ),
        (Some(12), Some(64), Some(2))
    );
    assert!(
        error_line(&quill(&["bench", "--preset", "gpt5"], dir.path())).contains("unknown preset")
    );
    assert!(
        error_line(&quill(
            &["bench", "--data", "corpus.txt", "--iters", "0"],
            dir.path()
        ))
        .contains("--iters")
    );
}

/// A machine without a Vulkan driver (the loader pointed at a file that does not exist):
/// the WGPU commands say so in one line, and `quill devices` lists no WGPU adapter.
#[cfg(feature = "wgpu")]
#[test]
fn without_a_vulkan_driver_wgpu_is_one_clean_error() {
    let dir = setup();
    let no_driver = [
        ("VK_ICD_FILENAMES", "/nonexistent/icd.json"),
        ("VK_DRIVER_FILES", "/nonexistent/icd.json"),
    ];
    let e = |args: &[&str]| error_line(&quill_with_env(args, dir.path(), &no_driver));
    let wanted = "error: no Vulkan adapter found (on Linux: apt-get install mesa-vulkan-drivers), or use --device cpu";
    for device in ["wgpu", "auto-wgpu"] {
        let device = device.trim_start_matches("auto-");
        assert_eq!(
            e(&["eval", "--device", device, "--checkpoint", "run/last"]),
            wanted
        );
    }
    assert_eq!(
        e(&["train", "--device", "wgpu", "--data", "corpus.txt"]),
        wanted
    );
    assert_eq!(
        e(&["sample", "--device", "wgpu", "--checkpoint", "run/last"]),
        wanted
    );
    assert_eq!(
        e(&["parity", "--device", "wgpu:cpu", "--data", "corpus.txt"]),
        "error: no software (CPU) Vulkan adapter found (on Linux: apt-get install mesa-vulkan-drivers), or use --device cpu"
    );
    let listed = stdout(&quill_with_env(&["devices"], dir.path(), &no_driver));
    assert!(!listed.contains("--device wgpu"), "{listed}");
    assert!(
        listed.contains("wgpu     no Vulkan adapter found"),
        "{listed}"
    );
    // `--device auto` falls back to the CPU.
    let auto = quill_with_env(
        &["eval", "--checkpoint", "nowhere", "--device", "auto"],
        dir.path(),
        &no_driver,
    );
    assert!(String::from_utf8_lossy(&auto.stderr).contains("device: cpu"));
}

/// A panic raised inside CubeCL while the device starts (here: asked, through CubeCL's
/// own variable, for a discrete GPU the machine lacks) is one line, not a backtrace.
#[cfg(feature = "wgpu")]
#[test]
fn a_panic_inside_the_gpu_runtime_is_one_clean_error() {
    let dir = setup();
    let out = quill_with_env(
        &["eval", "--device", "wgpu", "--checkpoint", "run/last"],
        dir.path(),
        &[("CUBECL_WGPU_DEFAULT_DEVICE", "DiscreteGpu(99)")],
    );
    let line = error_line(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    // Where there is no Vulkan driver at all, quill refuses before CubeCL starts.
    assert!(
        line.starts_with(
            "error: could not start wgpu (DefaultDevice): No Discrete GPU device found"
        ) || line.starts_with("error: no Vulkan adapter found"),
        "{line}"
    );
}

/// The device, the settings and the memory they need are checked before the corpus is
/// read or downloaded: nothing is fetched, no directory made, for a run that cannot start.
#[test]
fn settings_are_checked_before_any_data_is_read() {
    let dir = tempfile::tempdir().unwrap(); // no corpus: reading it would download it
    let e = |args: &[&str]| {
        let out = quill(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.to_lowercase().contains("download"), "{stderr}");
        error_line(&out)
    };
    let missing_device = if cfg!(feature = "cuda") {
        "cuda:99"
    } else {
        "cuda"
    };
    assert!(e(&["train", "--device", missing_device]).contains("cuda"));
    assert!(e(&["eval", "--device", missing_device, "--checkpoint", "x"]).contains("cuda"));
    assert!(e(&["bench", "--device", missing_device]).contains("cuda"));
    // Settings that would need terabytes: refused, naming the figure and the setting.
    let needs = |args: &[&str], lower: &str| {
        let line = e(&[&["train"], args].concat());
        assert!(line.starts_with("error: this run needs about "), "{line}");
        assert!(line.contains(" TiB of memory ("), "{line}");
        assert!(line.contains("but the machine has "), "{line}");
        assert!(line.ends_with(&format!("; lower {lower}")), "{line}");
    };
    needs(
        &["--block-size", "100000"],
        "block_size, batch_size or n_layer",
    );
    needs(
        &["--batch-size", "100000000"],
        "batch_size, block_size or n_layer",
    );
    needs(
        &["--n-layer", "100000"],
        "batch_size, block_size or n_layer",
    );
    needs(
        &["--n-embd", "1000000", "--n-head", "1"],
        "n_layer or n_embd",
    );
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing may be created: {left:?}");
}

#[test]
fn dry_run_prints_the_estimate_and_writes_nothing() {
    let dir = setup();
    let out = stdout(&quill(
        &["train", "--data", "corpus.txt", "--out", "run", "--dry-run"],
        dir.path(),
    ));
    assert!(
        out.contains("# effective configuration (preset cpu)"),
        "{out}"
    );
    assert!(
        out.contains("# memory: about ") && out.contains("attention scores "),
        "{out}"
    );
    assert!(out.contains("the machine has "), "{out}");
    assert!(
        out.ends_with("# dry run: nothing written; the run would write to run\n"),
        "{out}"
    );
    assert!(!dir.path().join("run").exists());
    // Sampling refuses a batch of samples the machine cannot hold.
    train(dir.path(), &["--max-iters", "1"]);
    let line = error_line(&quill(
        &[
            "sample",
            "--checkpoint",
            "run/last",
            "--num-samples",
            "1000000000",
        ],
        dir.path(),
    ));
    assert!(line.ends_with("; lower --num-samples"), "{line}");
}

/// kill -9 while a checkpoint is written leaves temporary entries; the next run in the
/// directory removes them, and puts back a checkpoint caught between its two renames.
#[test]
fn a_run_cleans_up_after_killed_writers() {
    let dir = setup();
    train(dir.path(), &["--max-iters", "3"]);
    let run = dir.path().join("run");
    // A writer killed while writing `last` (its temporary directory and a temporary
    // metrics file), and one killed between moving `best` aside and renaming the new
    // one in.
    fs::create_dir(run.join(".last.tmp-999999")).unwrap();
    fs::write(run.join(".last.tmp-999999/model.safetensors"), "half").unwrap();
    // What the writer of a directory puts in it first: the tag of what it writes.
    let partial = run.join(".last.tmp-999999/.quill-partial");
    fs::write(partial, "quill-checkpoint-v1").unwrap();
    fs::write(run.join(".metrics.jsonl.999999.tmp"), "{").unwrap();
    fs::rename(run.join("best"), run.join(".best.old-999998")).unwrap();
    // A user's directory of the same shape, without quill's marker: left alone.
    fs::create_dir(run.join(".best.tmp-999997")).unwrap();
    fs::write(run.join(".best.tmp-999997/mine.txt"), "mine").unwrap();
    let out = quill(
        &[
            "train",
            "--resume",
            "run/last",
            "--data",
            "corpus.txt",
            "--max-iters",
            "6",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    stdout(&out);
    assert!(stderr.contains("removed .last.tmp-999999"), "{stderr}");
    assert!(
        stderr.contains("restored best/ from .best.old-999998"),
        "{stderr}"
    );
    let mut names: Vec<String> = fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // One TensorBoard event file, rewritten on resume.
    let events = names.iter().filter(|n| n.contains("tfevents")).count();
    assert_eq!(events, 1, "{names:?}");
    names.retain(|n| !n.contains("tfevents"));
    assert_eq!(
        names,
        [
            ".best.tmp-999997",
            ".lock",
            ".quill-run.json",
            "best",
            "last",
            "loss.png",
            "loss.svg",
            "metrics.jsonl",
            "steps.jsonl"
        ]
    );
    for checkpoint in ["run/last", "run/best"] {
        stdout(&quill(
            &[
                "eval",
                "--checkpoint",
                checkpoint,
                "--data",
                "corpus.txt",
                "--eval-iters",
                "1",
            ],
            dir.path(),
        ));
    }
}

/// Help is written for people: no rustdoc link syntax, no Rust paths.
#[test]
fn help_text_is_plain_english() {
    let dir = setup();
    for command in [
        "",
        "data",
        "train",
        "sample",
        "eval",
        "bench",
        "devices",
        "parity",
        "data prepare",
        "import",
        "export",
        "launch",
        "serve",
        "runs",
        "plot",
    ] {
        let args: Vec<&str> = command.split_whitespace().chain(["--help"]).collect();
        let help = stdout(&quill(&args, dir.path()));
        for leak in ["`", "::", "Self"] {
            assert!(
                !help.contains(leak),
                "quill {command} --help shows {leak:?}:\n{help}"
            );
        }
    }
}
