//! `quill eval`: train and val loss of a checkpoint on a corpus.

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use quill_train::{Checkpoint, Dataset, estimate_loss};

use crate::backend::{self, Job};
use crate::cli::EvalArgs;

pub fn run(args: EvalArgs) -> Result<()> {
    let target = backend::prepare(args.target.device, args.target.dtype)?;
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let eval_iters = args
        .eval_iters
        .unwrap_or(checkpoint.config.train.final_eval_iters);
    anyhow::ensure!(eval_iters > 0, "--eval-iters must be at least 1");
    let corpus = super::load_corpus(&args.source)?;
    let train = &checkpoint.config.train;
    let dataset = Dataset::with_tokenizer(
        &corpus.text,
        checkpoint.tokenizer.clone(),
        train.val_fraction,
    )?;
    dataset.split.check_block_size(train.block_size)?;
    let (train_loss, val_loss) = target.run(EvalJob {
        checkpoint,
        dataset,
        eval_iters,
        seed: args.seed,
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "train_loss": train_loss, "val_loss": val_loss })
        );
    } else {
        println!("train loss {train_loss:.4}, val loss {val_loss:.4} ({eval_iters} batches each)");
    }
    Ok(())
}

struct EvalJob {
    checkpoint: Checkpoint,
    dataset: Dataset,
    eval_iters: usize,
    seed: u64,
}

impl Job for EvalJob {
    type Output = (f32, f32);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(f32, f32)> {
        let model = self.checkpoint.model::<B::InnerBackend>(&device)?;
        let batch = self.checkpoint.config.train.batch_size;
        let loss = |data: &[u32]| estimate_loss(&model, data, batch, self.eval_iters, self.seed);
        Ok((
            loss(&self.dataset.split.train)?,
            loss(&self.dataset.split.val)?,
        ))
    }
}
