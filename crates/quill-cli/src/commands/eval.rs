//! `quill eval`: train and val loss of a checkpoint on a corpus.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use quill_data::{Dataset, Shard};
use quill_model::WeightFormat;
use quill_train::{
    Checkpoint, Losses, MemoryEstimate, RunConfig, RunOverrides, Sources, TrainOverrides,
    evaluate_with,
};

use crate::backend::{self, Job};
use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> Result<()> {
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let dir = super::checkpoint_dir(&args.checkpoint, quill_train::Which::Best, "--checkpoint")?;
    let checkpoint = Checkpoint::load(&dir)?;
    anyhow::ensure!(
        args.eval_iters != Some(0),
        "--eval-iters must be at least 1"
    );
    // The checkpoint's settings through the chain every command uses; --eval-iters
    // stands for the evaluation after the last step.
    let flags = RunOverrides {
        train: TrainOverrides {
            final_eval_iters: args.eval_iters,
            ..Default::default()
        },
        ..Default::default()
    };
    let config = RunConfig::resolve(&Sources {
        resume: Some(&checkpoint),
        flags: Some(&flags),
        ..Default::default()
    })?;
    let (train, eval_iters) = (&config.train, config.train.final_eval_iters);
    // A batch of evaluation is a forward pass of batch_size sequences.
    target.check_memory(&MemoryEstimate::sampling(
        &checkpoint.config.model,
        train.batch_size,
        target.dtype_bytes(),
    ))?;
    let tokenizer = Some(&checkpoint.tokenizer);
    let spec = quill_data::TokenizerSpec::Char;
    let dataset = super::load_dataset(&args.source, tokenizer, spec, train.val_fraction)?.dataset;
    dataset.split.check_block_size(config.block_size())?;
    target.check_weights(args.weights.weights)?;
    let losses = target.run(EvalJob {
        weights: args.weights.weights,
        batch_size: train.batch_size,
        checkpoint,
        dataset,
        eval_iters,
        seed: args.seed,
    })?;
    let report = serde_json::json!({ "train_loss": losses.train, "val_loss": losses.val });
    super::print_report(args.json, &report, |_| {
        let (train, val) = (losses.train, losses.val);
        println!("train loss {train:.4}, val loss {val:.4} ({eval_iters} batches each)");
    })
}

struct EvalJob {
    weights: WeightFormat,
    batch_size: usize,
    checkpoint: Checkpoint,
    dataset: Dataset,
    eval_iters: usize,
    seed: u64,
}

impl Job for EvalJob {
    type Output = Losses;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Losses> {
        let model =
            (self.checkpoint.model::<B::InnerBackend>(&device)?).with_weights(self.weights)?;
        let (split, batch) = (&self.dataset.split, self.batch_size);
        let bar = crate::progress::batches_bar(2 * self.eval_iters);
        let losses = evaluate_with(
            &model,
            split,
            batch,
            Shard::WHOLE,
            self.eval_iters,
            self.seed,
            &mut |done, _| {
                bar.set_position(done as u64);
                std::ops::ControlFlow::Continue(())
            },
        );
        bar.finish_and_clear();
        Ok(losses?)
    }
}
