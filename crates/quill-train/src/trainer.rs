//! The training loop: batches → loss → gradients → AdamW, with periodic evaluation,
//! samples, metrics and checkpoints.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::{BatchSampler, CharTokenizer, Split};
use quill_model::{LanguageModel, ModelConfig, SamplingOptions, generate};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, FORMAT, RunConfig, TrainState};
use crate::metrics::EvalRecord;
use crate::optim::{AdamW, GradBuffer, StepOptions};
use crate::plot::LossPlot;
use crate::run_dir::RunDir;
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

/// One optimizer step, as reported to an [`Observer`] and recorded, one line each, in
/// the run directory's `steps.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    /// The run directory, opened (and locked) with [`RunDir::open`]: checkpoints
    /// (`last/`, `best/`), `metrics.jsonl`, `steps.jsonl`, `loss.svg`, `loss.png`.
    pub out: RunDir,
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
    let device = model.device();
    let mut total = 0.0f64;
    for _ in 0..eval_iters {
        let (x, y) = sampler.sample::<B>(data, &device)?;
        total += model.loss(x, y)?.into_scalar().elem::<f64>();
    }
    Ok((total / eval_iters as f64) as f32)
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
    let mut stepper = Stepper::<AB>::new(config, &run.dataset.split.train, device)?;
    let mut out = run.out;
    let (mut model, mut state, history, steps) = match &run.resume {
        Some(checkpoint) => {
            if checkpoint.config.model != run_config.model {
                return Err(TrainError::Config(
                    "the model settings differ from the checkpoint's; only training settings may change on resume".into(),
                ));
            }
            let model = checkpoint.model::<AB>(device)?;
            stepper
                .optim
                .load_state(
                    &checkpoint.optimizer,
                    checkpoint.state.optimizer_steps,
                    device,
                )
                .map_err(|reason| TrainError::Config(format!("optimizer state: {reason}")))?;
            stepper
                .sampler
                .set_rng(checkpoint.state.sampler_rng.clone());
            let finished = checkpoint.state.iter >= config.max_iters;
            let (history, steps) = out.resume_at(checkpoint.state.iter, finished)?;
            (model, checkpoint.state.clone(), history, steps)
        }
        None => {
            out.start_fresh()?;
            let model = run_config.model.init::<AB>(config.seed, device)?;
            let state = TrainState {
                format: FORMAT.to_string(),
                iter: 0,
                optimizer_steps: 0,
                best_val_loss: None,
                sampler_rng: stepper.sampler.rng().clone(),
                elapsed_s: 0.0,
            };
            (model, state, Vec::new(), Vec::new())
        }
    };
    let start = state.iter;
    let clock = Instant::now();
    let elapsed_before = state.elapsed_s;
    let mut since_eval = (Instant::now(), 0usize);
    observer.on_start(start, config.max_iters);

    let mut recorder = Recorder {
        out,
        dataset: run.dataset,
        config,
        run_config,
        history,
        steps,
    };

    let mut lr = learning_rate(config, start);
    for iter in start.. {
        state.iter = iter;
        state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
        state.sampler_rng = stepper.sampler.rng().clone();
        state.optimizer_steps = stepper.optim.steps();
        let last = iter >= config.max_iters;
        // A resumed run already evaluated at its first step, unless that is the end.
        let resumed_here = run.resume.is_some() && iter == start && !last;
        if (last || iter % config.eval_interval == 0) && !resumed_here {
            let eval_iters = if last {
                config.final_eval_iters
            } else {
                config.eval_iters
            };
            let seconds = since_eval.0.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_s = (since_eval.1 * config.tokens_per_iter()) as f64 / seconds;
            let record = EvalRecord {
                iter,
                lr,
                tokens_per_s,
                elapsed_s: state.elapsed_s,
                ..evaluate(&model.valid(), config, run.dataset, iter, eval_iters)?
            };
            recorder.after_eval(&model, &stepper.optim, &mut state, &record, observer)?;
            if last {
                return Ok(Outcome::Finished(record));
            }
            since_eval = (Instant::now(), 0);
        }
        if run.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            recorder.out.flush()?;
            recorder.save(&model, &stepper.optim, &state, &recorder.out.last())?;
            return Ok(Outcome::Interrupted(iter));
        }

        lr = learning_rate(config, iter);
        let step_start = Instant::now();
        let (updated, loss, grad_norm) = stepper.step(model, iter)?;
        model = updated;
        since_eval.1 += 1;
        let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
        let report = StepReport {
            iter: iter + 1,
            loss,
            lr,
            grad_norm,
            tokens_per_s: config.tokens_per_iter() as f64 / seconds,
        };
        recorder.after_step(&report)?;
        observer.on_step(&report);
    }
    unreachable!("the loop returns at max_iters")
}

/// The trainer's optimizer step — shared by the training loop, the benchmark and the
/// parity check, so all three measure the same work.
pub(crate) struct Stepper<'a, AB: AutodiffBackend> {
    config: &'a TrainConfig,
    data: &'a [u32],
    device: &'a AB::Device,
    /// AdamW and its moments.
    pub(crate) optim: AdamW<AB::InnerBackend>,
    /// Draws the training batches.
    pub(crate) sampler: BatchSampler,
}

impl<'a, AB: AutodiffBackend> Stepper<'a, AB> {
    /// A fresh optimizer and a sampler seeded by `config`, over training tokens `data`.
    pub(crate) fn new(
        config: &'a TrainConfig,
        data: &'a [u32],
        device: &'a AB::Device,
    ) -> Result<Self, TrainError> {
        Ok(Stepper {
            config,
            data,
            device,
            optim: AdamW::new(config.beta1, config.beta2, config.eps, config.weight_decay),
            sampler: BatchSampler::new(config.batch_size, config.block_size, config.seed)?,
        })
    }

    /// Step `iter`: the gradients of `grad_accum` micro-batches, then AdamW at the
    /// schedule's learning rate. Returns the updated model, the mean loss and the global
    /// gradient norm before clipping.
    pub(crate) fn step(
        &mut self,
        model: LanguageModel<AB>,
        iter: usize,
    ) -> Result<(LanguageModel<AB>, f32, f64), TrainError> {
        let config = self.config;
        if config.dropout > 0.0 {
            AB::seed(self.device, config.seed.wrapping_add(iter as u64));
        }
        let mut grads = GradBuffer::default();
        let mut loss_sum = 0.0f64;
        for _ in 0..config.grad_accum {
            let (x, y) = self.sampler.sample::<AB>(self.data, self.device)?;
            let loss = model.loss(x, y)?;
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            grads.accumulate(&model, &loss.backward());
        }
        let loss = (loss_sum / config.grad_accum as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { iter, loss });
        }
        let options = StepOptions {
            lr: learning_rate(config, iter),
            grad_clip: config.grad_clip,
        };
        let (model, grad_norm) = self.optim.step(model, grads, options);
        Ok((model, loss, grad_norm))
    }
}

/// Train and val loss at step `iter` (the other fields are left zero).
fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    config: &TrainConfig,
    dataset: &Dataset,
    iter: usize,
    eval_iters: usize,
) -> Result<EvalRecord, TrainError> {
    let seed = eval_seed(config.seed, iter);
    let loss = |data: &[u32]| estimate_loss(model, data, config.batch_size, eval_iters, seed);
    Ok(EvalRecord {
        iter,
        train_loss: loss(&dataset.split.train)?,
        val_loss: loss(&dataset.split.val)?,
        lr: 0.0,
        tokens_per_s: 0.0,
        elapsed_s: 0.0,
    })
}

/// Writes what a run leaves behind: step and evaluation records, the loss picture,
/// checkpoints.
struct Recorder<'a> {
    out: RunDir,
    dataset: &'a Dataset,
    config: &'a TrainConfig,
    run_config: RunConfig,
    history: Vec<EvalRecord>,
    steps: Vec<StepReport>,
}

impl Recorder<'_> {
    fn save<AB: AutodiffBackend>(
        &self,
        model: &LanguageModel<AB>,
        optim: &AdamW<AB::InnerBackend>,
        state: &TrainState,
        dir: &Path,
    ) -> Result<(), TrainError> {
        let tokenizer = self.dataset.tokenizer.clone();
        Checkpoint::capture(
            self.run_config.clone(),
            tokenizer,
            model,
            optim.state(),
            state.clone(),
        )
        .save(dir)
    }

    fn after_step(&mut self, step: &StepReport) -> Result<(), TrainError> {
        self.out.record_step(step)?;
        self.steps.push(*step);
        Ok(())
    }

    /// `cpu · GPT 4 layers × 128 (4 heads) · 0.80 M parameters · 1.54 M tokens seen`.
    fn title(&self, iter: usize) -> String {
        let name = self
            .out
            .path()
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        let model = match &self.run_config.model {
            ModelConfig::Gpt(g) => format!(
                "GPT {} layers × {} ({} heads)",
                g.n_layer, g.n_embd, g.n_head
            ),
            ModelConfig::Bigram(b) => format!("bigram × {}", b.n_embd),
        };
        format!(
            "{name} · {model} · {} parameters · {} tokens seen",
            human_count(self.run_config.model.num_params()),
            human_count((iter * self.config.tokens_per_iter()) as f64)
        )
    }

    /// Records an evaluation (metrics, plot, sample) and checkpoints `last/` (and
    /// `best/` when the validation loss improved).
    fn after_eval<AB: AutodiffBackend>(
        &mut self,
        model: &LanguageModel<AB>,
        optim: &AdamW<AB::InnerBackend>,
        state: &mut TrainState,
        record: &EvalRecord,
        observer: &mut dyn Observer,
    ) -> Result<(), TrainError> {
        let config = self.config;
        self.out.record_eval(record)?;
        self.history.push(record.clone());
        LossPlot {
            title: &self.title(record.iter),
            steps: &self.steps,
            evals: &self.history,
        }
        .write(self.out.path())?;
        let sample = (config.sample_chars > 0)
            .then(|| {
                sample_text(
                    &model.valid(),
                    &self.dataset.tokenizer,
                    config.sample_chars,
                    config.seed ^ record.iter as u64,
                )
            })
            .transpose()?;
        observer.on_eval(record, sample.as_deref());
        let improved = state
            .best_val_loss
            .is_none_or(|best| record.val_loss < best);
        if improved {
            state.best_val_loss = Some(record.val_loss);
        }
        self.save(model, optim, state, &self.out.last())?;
        if improved {
            self.save(model, optim, state, &self.out.best())?;
        }
        Ok(())
    }
}

/// `804096.0` → `804.1 k`, `1.5e6` → `1.50 M`, `2e9` → `2.00 B`.
pub fn human_count(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} B", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} k", n / 1e3),
        n => format!("{n:.0}"),
    }
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
