//! A training run, composed of the public pieces: a [`Trainer`] steps, [`evaluate`](crate::evaluate())
//! measures, the [`RunDir`] records and checkpoints, an [`Observer`] shows progress.
//! [`train()`] reads top-down: join the ranks, start (fresh, finetuned or resumed), then
//! evaluate, stop or step until the last step.

pub mod checkpoint;
pub mod metrics;
#[cfg(feature = "plot")]
pub mod plot;
pub mod run_dir;
pub mod summary;
pub mod tensorboard;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::{BatchSampler, Dataset};
use quill_model::{LanguageModel, ModelConfig};
use serde::{Deserialize, Serialize};

#[cfg(feature = "distributed")]
use crate::distributed::{Collective, World};
use crate::evaluate::{Losses, evaluate_with};
use crate::schedule::learning_rate;
use crate::trainer::strategy::{SingleProcess, Strategy, fingerprint, fingerprint_more};
use crate::trainer::{Batch, Trainer};
use crate::{RunConfig, TrainError};
use checkpoint::{Checkpoint, TrainState};
use metrics::EvalRecord;
use quill_model::{SampleRequest, sample_texts};
use run_dir::RunDir;

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
    /// f16 training: the loss scale this step used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16 training: the steps skipped so far (this one included) because a gradient
    /// was not finite at the loss scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<u64>,
}

/// Receives progress; the CLI draws it, tests record it.
pub trait Observer {
    /// Training starts at step `start` of `max_iters`.
    fn on_start(&mut self, _start: usize, _max_iters: usize) {}
    /// After each optimizer step.
    fn on_step(&mut self, _step: &StepReport) {}
    /// During an evaluation, after each batch: `done` of `total` (both splits).
    fn on_eval_batch(&mut self, _done: usize, _total: usize) {}
    /// After each evaluation, with a short sample when `sample_tokens` > 0.
    fn on_eval(&mut self, _record: &EvalRecord, _sample: Option<&str>) {}
    /// In a data-parallel run, after each evaluation found the weights equal on every
    /// rank.
    fn on_ranks_agree(&mut self, _agreement: &Agreement) {}
}

/// What the ranks of a data-parallel run agreed on at an evaluation, and what the
/// exchanges cost this rank so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Steps taken.
    pub iter: usize,
    /// The weights' fingerprint, the same on every rank (see [`weights_fingerprint`]).
    pub weights: u64,
    /// Seconds this rank spent in all-reduces (gradients and checks), waiting for the
    /// others included.
    pub exchange_s: f64,
    /// All-reduces so far: one per step, plus the checks.
    pub exchanges: usize,
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

/// Everything a run needs besides the backend: its settings and data (required), and
/// where it writes, what it starts from, what stops it and who shares it (optional).
pub struct Run<'a> {
    config: RunConfig,
    dataset: &'a Dataset,
    out: Option<RunDir>,
    resume: Option<Checkpoint>,
    init_from: Option<Checkpoint>,
    stop: Option<&'a AtomicBool>,
    /// Where the data came from, as the user named it: the data and the validation
    /// shards.
    data_source: Option<(String, Option<String>)>,
    #[cfg(feature = "distributed")]
    world: Option<World>,
}

impl<'a> Run<'a> {
    /// A run of `config` on `dataset` that writes nothing, from fresh weights, alone.
    pub fn new(config: RunConfig, dataset: &'a Dataset) -> Self {
        Run {
            config,
            dataset,
            out: None,
            resume: None,
            init_from: None,
            stop: None,
            data_source: None,
            #[cfg(feature = "distributed")]
            world: None,
        }
    }

    /// Records in each checkpoint where the data came from (`source`, as the user named
    /// it, and the validation shards' pattern `val` for shards named by a pattern) and
    /// its tokenizer ([`crate::DataRecord`]): what `quill runs` and a model card show,
    /// and what a resumed run reads again.
    pub fn with_data(mut self, source: impl Into<String>, val: Option<String>) -> Self {
        self.data_source = Some((source.into(), val));
        self
    }

    /// Records and checkpoints into `out`, opened (and locked) with [`RunDir::open`];
    /// none: nothing is written (the ranks other than 0 of a data-parallel run).
    pub fn with_out(mut self, out: impl Into<Option<RunDir>>) -> Self {
        self.out = out.into();
        self
    }

    /// Continues from `checkpoint`: its weights, optimizer state, step and batches.
    pub fn with_resume(mut self, checkpoint: impl Into<Option<Checkpoint>>) -> Self {
        self.resume = checkpoint.into();
        self
    }

    /// Starts from `checkpoint`'s weights with a fresh optimizer (finetuning; see
    /// [`Checkpoint::init_model`]). Ignored when resuming.
    pub fn with_init_from(mut self, checkpoint: impl Into<Option<Checkpoint>>) -> Self {
        self.init_from = checkpoint.into();
        self
    }

    /// Saves a checkpoint and stops at the next step once `stop` is set (e.g. by Ctrl-C);
    /// one process alone also abandons an evaluation in progress, which a resumed run
    /// then does first.
    pub fn with_stop(mut self, stop: &'a AtomicBool) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Trains as one rank of the data-parallel `world`: `batch_size` is per rank, each
    /// step's batch of `size × batch_size` rows is drawn from the shared seeded stream
    /// and this rank trains on its slice; gradients, losses and the stop are agreed on
    /// by all ranks.
    #[cfg(feature = "distributed")]
    pub fn with_world(mut self, world: impl Into<Option<World>>) -> Self {
        self.world = world.into();
        self
    }
}

/// Evaluation batches differ between evaluations but are fixed by the random seed.
fn eval_seed(seed: u64, iter: usize) -> u64 {
    seed ^ 0x5EED_E7A1_0000_0000 ^ iter as u64
}

/// Trains as `run` says, on `device`: evaluates every `eval_interval` steps and at the
/// end (recording, checkpointing and sampling each time), steps otherwise.
pub fn train<AB: AutodiffBackend>(
    mut run: Run<'_>,
    device: &AB::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let (config, dataset) = (&run.config, run.dataset);
    config.validate()?;
    dataset.split.check_block_size(config.block_size())?;
    let settings = RunConfig {
        model: config.model_for(dataset.tokenizer.vocab_size()),
        train: config.train.clone(),
    };
    let strategy = join::<AB::InnerBackend>(&mut run, &settings, device)?;
    let shard = strategy.shard();
    let mut sampler = settings.batch_sampler()?.with_shard(shard);
    let dtype = burn::tensor::get_device_settings::<AB>(device).float_dtype;
    if settings.train.emulate_bf16 && dtype != burn::tensor::FloatDType::F32 {
        return Err(TrainError::Config(format!(
            "emulate_bf16 rounds f32 parameters to bf16, and these are {dtype:?} already: train in f32 to emulate bf16"
        )));
    }
    let (trainer, mut state) = start::<AB>(&mut run, &settings, &mut sampler, device)?;
    let mut trainer = trainer.with_strategy(strategy);
    if let Some((source, val)) = run.data_source.take() {
        state.data = Some(crate::DataRecord {
            source,
            val,
            tokenizer: dataset.tokenizer.name(),
        });
    }
    let Run {
        dataset,
        mut out,
        resume,
        stop,
        ..
    } = run;
    let t = &settings.train;
    let tokens_per_iter = settings.tokens_per_iter() * shard.ranks;
    let (start, clock, elapsed_before) = (state.iter, Instant::now(), state.elapsed_s);
    let mut stop_agreed = false;
    let mut since_eval = (Instant::now(), 0usize);
    let mut lr = learning_rate(t, start);
    // A run stopped during an evaluation does it again first.
    let eval_pending = std::mem::take(&mut state.eval_pending);
    // One process alone may abandon an evaluation; ranks stop together after a step.
    let stop_eval = stop.filter(|_| shard.ranks == 1);
    observer.on_start(start, t.max_iters);

    loop {
        let iter = trainer.iter();
        state.iter = iter;
        state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
        state.sampler_rng = sampler.rng().clone();
        state.optimizer_steps = trainer.optimizer().steps();
        state.loss_scaler = trainer.loss_scaler().copied();
        state.dtype = trainer.float_type();
        let last = iter >= t.max_iters;
        // A resumed run already evaluated at its first step, unless that is the end.
        let resumed_here = resume.is_some() && iter == start && !last && !eval_pending;
        if (last || iter % t.eval_interval == 0) && !resumed_here {
            // Training time only: the evaluation's own is not counted.
            let seconds = since_eval.0.elapsed().as_secs_f64().max(1e-9);
            let model = trainer.model().valid();
            let losses = match measure(
                &model, &trainer, dataset, &settings, last, stop_eval, observer,
            ) {
                Err(TrainError::Interrupted) => {
                    state.eval_pending = true;
                    if let Some(out) = out.as_mut() {
                        save_stopped(out, &settings, dataset, &trainer, &state)?;
                    }
                    return Ok(Outcome::Interrupted(iter));
                }
                losses => losses?,
            };
            let record = EvalRecord {
                iter,
                train_loss: losses.train,
                val_loss: losses.val,
                lr,
                tokens_per_s: (since_eval.1 * tokens_per_iter) as f64 / seconds,
                elapsed_s: state.elapsed_s,
            };
            if let Some(out) = out.as_mut() {
                out.record_eval(&record, &plot_title(out, &settings, iter))?;
            }
            let sample = sample_now(&model, dataset, &settings, iter)?;
            if let (Some(out), Some(text)) = (out.as_mut(), &sample) {
                out.record_sample(iter, text)?;
            }
            observer.on_eval(&record, sample.as_deref());
            let improved = state
                .best_val_loss
                .is_none_or(|best| record.val_loss < best);
            if improved {
                state.best_val_loss = Some(record.val_loss);
            }
            if let Some(out) = &out {
                out.save_checkpoint(&capture(&settings, dataset, &trainer, &state)?, improved)?;
            }
            if last {
                return Ok(Outcome::Finished(record));
            }
            since_eval = (Instant::now(), 0);
        }
        let stop_wanted = stop.is_some_and(|s| s.load(Ordering::SeqCst));
        // Ranks stop together, after the step in which one of them asked to.
        if stop_agreed || (stop_wanted && shard.ranks == 1) {
            if let Some(out) = out.as_mut() {
                save_stopped(out, &settings, dataset, &trainer, &state)?;
            }
            return Ok(Outcome::Interrupted(iter));
        }

        let step_start = Instant::now();
        let batch = Batch::sample(&mut sampler, &dataset.split.train, t.grad_accum, device)?;
        let (step, stop_voted) = trainer.step_and_vote(&batch, stop_wanted)?;
        stop_agreed = stop_voted;
        lr = step.lr;
        since_eval.1 += 1;
        let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
        let report = StepReport {
            iter: iter + 1,
            loss: step.loss,
            lr: step.lr,
            grad_norm: step.grad_norm,
            tokens_per_s: tokens_per_iter as f64 / seconds,
            loss_scale: step.loss_scale.map(|(scale, _)| scale),
            skipped_steps: trainer.loss_scaler().map(|s| s.skipped_steps),
        };
        if let Some(out) = out.as_mut() {
            out.record_step(&report)?;
        }
        observer.on_step(&report);
    }
}

/// What a run stopped early leaves: its records flushed, its picture redrawn and a
/// checkpoint in `last/`.
fn save_stopped<AB: AutodiffBackend>(
    out: &mut RunDir,
    settings: &RunConfig,
    dataset: &Dataset,
    trainer: &Trainer<AB>,
    state: &TrainState,
) -> Result<(), TrainError> {
    out.flush()?;
    out.draw(&plot_title(out, settings, trainer.iter()))?;
    out.save_checkpoint(&capture(settings, dataset, trainer, state)?, false)
}

/// Joins the data-parallel world the run names, checking that every rank has the same
/// settings, data and checkpoint; one process alone otherwise.
fn join<B: Backend>(
    run: &mut Run<'_>,
    settings: &RunConfig,
    device: &B::Device,
) -> Result<Box<dyn Strategy<B>>, TrainError> {
    #[cfg(feature = "distributed")]
    if let Some(world) = run.world.take() {
        let params = settings.model.num_params() as usize;
        let collective = Collective::<B>::join(world, device, params)?;
        let agreed = settings_fingerprint(settings, run.dataset, &collective, &run.resume)?;
        collective.check_same(
            "the settings (model, training, data, world size or checkpoint)",
            agreed,
        )?;
        return Ok(Box::new(collective));
    }
    let _ = (run, settings, device);
    Ok(Box::new(SingleProcess))
}

/// The trainer and progress a run starts with: a checkpoint's to resume, else fresh
/// (or finetuned) weights at step 0. The run directory is told which.
fn start<AB: AutodiffBackend>(
    run: &mut Run<'_>,
    settings: &RunConfig,
    sampler: &mut BatchSampler,
    device: &AB::Device,
) -> Result<(Trainer<AB>, TrainState), TrainError> {
    let t = &settings.train;
    if let Some(checkpoint) = &run.resume {
        checkpoint.check_resumable(&settings.model)?;
        let model = checkpoint.model::<AB>(device)?;
        let s = &checkpoint.state;
        let trainer = Trainer::resume(model, t, s.iter, &checkpoint.optimizer, s.optimizer_steps)?
            .with_saved_precision(&checkpoint.weights, s.loss_scaler);
        sampler.set_rng(s.sampler_rng.clone());
        if let Some(out) = run.out.as_mut() {
            out.resume_at(s.iter, s.iter >= t.max_iters)?;
        }
        return Ok((trainer, s.clone()));
    }
    if let Some(out) = run.out.as_mut() {
        out.start_fresh()?;
        let text = toml::to_string(settings).map_err(|e| TrainError::Config(e.to_string()))?;
        out.record_config(&text)?;
    }
    let model = match &run.init_from {
        Some(init) => {
            run.dataset.check_tokenizer(&init.tokenizer)?;
            init.init_model::<AB>(&settings.model, device)?
        }
        None => settings.model.init::<AB>(t.seed, device)?,
    };
    Ok((
        Trainer::new(model, t),
        TrainState::new(sampler.rng().clone()),
    ))
}

/// Train and val losses of `model` (the trainer's, without autodiff), over all ranks;
/// in a data-parallel run, first checks that the ranks' weights are equal (and tells
/// `observer`).
fn measure<AB: AutodiffBackend>(
    model: &LanguageModel<AB::InnerBackend>,
    trainer: &Trainer<AB>,
    dataset: &Dataset,
    settings: &RunConfig,
    last: bool,
    stop: Option<&AtomicBool>,
    observer: &mut dyn Observer,
) -> Result<Losses, TrainError> {
    let (t, iter, strategy) = (&settings.train, trainer.iter(), trainer.strategy());
    let eval_iters = if last {
        t.final_eval_iters
    } else {
        t.eval_iters
    };
    let seed = eval_seed(t.seed, iter);
    let losses = evaluate_with(
        model,
        &dataset.split,
        t.batch_size,
        strategy.shard(),
        eval_iters,
        seed,
        &mut |done, total| {
            observer.on_eval_batch(done, total);
            match stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        },
    )?;
    if strategy.ranks() > 1 {
        let weights = weights_fingerprint(model);
        strategy.check_same(&format!("the weights at step {iter}"), weights)?;
        let (spent, exchanges) = strategy.time_in_sums();
        observer.on_ranks_agree(&Agreement {
            iter,
            weights,
            exchange_s: spent.as_secs_f64(),
            exchanges,
        });
    }
    let [train, val] = strategy.mean(&[losses.train, losses.val])?[..] else {
        unreachable!("the mean of two values is two values")
    };
    Ok(Losses { train, val })
}

/// The sample shown at an evaluation (`sample_tokens` tokens from a newline), if any.
fn sample_now<B: Backend>(
    model: &LanguageModel<B>,
    dataset: &Dataset,
    settings: &RunConfig,
    iter: usize,
) -> Result<Option<String>, TrainError> {
    let t = &settings.train;
    if t.sample_tokens == 0 {
        return Ok(None);
    }
    let request = SampleRequest::from_newline(t.sample_tokens, t.seed ^ iter as u64);
    let mut texts = sample_texts(model, &dataset.tokenizer, &request, |_, _| {})?;
    Ok(texts.pop())
}

/// What every rank of a data-parallel run must agree on before training: the model and
/// training settings, the data (vocabulary, split sizes, the first tokens), the world
/// size and the checkpoint's step when resuming.
#[cfg(feature = "distributed")]
fn settings_fingerprint<B: Backend>(
    settings: &RunConfig,
    dataset: &Dataset,
    collective: &Collective<B>,
    resume: &Option<Checkpoint>,
) -> Result<u64, TrainError> {
    use quill_data::TokenSource;
    let split = &dataset.split;
    let mut first = Vec::new();
    let n = split.train.token_count().min(256);
    split.train.read_window(0, n, &mut first)?;
    let settings = serde_json::json!({
        "run": settings,
        "vocab_size": dataset.tokenizer.vocab_size(),
        "tokens": [split.train.token_count(), split.val.token_count()],
        "first_tokens": first,
        "world_size": collective.world().size,
        "resume_iter": resume.as_ref().map(|c| c.state.iter),
    });
    Ok(fingerprint(settings.to_string().as_bytes()))
}

/// A fingerprint of a model's weights (every parameter's bits, in the order of their
/// names): ranks compare it at each evaluation.
pub fn weights_fingerprint<B: Backend>(model: &LanguageModel<B>) -> u64 {
    let mut hash = fingerprint(&[]);
    for tensor in quill_model::params::export(model) {
        hash = fingerprint_more(hash, tensor.name.as_bytes());
        for v in &tensor.values {
            hash = fingerprint_more(hash, &v.to_bits().to_le_bytes());
        }
    }
    hash
}

/// The checkpoint of the run as it is now.
fn capture<AB: AutodiffBackend>(
    settings: &RunConfig,
    dataset: &Dataset,
    trainer: &Trainer<AB>,
    state: &TrainState,
) -> Result<Checkpoint, TrainError> {
    let optimizer = trainer.optimizer().state();
    Checkpoint::capture(
        settings.clone(),
        dataset.tokenizer.clone(),
        &trainer.weights(),
        optimizer,
        state.clone(),
    )
}

/// `cpu · GPT 4 layers × 128 (4 heads) · 0.80 M parameters · 1.54 M tokens seen`.
fn plot_title(out: &RunDir, settings: &RunConfig, iter: usize) -> String {
    let name = out
        .path()
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    let model = match &settings.model {
        ModelConfig::Gpt(g) => format!(
            "GPT {} layers × {} ({} heads)",
            g.n_layer, g.n_embd, g.n_head
        ),
        ModelConfig::Bigram(b) => format!("bigram × {}", b.n_embd),
    };
    format!(
        "{name} · {model} · {} parameters · {} tokens seen",
        human_count(settings.model.num_params()),
        human_count((iter * settings.tokens_per_iter()) as f64)
    )
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
