//! Train and val loss of a model, without dropout or autodiff graph: what the trainer
//! reports at each evaluation and what `quill eval` prints.

use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use quill_data::{BatchSampler, Split, TokenSource};
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
/// `seed`.
pub fn estimate_loss<B: Backend>(
    model: &LanguageModel<B>,
    data: &(impl TokenSource + ?Sized),
    batch_size: usize,
    eval_iters: usize,
    seed: u64,
) -> Result<f32, TrainError> {
    estimate_loss_rows(model, data, batch_size, 0..batch_size, eval_iters, seed)
}

/// [`estimate_loss`] on the `rows` of each batch only: one rank's share of a
/// data-parallel evaluation (the ranks' means, averaged, are the whole batches' mean).
pub fn estimate_loss_rows<B: Backend>(
    model: &LanguageModel<B>,
    data: &(impl TokenSource + ?Sized),
    batch_size: usize,
    rows: std::ops::Range<usize>,
    eval_iters: usize,
    seed: u64,
) -> Result<f32, TrainError> {
    let mut sampler = BatchSampler::new(batch_size, model.block_size(), seed)?;
    let device = model.device();
    let mut total = 0.0f64;
    for _ in 0..eval_iters {
        let (x, y) = sampler.sample_rows::<B>(data, rows.clone(), &device)?;
        total += model.loss(x, y)?.into_scalar().elem::<f64>();
    }
    Ok((total / eval_iters as f64) as f32)
}

/// [`estimate_loss`] on both splits, with the same `seed` (nanoGPT's `estimate_loss`).
pub fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    split: &Split,
    batch_size: usize,
    eval_iters: usize,
    seed: u64,
) -> Result<Losses, TrainError> {
    evaluate_rows(model, split, batch_size, 0..batch_size, eval_iters, seed)
}

/// [`evaluate`] on the `rows` of each batch (see [`estimate_loss_rows`]).
pub fn evaluate_rows<B: Backend>(
    model: &LanguageModel<B>,
    split: &Split,
    batch_size: usize,
    rows: std::ops::Range<usize>,
    eval_iters: usize,
    seed: u64,
) -> Result<Losses, TrainError> {
    let loss = |data: &quill_data::Tokens| {
        estimate_loss_rows(model, data, batch_size, rows.clone(), eval_iters, seed)
    };
    Ok(Losses {
        train: loss(&split.train)?,
        val: loss(&split.val)?,
    })
}
