//! `quill eval`: train and val loss of a checkpoint on a corpus.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use quill_data::Dataset;
use quill_train::{Checkpoint, Losses, MemoryEstimate, evaluate};

use crate::backend::{self, Job};
use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> Result<()> {
    let target = backend::prepare(args.target.one()?, args.target.dtype)?;
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let eval_iters = args
        .eval_iters
        .unwrap_or(checkpoint.config.train.final_eval_iters);
    anyhow::ensure!(eval_iters > 0, "--eval-iters must be at least 1");
    let train = &checkpoint.config.train;
    // A batch of evaluation is a forward pass of batch_size sequences.
    target.check_memory(&MemoryEstimate::sampling(
        &checkpoint.config.model,
        train.batch_size,
        target.dtype_bytes(),
    ))?;
    let tokenizer = Some(&checkpoint.tokenizer);
    let spec = quill_data::TokenizerSpec::Char;
    let dataset = super::load_dataset(&args.source, tokenizer, spec, train.val_fraction)?.dataset;
    dataset.split.check_block_size(train.block_size)?;
    let losses = target.run(EvalJob {
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
    checkpoint: Checkpoint,
    dataset: Dataset,
    eval_iters: usize,
    seed: u64,
}

impl Job for EvalJob {
    type Output = Losses;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Losses> {
        let model = self.checkpoint.model::<B::InnerBackend>(&device)?;
        let batch = self.checkpoint.config.train.batch_size;
        let split = &self.dataset.split;
        Ok(evaluate(&model, split, batch, self.eval_iters, self.seed)?)
    }
}
