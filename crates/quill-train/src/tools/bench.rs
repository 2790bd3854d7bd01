//! Benchmarks (measured by `quill bench`, never asserted in timed tests).
//!
//! [`bench_training`] times the training step the trainer runs (same batches, model,
//! AdamW and clipping), the evaluation forward pass, and reports nanoGPT's model FLOPs
//! per token; [`bench_sampling`] times generation with and without the KV cache;
//! [`bench_to_loss`] times training until the validation loss reaches a target.

use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::TokenSource;
use quill_data::{Dataset, Shard};
use quill_model::{LanguageModel, ModelConfig, SamplingOptions, generate};
use serde::Serialize;

use crate::evaluate::estimate_loss;
use crate::trainer::{Batch, Trainer};
use crate::{RunConfig, TrainError};

/// Training and evaluation speed of one configuration on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainBench {
    /// Seconds from nothing (before the model is initialised) to the end of the first
    /// optimizer step: the cold start, kernel compilation and autotuning included.
    pub first_step_s: f64,
    /// Untimed steps after the first, before timing starts.
    pub warmup_iters: usize,
    /// Timed steps.
    pub iters: usize,
    /// Mean wall time of a timed step, in milliseconds (device synchronised).
    pub ms_per_iter: f64,
    /// Training tokens (batch_size · block_size · grad_accum per step) per second.
    pub train_tokens_per_s: f64,
    /// Model FLOPs per trained token (forward and backward), nanoGPT's estimate
    /// `6·N + 12·n_layer·n_embd·block_size`, N the parameters without `wpe`.
    pub flops_per_token: f64,
    /// `flops_per_token · train_tokens_per_s`, in TFLOP/s.
    pub achieved_tflops: f64,
    /// Tokens per second of the evaluation forward pass (no autodiff, no dropout).
    pub eval_tokens_per_s: f64,
    /// The mean loss of the timed steps (a sanity check: about ln(vocab) at the start).
    pub mean_loss: f32,
    /// The shards each micro-batch ran as, in parallel ([`Trainer::shards`]).
    pub shards: usize,
    /// Milliseconds a step's TensorBoard event takes to write (its four scalars, and a
    /// flush every 250 steps, into a file in the system's temporary directory).
    pub tensorboard_ms_per_iter: f64,
}

/// The time to record one step in a TensorBoard event file, in milliseconds: the mean
/// over 5000 steps' events written as a run writes them.
pub fn tensorboard_ms_per_step() -> Result<f64, TrainError> {
    use crate::run::tensorboard::EventFile;
    let dir = std::env::temp_dir().join(format!("quill-bench-events-{}", std::process::id()));
    // Created here (an error if it exists), so the removal below takes only this.
    std::fs::create_dir(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let result = (|| {
        let mut events = EventFile::create(&dir)?;
        let n = 5000;
        let start = Instant::now();
        for iter in 1..=n {
            let x = iter as f64;
            events.scalars(
                iter,
                &[
                    ("train/loss", 4.0 / x),
                    ("train/lr", 1e-3),
                    ("train/grad_norm", 0.5 + 1.0 / x),
                    ("train/tokens_per_s", 25_000.0 + x),
                ],
            )?;
            if iter % 250 == 0 {
                events.flush()?;
            }
        }
        events.flush()?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / n as f64)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// nanoGPT's `estimate_mfu` numerator: FLOPs per token for a forward and backward pass.
/// `num_params` counts every parameter; the position table is subtracted here.
pub fn flops_per_token(model: &ModelConfig, num_params: usize) -> f64 {
    match model {
        ModelConfig::Gpt(g) => {
            let positions = match g.position {
                quill_model::Position::Learned => g.block_size * g.n_embd,
                quill_model::Position::Rotary => 0,
            };
            let n = (num_params - positions) as f64;
            6.0 * n + 12.0 * (g.n_layer * g.n_embd * g.block_size) as f64
        }
        ModelConfig::Bigram(_) => 6.0 * num_params as f64,
    }
}

/// Trains `1 + warmup + iters` steps of `config` on `dataset`'s train split from
/// freshly initialised weights and times them: the first step from before
/// initialisation (cold start), then `iters` steps after `warmup` more; then times
/// `eval_batches` evaluation batches of the val split.
pub fn bench_training<AB: AutodiffBackend>(
    config: &RunConfig,
    dataset: &Dataset,
    device: &AB::Device,
    warmup: usize,
    iters: usize,
    eval_batches: usize,
) -> Result<TrainBench, TrainError> {
    if iters == 0 || eval_batches == 0 {
        return Err(TrainError::Config(
            "the benchmark needs at least one timed step and one eval batch".into(),
        ));
    }
    let data = &dataset.split.train;
    let sync = || sync::<AB>(device);
    let cold = Instant::now();
    let (mut trainer, mut sampler) = fresh_trainer::<AB>(config, dataset, device)?;
    let model_config = config.model_for(dataset.tokenizer.vocab_size());
    let num_params = trainer.model().num_params();
    let shards = trainer.shards(config.train.batch_size);
    let mut step = || {
        let batch = Batch::sample(&mut sampler, data, config.train.grad_accum, device)?;
        trainer.step(&batch)
    };
    step()?;
    sync()?;
    let first_step_s = cold.elapsed().as_secs_f64();
    for _ in 0..warmup {
        step()?;
    }
    sync()?;

    let start = Instant::now();
    let mut loss_sum = 0.0f64;
    for _ in 0..iters {
        loss_sum += step()?.loss as f64;
    }
    sync()?;
    let seconds = start.elapsed().as_secs_f64();
    let train_tokens_per_s = (iters * config.tokens_per_iter()) as f64 / seconds;
    let flops_per_token = flops_per_token(&model_config, num_params);

    let valid = trainer.model().valid();
    let val = &dataset.split.val;
    estimate_loss(
        &valid,
        val,
        config.train.batch_size,
        Shard::WHOLE,
        1,
        config.train.seed,
    )?; // warm-up
    let start = Instant::now();
    estimate_loss(
        &valid,
        val,
        config.train.batch_size,
        Shard::WHOLE,
        eval_batches,
        config.train.seed,
    )?;
    sync()?;
    let eval_tokens = eval_batches * config.train.batch_size * config.block_size();
    Ok(TrainBench {
        first_step_s,
        warmup_iters: warmup,
        iters,
        ms_per_iter: seconds * 1e3 / iters as f64,
        train_tokens_per_s,
        flops_per_token,
        achieved_tflops: flops_per_token * train_tokens_per_s / 1e12,
        eval_tokens_per_s: eval_tokens as f64 / start.elapsed().as_secs_f64(),
        mean_loss: (loss_sum / iters as f64) as f32,
        shards,
        tensorboard_ms_per_iter: tensorboard_ms_per_step()?,
    })
}

/// Waits for `device` to finish its queued work.
fn sync<B: Backend>(device: &B::Device) -> Result<(), TrainError> {
    B::sync(device).map_err(|e| TrainError::Device(e.to_string().replace('\n', " ")))
}

/// A trainer of `config`'s model, freshly initialised from its seed, and its batch
/// sampler, after checking the settings and that the dataset fits the block size.
fn fresh_trainer<AB: AutodiffBackend>(
    config: &RunConfig,
    dataset: &Dataset,
    device: &AB::Device,
) -> Result<(Trainer<AB>, quill_data::BatchSampler), TrainError> {
    config.validate()?;
    dataset.split.check_block_size(config.block_size())?;
    let model_config = config.model_for(dataset.tokenizer.vocab_size());
    let model = model_config.init::<AB>(config.train.seed, device)?;
    Ok((Trainer::new(model, &config.train), config.batch_sampler()?))
}

/// Time to a target validation loss: training from fresh weights until an evaluation
/// reaches it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToLossBench {
    /// The target validation loss.
    pub target: f32,
    /// Whether an evaluation reached it within `max_iters` steps.
    pub reached: bool,
    /// Optimizer steps taken until then (`max_iters` when it was not reached).
    pub steps: usize,
    /// Wall seconds of those steps (drawing batches, forward, backward, update), the
    /// evaluations excluded.
    pub train_s: f64,
    /// Wall seconds from before the model's initialisation to the evaluation that
    /// reached the target (or the last one), evaluations included.
    pub wall_s: f64,
    /// `(step, val loss)` of every evaluation.
    pub curve: Vec<(usize, f32)>,
}

/// The starts of `n` evenly spaced windows of `block_size + 1` tokens in `len` tokens:
/// `⌊i·(len − block_size − 1)/n⌋`, `i = 0..n`. A fixed set, the same for every run and
/// easy to reproduce elsewhere (`bench/reference.py` uses the same).
pub fn eval_windows(len: usize, block_size: usize, n: usize) -> Vec<usize> {
    let span = len.saturating_sub(block_size + 1);
    (0..n).map(|i| i * span / n).collect()
}

/// Mean loss of `model` on the windows starting at `starts`, in batches of `batch_size`.
fn loss_on_windows<B: Backend>(
    model: &LanguageModel<B>,
    data: &(impl quill_data::TokenSource + ?Sized),
    starts: &[usize],
    batch_size: usize,
) -> Result<f32, TrainError> {
    let (t, device) = (model.block_size(), model.device());
    let (mut total, mut batches) = (0.0f64, 0usize);
    for chunk in starts.chunks(batch_size) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut window = Vec::with_capacity(t + 1);
        for &start in chunk {
            window.clear();
            data.read_window(start, t + 1, &mut window)?;
            x.extend_from_slice(&window[..t]);
            y.extend_from_slice(&window[1..]);
        }
        let ids =
            |v: Vec<u32>| quill_data::batch::ids_to_tensor::<B, 2>(&v, [chunk.len(), t], &device);
        let loss = model.loss(ids(x), ids(y))?;
        total += quill_model::ops::scalar(loss);
        batches += 1;
    }
    Ok((total / batches.max(1) as f64) as f32)
}

/// Trains `config` from fresh weights (its seed, schedule and `max_iters`) and evaluates
/// the val split every `eval_every` steps, on `eval_batches · batch_size` fixed windows
/// ([`eval_windows`]), until the loss is at most `target` or `max_iters` steps are done.
pub fn bench_to_loss<AB: AutodiffBackend>(
    config: &RunConfig,
    dataset: &Dataset,
    device: &AB::Device,
    target: f32,
    eval_every: usize,
    eval_batches: usize,
) -> Result<ToLossBench, TrainError> {
    if eval_every == 0 || eval_batches == 0 {
        return Err(TrainError::Config(
            "time to loss needs evaluations: --eval-every and --eval-iters at least 1".into(),
        ));
    }
    let (train, val) = (&dataset.split.train, &dataset.split.val);
    let windows = eval_windows(
        val.token_count(),
        config.block_size(),
        eval_batches * config.train.batch_size,
    );
    let cold = Instant::now();
    let (mut trainer, mut sampler) = fresh_trainer::<AB>(config, dataset, device)?;
    let (mut curve, mut train_s) = (Vec::new(), 0.0);
    loop {
        let step = trainer.iter();
        if step % eval_every == 0 || step == config.train.max_iters {
            let loss = loss_on_windows(
                &trainer.model().valid(),
                val,
                &windows,
                config.train.batch_size,
            )?;
            curve.push((step, loss));
            if loss <= target || step >= config.train.max_iters {
                return Ok(ToLossBench {
                    target,
                    reached: loss <= target,
                    steps: step,
                    train_s,
                    wall_s: cold.elapsed().as_secs_f64(),
                    curve,
                });
            }
        }
        let start = Instant::now();
        let batch = Batch::sample(&mut sampler, train, config.train.grad_accum, device)?;
        trainer.step(&batch)?;
        sync::<AB>(device)?;
        train_s += start.elapsed().as_secs_f64();
    }
}

/// The peak resident set size of this process in MiB (`VmHWM`), where the OS reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Sampling throughput with and without the key/value cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleBench {
    /// New tokens generated by each path.
    pub sample_new_tokens: usize,
    /// Tokens per second with the KV cache.
    pub sample_tokens_per_s: f64,
    /// Tokens per second recomputing the context for every token.
    pub sample_tokens_per_s_no_cache: f64,
    /// `sample_tokens_per_s / sample_tokens_per_s_no_cache`.
    pub kv_cache_speedup: f64,
    /// Whether both paths generated the same tokens (they must).
    pub identical_tokens: bool,
}

/// Generates `n` tokens (temperature 1, from token 0, one sequence) with or without
/// the KV cache: the tokens and the seconds taken.
pub fn time_generation<B: Backend>(
    model: &LanguageModel<B>,
    n: usize,
    seed: u64,
    kv_cache: bool,
) -> Result<(Vec<Vec<u32>>, f64), TrainError> {
    let options = SamplingOptions {
        seed,
        kv_cache,
        ..Default::default()
    };
    let start = Instant::now();
    let out = generate(model, &[vec![0]], n, &options, |_| true)?;
    Ok((out, start.elapsed().as_secs_f64()))
}

/// Generates `new_tokens` tokens (temperature 1, from token 0) with and without the
/// cache, after a short untimed warm-up of each path, and times both.
pub fn bench_sampling<B: Backend>(
    model: &LanguageModel<B>,
    new_tokens: usize,
    seed: u64,
) -> Result<SampleBench, TrainError> {
    let run = |kv_cache: bool, n: usize| time_generation(model, n, seed, kv_cache);
    run(true, 8)?;
    run(false, 8)?;
    let (cached, cached_s) = run(true, new_tokens)?;
    let (recomputed, recomputed_s) = run(false, new_tokens)?;
    let (with, without) = (
        new_tokens as f64 / cached_s,
        new_tokens as f64 / recomputed_s,
    );
    Ok(SampleBench {
        sample_new_tokens: new_tokens,
        sample_tokens_per_s: with,
        sample_tokens_per_s_no_cache: without,
        kv_cache_speedup: with / without,
        identical_tokens: cached == recomputed,
    })
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn_flex::Flex;

    use super::*;

    #[test]
    fn eval_windows_are_evenly_spaced_and_fit() {
        assert_eq!(eval_windows(100, 9, 4), [0, 22, 45, 67]);
        let starts = eval_windows(111_540, 64, 240);
        assert_eq!(starts.len(), 240);
        assert!(starts.iter().all(|&s| s + 65 <= 111_540));
    }

    #[test]
    fn flops_per_token_is_nanogpts_for_shakespeare_char() {
        // nanoGPT's shakespeare-char: 10.65M parameters without wpe, 6 layers of 384 over
        // a 256 block: 6 · 10,646,784 + 12 · 6 · 384 · 256.
        let model = RunConfig::preset("shakespeare-char").unwrap().model_for(65);
        let params = model.init::<Flex>(0, &Default::default()).unwrap();
        assert_eq!(flops_per_token(&model, params.num_params()), 70_958_592.0);
    }
}
