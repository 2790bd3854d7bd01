//! The training loop: batches → loss → gradients → AdamW, with periodic evaluation,
//! samples, metrics and checkpoints.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::{BatchSampler, CharTokenizer, Split};
use quill_model::{LanguageModel, SamplingOptions, generate};

use crate::checkpoint::{Checkpoint, FORMAT, RunConfig, TrainState, best_dir, last_dir};
use crate::metrics::{self, EvalRecord};
use crate::optim::{AdamW, GradBuffer, StepOptions};
use crate::schedule::learning_rate;
use crate::{TrainConfig, TrainError};

/// A tokenized corpus: the vocabulary and the train/val split.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The vocabulary.
    pub tokenizer: CharTokenizer,
    /// Token ids, split.
    pub split: Split,
}

impl Dataset {
    /// Builds the vocabulary of `text` and splits it.
    pub fn new(text: &str, val_fraction: f64) -> Result<Dataset, TrainError> {
        let tokenizer = CharTokenizer::from_text(text)?;
        Dataset::with_tokenizer(text, tokenizer, val_fraction)
    }

    /// Tokenizes `text` with a checkpoint's vocabulary, which must equal the text's own.
    pub fn with_tokenizer(
        text: &str,
        tokenizer: CharTokenizer,
        val_fraction: f64,
    ) -> Result<Dataset, TrainError> {
        let own = CharTokenizer::from_text(text)?;
        if own != tokenizer {
            return Err(TrainError::VocabMismatch {
                data: own.vocab_size(),
                checkpoint: tokenizer.vocab_size(),
            });
        }
        let split = Split::new(tokenizer.encode(text)?, val_fraction)?;
        Ok(Dataset { tokenizer, split })
    }
}

/// One optimizer step, as reported to an [`Observer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Steps taken, this one included.
    pub iter: usize,
    /// Mean loss of this step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens per second of this step.
    pub tokens_per_s: f64,
}

/// Receives progress; the CLI draws it, tests record it.
pub trait Observer {
    /// Training starts at step `start` of `max_iters`.
    fn on_start(&mut self, _start: usize, _max_iters: usize) {}
    /// After each optimizer step.
    fn on_step(&mut self, _step: &StepReport) {}
    /// After each evaluation, with a short sample when `sample_chars` > 0.
    fn on_eval(&mut self, _record: &EvalRecord, _sample: Option<&str>) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All `max_iters` steps were taken; the final evaluation.
    Finished(EvalRecord),
    /// Stopped by the stop flag after this many steps; `last/` holds the checkpoint.
    Interrupted(usize),
}

/// Everything a run needs besides the backend.
pub struct Run<'a> {
    /// Settings.
    pub config: TrainConfig,
    /// The corpus.
    pub dataset: &'a Dataset,
    /// Run directory: checkpoints (`last/`, `best/`), `metrics.jsonl`, `loss.svg`.
    pub out: PathBuf,
    /// A checkpoint to continue from.
    pub resume: Option<Checkpoint>,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop at the next step.
    pub stop: Option<&'a AtomicBool>,
}

/// Mean loss over `eval_iters` batches of `data` drawn with `seed`, without dropout or
/// autodiff graph.
pub fn estimate_loss<B: Backend>(
    model: &LanguageModel<B>,
    data: &[u32],
    batch_size: usize,
    eval_iters: usize,
    seed: u64,
) -> Result<f32, TrainError> {
    let mut sampler = BatchSampler::new(batch_size, model.block_size(), seed)?;
    let device = burn::module::Module::devices(model)
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut total = 0.0f64;
    for _ in 0..eval_iters {
        let (x, y) = sampler.sample::<B>(data, &device)?;
        total += model.loss(x, y)?.into_scalar().to_f64();
    }
    Ok((total / eval_iters as f64) as f32)
}

trait ToF64 {
    fn to_f64(self) -> f64;
}
impl<E: burn::tensor::ElementConversion> ToF64 for E {
    fn to_f64(self) -> f64 {
        self.elem()
    }
}

/// Evaluation batches differ between evaluations but are fixed by the seed.
fn eval_seed(seed: u64, iter: usize) -> u64 {
    seed ^ 0x5EED_E7A1_0000_0000 ^ iter as u64
}

/// Trains as `run` says, on `device`.
pub fn train<AB: AutodiffBackend>(
    run: Run<'_>,
    device: &AB::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let config = &run.config;
    config.validate()?;
    run.dataset.split.check_block_size(config.block_size)?;
    let tokenizer = run.dataset.tokenizer.clone();
    let run_config = RunConfig {
        model: config.model_config(tokenizer.vocab_size()),
        train: config.clone(),
    };
    let mut optim =
        AdamW::<AB::InnerBackend>::new(config.beta1, config.beta2, config.eps, config.weight_decay);
    let mut sampler = BatchSampler::new(config.batch_size, config.block_size, config.seed)?;
    let metrics_path = run.out.join("metrics.jsonl");
    let (mut model, mut state) = match &run.resume {
        Some(checkpoint) => {
            if checkpoint.config.model != run_config.model {
                return Err(TrainError::Config(
                    "the model settings differ from the checkpoint's; only training settings may change on resume".into(),
                ));
            }
            let model = checkpoint.model::<AB>(device)?;
            optim
                .load_state(
                    &checkpoint.optimizer,
                    checkpoint.state.optimizer_steps,
                    device,
                )
                .map_err(|reason| TrainError::Config(format!("optimizer state: {reason}")))?;
            sampler.set_rng(checkpoint.state.sampler_rng.clone());
            let kept: Vec<EvalRecord> = metrics::read(&metrics_path)
                .into_iter()
                .filter(|r| r.iter <= checkpoint.state.iter)
                .collect();
            metrics::rewrite(&metrics_path, &kept)?;
            (model, checkpoint.state.clone())
        }
        None => {
            std::fs::create_dir_all(&run.out).map_err(|e| TrainError::io(&run.out, e))?;
            let _ = std::fs::remove_file(&metrics_path);
            let model = run_config.model.init::<AB>(config.seed, device)?;
            let state = TrainState {
                format: FORMAT.to_string(),
                iter: 0,
                optimizer_steps: 0,
                best_val_loss: None,
                sampler_rng: sampler.rng().clone(),
                elapsed_s: 0.0,
            };
            (model, state)
        }
    };
    let mut history = metrics::read(&metrics_path);
    let start = state.iter;
    let clock = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut since_eval = (Instant::now(), 0usize);
    observer.on_start(start, config.max_iters);

    let save = |model: &LanguageModel<AB>,
                optim: &AdamW<AB::InnerBackend>,
                state: &TrainState,
                dir: &Path| {
        Checkpoint::capture(
            run_config.clone(),
            tokenizer.clone(),
            model,
            optim.state(),
            state.clone(),
        )
        .save(dir)
    };

    let mut lr = learning_rate(config, start);
    for iter in start..config.max_iters {
        state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
        state.sampler_rng = sampler.rng().clone();
        state.optimizer_steps = optim.steps();
        let resumed_here = run.resume.is_some() && iter == start;
        if iter % config.eval_interval == 0 && !resumed_here {
            let tokens = since_eval.1 * config.tokens_per_iter();
            let tokens_per_s = tokens as f64 / since_eval.0.elapsed().as_secs_f64().max(1e-9);
            let record = evaluate(
                &model.valid(),
                config,
                run.dataset,
                iter,
                config.eval_iters,
                lr,
                tokens_per_s,
                state.elapsed_s,
            )?;
            after_eval(
                &run,
                &model,
                &optim,
                &mut state,
                &record,
                &mut history,
                observer,
                &save,
            )?;
            since_eval = (Instant::now(), 0);
        }
        if run.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            state.iter = iter;
            save(&model, &optim, &state, &last_dir(&run.out))?;
            return Ok(Outcome::Interrupted(iter));
        }

        lr = learning_rate(config, iter);
        if config.dropout > 0.0 {
            AB::seed(device, config.seed.wrapping_add(iter as u64));
        }
        let step_start = Instant::now();
        let mut grads = GradBuffer::default();
        let mut loss_sum = 0.0f64;
        for _ in 0..config.grad_accum {
            let (x, y) = sampler.sample::<AB>(&run.dataset.split.train, device)?;
            let loss = model.loss(x, y)?;
            loss_sum += loss.clone().into_scalar().to_f64();
            grads.accumulate(&model, &loss.backward());
        }
        let loss = (loss_sum / config.grad_accum as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { iter, loss });
        }
        let (updated, grad_norm) = optim.step(
            model,
            grads,
            StepOptions {
                lr,
                grad_clip: config.grad_clip,
            },
        );
        model = updated;
        since_eval.1 += 1;
        let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
        observer.on_step(&StepReport {
            iter: iter + 1,
            loss,
            lr,
            grad_norm,
            tokens_per_s: config.tokens_per_iter() as f64 / seconds,
        });
    }

    state.iter = config.max_iters.max(start);
    state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
    state.sampler_rng = sampler.rng().clone();
    state.optimizer_steps = optim.steps();
    let tokens = since_eval.1 * config.tokens_per_iter();
    let tokens_per_s = tokens as f64 / since_eval.0.elapsed().as_secs_f64().max(1e-9);
    let record = evaluate(
        &model.valid(),
        config,
        run.dataset,
        state.iter,
        config.final_eval_iters,
        lr,
        tokens_per_s,
        state.elapsed_s,
    )?;
    after_eval(
        &run,
        &model,
        &optim,
        &mut state,
        &record,
        &mut history,
        observer,
        &save,
    )?;
    Ok(Outcome::Finished(record))
}

#[allow(clippy::too_many_arguments)]
fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    config: &TrainConfig,
    dataset: &Dataset,
    iter: usize,
    eval_iters: usize,
    lr: f64,
    tokens_per_s: f64,
    elapsed_s: f64,
) -> Result<EvalRecord, TrainError> {
    let seed = eval_seed(config.seed, iter);
    Ok(EvalRecord {
        iter,
        train_loss: estimate_loss(
            model,
            &dataset.split.train,
            config.batch_size,
            eval_iters,
            seed,
        )?,
        val_loss: estimate_loss(
            model,
            &dataset.split.val,
            config.batch_size,
            eval_iters,
            seed,
        )?,
        lr,
        tokens_per_s,
        elapsed_s,
    })
}

/// Records an evaluation (metrics, plot, sample) and checkpoints `last/` (and `best/`
/// when the validation loss improved).
#[allow(clippy::too_many_arguments)]
fn after_eval<AB: AutodiffBackend>(
    run: &Run<'_>,
    model: &LanguageModel<AB>,
    optim: &AdamW<AB::InnerBackend>,
    state: &mut TrainState,
    record: &EvalRecord,
    history: &mut Vec<EvalRecord>,
    observer: &mut dyn Observer,
    save: &dyn Fn(
        &LanguageModel<AB>,
        &AdamW<AB::InnerBackend>,
        &TrainState,
        &Path,
    ) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    metrics::append(&run.out.join("metrics.jsonl"), record)?;
    history.push(record.clone());
    quill_data::corpus::write_atomic(
        &run.out.join("loss.svg"),
        metrics::loss_svg(history).as_bytes(),
    )
    .map_err(|e| TrainError::Config(e.to_string()))?;
    let sample = (run.config.sample_chars > 0)
        .then(|| {
            sample_text(
                &model.valid(),
                &run.dataset.tokenizer,
                run.config.sample_chars,
                run.config.seed ^ record.iter as u64,
            )
        })
        .transpose()?;
    observer.on_eval(record, sample.as_deref());
    state.iter = record.iter;
    let improved = state
        .best_val_loss
        .is_none_or(|best| record.val_loss < best);
    if improved {
        state.best_val_loss = Some(record.val_loss);
    }
    save(model, optim, state, &last_dir(&run.out))?;
    if improved {
        save(model, optim, state, &best_dir(&run.out))?;
    }
    Ok(())
}

/// `n` characters sampled (temperature 1) after the newline token.
pub fn sample_text<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &CharTokenizer,
    n: usize,
    seed: u64,
) -> Result<String, TrainError> {
    let options = SamplingOptions {
        seed,
        ..Default::default()
    };
    let start = vec![tokenizer.start_token()];
    let rows = generate(model, &[start], n, &options, |_| true)?;
    Ok(tokenizer.decode(&rows[0][1..])?)
}
