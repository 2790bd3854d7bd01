//! Train and val loss of a model, without dropout or autodiff graph: what the trainer
//! reports at each evaluation and what `quill eval` prints.

use burn::tensor::backend::Backend;
use quill_data::{BatchSampler, Shard, Split, TokenSource};
use quill_model::LanguageModel;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Mean losses on the two splits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Losses {
    /// On the training split.
    pub train: f32,
    /// On the validation split.
    pub val: f32,
}

/// Mean loss over `eval_iters` batches of `batch_size` blocks of `data`, drawn with
/// `seed`; with a `shard` of several ranks, this rank's rows of batches of
/// `ranks × batch_size` (the ranks' means, averaged, are the whole batches' mean).
pub fn estimate_loss<B: Backend>(
    model: &LanguageModel<B>,
    data: &(impl TokenSource + ?Sized),
    batch_size: usize,
    shard: Shard,
    eval_iters: usize,
    seed: u64,
) -> Result<f32, TrainError> {
    let mut sampler = BatchSampler::new(batch_size, model.block_size(), seed)?.with_shard(shard);
    let device = model.device();
    let mut total = 0.0f64;
    for _ in 0..eval_iters {
        let (x, y) = sampler.sample::<B>(data, &device)?;
        total += quill_model::ops::scalar(model.loss(x, y)?);
    }
    Ok((total / eval_iters as f64) as f32)
}

/// [`estimate_loss`] on both splits, with the same `seed` (nanoGPT's `estimate_loss`).
pub fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    split: &Split,
    batch_size: usize,
    shard: Shard,
    eval_iters: usize,
    seed: u64,
) -> Result<Losses, TrainError> {
    let loss =
        |data: &quill_data::Tokens| estimate_loss(model, data, batch_size, shard, eval_iters, seed);
    Ok(Losses {
        train: loss(&split.train)?,
        val: loss(&split.val)?,
    })
}
