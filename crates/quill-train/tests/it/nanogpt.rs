//! nanoGPT's checkpoints import: the fixtures of `scripts/nanogpt_fixture.py` (a tiny
//! character model trained by nanoGPT's own `model.py` and saved as its `train.py`
//! saves) give nanoGPT's logits, its greedy text and its AdamW state; files that are
//! not nanoGPT checkpoints, or that hold code, are one-line errors.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use burn_flex::Flex;
use quill_model::{SampleRequest, SamplingOptions, sample_texts};
use quill_train::Checkpoint;
use quill_train::nanogpt::NanoGpt;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nanogpt")
        .join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn import(ckpt: &str) -> Checkpoint {
    let meta = fixture("meta.pkl");
    NanoGpt::read(&fixture(ckpt), Some(&meta))
        .unwrap()
        .import::<Flex>(&Default::default())
        .unwrap()
}

#[test]
fn logits_and_greedy_text_are_nanogpts() {
    let expected = expected();
    let checkpoint = import("ckpt.pt");
    let device = Default::default();
    let model = checkpoint.model::<Flex>(&device).unwrap();

    let ids: Vec<i64> = expected["window_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let t = ids.len();
    let input = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
    let logits = model
        .forward(input)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let want: Vec<f64> = expected["window_logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(logits.len(), want.len());
    let worst = logits
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "logits differ by {worst}");
    eprintln!("largest logit difference from nanoGPT: {worst:.2e}");

    let request = SampleRequest {
        prompt: expected["prompt"].as_str().unwrap().to_string(),
        max_new_tokens: 100,
        num_samples: 1,
        options: SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        },
        stop: None,
    };
    let text = sample_texts(&model, &checkpoint.tokenizer, &request, |_, _| {}).unwrap();
    assert_eq!(text[0], expected["greedy"].as_str().unwrap());
}

#[test]
fn adamw_state_and_progress_come_along() {
    let expected = expected();
    let checkpoint = import("ckpt.pt");
    assert_eq!(
        checkpoint.state.iter as u64,
        expected["iter_num"].as_u64().unwrap()
    );
    assert_eq!(
        checkpoint.state.optimizer_steps,
        expected["optimizer_step"].as_u64().unwrap()
    );
    let best = checkpoint.state.best_val_loss.unwrap() as f64;
    assert!((best - expected["best_val_loss"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(checkpoint.tokenizer.name(), "char");
    let train = &checkpoint.config.train;
    assert_eq!(
        (train.batch_size, train.max_iters, train.warmup_iters),
        (8, 400, 20)
    );
    assert_eq!((train.lr, train.min_lr, train.beta2), (5e-3, 5e-4, 0.99));

    // Every parameter's moments, the first values of PyTorch's layout, found where quill
    // keeps them (Linear weights `[in, out]`).
    let moments = expected["moments"].as_object().unwrap();
    assert_eq!(checkpoint.optimizer.len(), 2 * moments.len());
    for (name, values) in moments {
        let weight = &checkpoint.weights[name];
        for moment in ["exp_avg", "exp_avg_sq"] {
            let saved = &checkpoint.optimizer[&format!("{moment}.{name}")].values;
            for (k, want) in values[moment].as_array().unwrap().iter().enumerate() {
                let at = match (name.contains(".c_"), weight.shape.as_slice()) {
                    (true, &[rows, cols]) => (k % cols) * rows + k / cols,
                    _ => k,
                };
                assert_eq!(
                    saved[at],
                    want.as_f64().unwrap() as f32,
                    "{moment}.{name}[{k}]"
                );
            }
        }
    }
}

#[test]
fn a_compiled_models_names_import_too() {
    let plain = import("ckpt.pt");
    let compiled = import("ckpt-compiled.pt");
    assert_eq!(plain.weights, compiled.weights);
    assert_eq!(plain.optimizer, compiled.optimizer);
}

#[test]
fn foreign_files_are_one_line_errors() {
    let meta = fixture("meta.pkl");
    let read =
        |ckpt: &Path, meta: Option<&Path>| NanoGpt::read(ckpt, meta).unwrap_err().to_string();

    let evil = read(&fixture("evil.pt"), Some(&meta));
    assert!(evil.contains("posix.system"), "{evil}");
    assert!(
        evil.contains("quill reads only tensors and plain values"),
        "{evil}"
    );
    let bare = read(&fixture("not-nanogpt.pt"), Some(&meta));
    assert!(bare.contains("not a nanoGPT checkpoint"), "{bare}");
    let no_meta = read(&fixture("ckpt.pt"), None);
    assert!(no_meta.contains("needs its meta.pkl (--meta"), "{no_meta}");
    // A plain pickle (a meta.pkl) given as the checkpoint: read, and not nanoGPT's.
    let not_torch = read(&meta, None);
    assert!(
        not_torch.contains("not a nanoGPT checkpoint: it has no \"model\""),
        "{not_torch}"
    );

    // A meta.pkl whose unpickling would call os.system("echo"): refused, not run.
    let dir = tempfile::tempdir().unwrap();
    let evil_meta = dir.path().join("meta.pkl");
    std::fs::write(
        &evil_meta,
        b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.",
    )
    .unwrap();
    let err = read(&fixture("ckpt.pt"), Some(&evil_meta));
    assert!(err.contains("not a meta.pkl quill can read"), "{err}");
    for err in [evil, bare, no_meta, not_torch, err] {
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
