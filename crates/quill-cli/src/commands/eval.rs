//! `quill eval`: train and val loss of a checkpoint on a corpus.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use quill_data::{Dataset, Shard};
use quill_train::{Losses, RunConfig, RunOverrides, Sources, TrainOverrides, evaluate_with};

use crate::backend::{self, Job};
use crate::cli::EvalArgs;

use super::prepared::PreparedModel;

pub fn run(args: EvalArgs) -> Result<()> {
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let prepared = PreparedModel::open(&args.checkpoint, args.weights.weights)?;
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
        resume: Some(&prepared.checkpoint),
        flags: Some(&flags),
        ..Default::default()
    })?;
    let (train, eval_iters) = (&config.train, config.train.final_eval_iters);
    // A batch of evaluation is a forward pass of batch_size sequences.
    prepared.check(&target, train.batch_size)?;
    let tokenizer = Some(&prepared.checkpoint.tokenizer);
    let spec = quill_data::TokenizerSpec::Char;
    let dataset =
        super::load_dataset(&(&args.source).into(), tokenizer, spec, train.val_fraction)?.dataset;
    dataset.split.check_block_size(config.block_size())?;
    let losses = target.run(EvalJob {
        batch_size: train.batch_size,
        prepared,
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
    batch_size: usize,
    prepared: PreparedModel,
    dataset: Dataset,
    eval_iters: usize,
    seed: u64,
}

impl Job for EvalJob {
    type Output = Losses;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Losses> {
        let model = self.prepared.model::<B::InnerBackend>(&device)?;
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
