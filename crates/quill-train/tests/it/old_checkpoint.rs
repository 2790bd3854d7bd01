//! A checkpoint written by quill before the model declared its own parameter names
//! (`tests/fixtures/checkpoint-v1`: a 1-layer GPT with biases and an untied head,
//! trained 2 steps on `fixtures/shakespeare-lines.txt` by
//! `quill train --device ndarray --data … --n-layer 1 --n-head 2 --n-embd 16
//! --block-size 8 --bias true --tie-weights false --max-iters 2 --eval-interval 1
//! --eval-iters 1 --final-eval-iters 1 --batch-size 2`) must load and resume exactly
//! as it did then: the figures below were measured with that version.

use std::path::Path;

use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;
use quill_data::Dataset;
use quill_data::Shard;
use quill_model::params::export;
use quill_train::{Checkpoint, Run, RunDir, estimate_loss};

fn fixture() -> (Checkpoint, Dataset) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let checkpoint = Checkpoint::load(&dir.join("checkpoint-v1")).unwrap();
    let text = std::fs::read_to_string(dir.join("shakespeare-lines.txt")).unwrap();
    let dataset = Dataset::with_tokenizer(&text, checkpoint.tokenizer.clone(), 0.1).unwrap();
    (checkpoint, dataset)
}

#[test]
fn a_first_format_checkpoint_loads_with_the_same_weights_and_loss() {
    let (checkpoint, dataset) = fixture();
    let model = checkpoint.model::<NdArray>(&Default::default()).unwrap();
    // Every tensor of the file comes back under the same name, bit for bit.
    let exported = export(&model);
    assert_eq!(exported.len(), checkpoint.weights.len());
    for tensor in &exported {
        assert_eq!(
            Some(tensor),
            checkpoint.weights.get(&tensor.name),
            "{}",
            tensor.name
        );
    }
    let loss = estimate_loss(&model, &dataset.split.val, 2, Shard::WHOLE, 3, 7).unwrap();
    assert_eq!(loss, 3.39825, "measured with the version that wrote it");
}

#[test]
fn a_first_format_checkpoint_resumes_exactly() {
    let (checkpoint, dataset) = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = checkpoint.config.clone();
    config.train.max_iters = 4;
    config.train.sample_tokens = 0;
    let run = Run::new(config, &dataset)
        .with_out(RunDir::open(tmp.path()).unwrap())
        .with_resume(checkpoint);
    let outcome =
        quill_train::train::<Autodiff<NdArray>>(run, &Default::default(), &mut ()).unwrap();
    let quill_train::Outcome::Finished(record) = outcome else {
        panic!("{outcome:?}")
    };
    // `quill train --resume … --max-iters 4` printed these with the old version.
    assert_eq!(
        (record.iter, record.train_loss, record.val_loss),
        (4, 3.437004, 3.4275784)
    );
}

/// Checkpoints from before subword tokenizers (a `vocab.json`, no `tokenizer.json`) are
/// character checkpoints, and sample as before: one character per token.
#[test]
fn a_character_checkpoint_from_before_subword_tokens_samples() {
    let (checkpoint, _) = fixture();
    assert_eq!(checkpoint.tokenizer.name(), "char");
    let model = checkpoint.model::<NdArray>(&Default::default()).unwrap();
    let request = quill_model::SampleRequest::from_newline(40, 3);
    let sample =
        |request| quill_model::sample_texts(&model, &checkpoint.tokenizer, request, |_, _| {});
    let text = sample(&request).unwrap();
    assert_eq!(text, sample(&request).unwrap());
    assert_eq!(text[0].chars().count(), 40);
    let vocab = checkpoint.tokenizer.as_char().unwrap();
    assert!(text[0].chars().all(|c| vocab.id(c).is_some()), "{text:?}");
}

/// A model whose weights were converted for inference (`--weights q8`) is never written
/// back: capturing it as a checkpoint is an error; the model as loaded captures as it
/// was saved.
#[test]
fn weights_converted_for_inference_are_never_captured() {
    use burn_flex::Flex;
    use quill_model::WeightFormat;
    let (checkpoint, _) = fixture();
    let capture = |model: &quill_model::LanguageModel<Flex>| {
        Checkpoint::capture(
            checkpoint.config.clone(),
            checkpoint.tokenizer.clone(),
            model,
            Vec::new(),
            checkpoint.state.clone(),
        )
    };
    let model = checkpoint.model::<Flex>(&Default::default()).unwrap();
    assert_eq!(capture(&model).unwrap().weights, checkpoint.weights);
    for format in [WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8] {
        let model = checkpoint.model::<Flex>(&Default::default()).unwrap();
        let err = capture(&model.with_weights(format).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid configuration: a model with {format} weights for inference is not saved: load the checkpoint again to train or export it"
            )
        );
    }
}
