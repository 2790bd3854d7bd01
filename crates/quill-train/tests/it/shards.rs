//! The sharded step on the CPU (`Trainer::shards`): each micro-batch split by rows into
//! shards whose forward and backward passes run in parallel must take the same step
//! as the whole micro-batch, the same way on every run.

use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;
use quill_data::Dataset;
use quill_model::ModelOverrides;
use quill_model::params::export;
use quill_train::{Batch, RunConfig, TrainError, Trainer};

use crate::common;

use common::AB;

fn corpus() -> Dataset {
    Dataset::new(&common::corpus(), 0.1).unwrap()
}

/// The trainer tests' model with two layers, two micro-batches a step, no warmup.
fn config() -> RunConfig {
    common::tweak(common::config(), |c| {
        common::gpt(c).n_layer = 2;
        (c.train.grad_accum, c.train.warmup_iters, c.train.lr) = (2, 0, 1e-2);
    })
}

/// The losses of `steps` steps from the same initial weights and batches, at most
/// `max_shards` shards per micro-batch, and the weights after them.
fn train<B: burn::tensor::backend::AutodiffBackend>(
    config: &RunConfig,
    max_shards: usize,
    steps: usize,
) -> Result<(Vec<f32>, Vec<f32>, usize), TrainError> {
    let data = corpus();
    let device = Default::default();
    let model = config
        .model_for(data.tokenizer.vocab_size())
        .init::<B>(config.train.seed, &device)?;
    let mut trainer = Trainer::new(model, &config.train).with_max_shards(max_shards);
    let shards = trainer.shards(config.train.batch_size);
    let mut sampler = config.batch_sampler()?;
    let mut losses = Vec::new();
    for _ in 0..steps {
        let accum = config.train.grad_accum;
        let batch = Batch::sample(&mut sampler, &data.split.train, accum, &device)?;
        losses.push(trainer.step(&batch)?.loss);
    }
    let weights = export(trainer.model())
        .into_iter()
        .flat_map(|t| t.values)
        .collect();
    Ok((losses, weights, shards))
}

#[test]
fn a_sharded_step_takes_the_step_of_the_whole_micro_batch() {
    let config = config();
    let (whole, whole_weights, one) = train::<AB>(&config, 1, 4).unwrap();
    let (sharded, sharded_weights, four) = train::<AB>(&config, 4, 4).unwrap();
    assert_eq!((one, four), (1, 4));
    // The first loss is that of the same weights on the same rows: only the order of
    // the sums differs. Each later one follows an update from the averaged gradients.
    for (step, (a, b)) in whole.iter().zip(&sharded).enumerate() {
        assert!((a - b).abs() < 2e-5, "step {step}: whole {a}, sharded {b}");
    }
    assert!(whole[3] < whole[0] - 0.1, "the steps train: {whole:?}");
    let worst = whole_weights
        .iter()
        .zip(&sharded_weights)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights differ by up to {worst}");
}

#[test]
fn sharded_steps_are_the_same_on_every_run() {
    let config = config();
    let (losses, weights, shards) = train::<AB>(&config, 2, 3).unwrap();
    let (again, weights_again, _) = train::<AB>(&config, 2, 3).unwrap();
    assert_eq!(shards, 2);
    assert_eq!(losses, again);
    assert!(
        weights
            .iter()
            .zip(&weights_again)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn the_shard_count_divides_the_rows_and_needs_the_cpu_kernels_and_no_dropout() {
    let data = corpus();
    let config = config();
    let vocab = data.tokenizer.vocab_size();
    let device = Default::default();
    let model = config.model_for(vocab).init::<AB>(1, &device).unwrap();
    let trainer = Trainer::new(model, &config.train).with_max_shards(4);
    assert_eq!(
        [1, 2, 3, 4, 6, 7, 12].map(|rows| trainer.shards(rows)),
        [1, 2, 3, 4, 3, 1, 4]
    );
    // Dropout masks come from one generator: shards would draw them in any order. The
    // model's dropout decides, whatever the training settings say.
    let mut dropout = config.clone();
    dropout.model.apply(&ModelOverrides {
        dropout: Some(0.1),
        ..Default::default()
    });
    let model = dropout.model_for(vocab).init::<AB>(1, &device).unwrap();
    assert_eq!(
        Trainer::new(model, &config.train)
            .with_max_shards(4)
            .shards(4),
        1
    );
    // Other backends run each micro-batch whole.
    type Other = Autodiff<NdArray>;
    let model = config
        .model_for(vocab)
        .init::<Other>(1, &Default::default())
        .unwrap();
    assert_eq!(
        Trainer::new(model, &config.train)
            .with_max_shards(4)
            .shards(4),
        1
    );
}
