//! Train and val loss of a model, without dropout or autodiff graph: what the trainer
//! reports at each evaluation and what `quill eval` prints.

use std::ops::ControlFlow;

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
    estimate_loss_with(
        model,
        data,
        batch_size,
        shard,
        eval_iters,
        seed,
        &mut |_| ControlFlow::Continue(()),
    )
}

/// [`estimate_loss`], calling `on_batch(batches_done)` after each batch (a progress
/// bar's hook); when it breaks, the estimate stops with [`TrainError::Interrupted`].
pub fn estimate_loss_with<B: Backend>(
    model: &LanguageModel<B>,
    data: &(impl TokenSource + ?Sized),
    batch_size: usize,
    shard: Shard,
    eval_iters: usize,
    seed: u64,
    on_batch: &mut dyn FnMut(usize) -> ControlFlow<()>,
) -> Result<f32, TrainError> {
    let mut sampler = BatchSampler::new(batch_size, model.block_size(), seed)?.with_shard(shard);
    let device = model.device();
    let mut total = 0.0f64;
    for done in 1..=eval_iters {
        let (x, y) = sampler.sample::<B>(data, &device)?;
        total += quill_model::ops::scalar(model.loss(x, y)?);
        if on_batch(done).is_break() {
            return Err(TrainError::Interrupted);
        }
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
    evaluate_with(
        model,
        split,
        batch_size,
        shard,
        eval_iters,
        seed,
        &mut |_, _| ControlFlow::Continue(()),
    )
}

/// [`evaluate`], calling `progress(batches_done, batches_in_all)` after each batch of
/// either split (`2 × eval_iters` in all); when it breaks, the evaluation stops with
/// [`TrainError::Interrupted`].
pub fn evaluate_with<B: Backend>(
    model: &LanguageModel<B>,
    split: &Split,
    batch_size: usize,
    shard: Shard,
    eval_iters: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Losses, TrainError> {
    let all = 2 * eval_iters;
    let train = estimate_loss_with(
        model,
        &split.train,
        batch_size,
        shard,
        eval_iters,
        seed,
        &mut |d| progress(d, all),
    )?;
    let val = estimate_loss_with(
        model,
        &split.val,
        batch_size,
        shard,
        eval_iters,
        seed,
        &mut |d| progress(eval_iters + d, all),
    )?;
    Ok(Losses { train, val })
}
