//! The training loop, composed of the public pieces: a [`Trainer`] steps, [`evaluate`](crate::evaluate())
//! measures, the [`RunDir`] records and checkpoints, an [`Observer`] shows progress.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use quill_data::Dataset;
use quill_model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, RunConfig, TrainState};
use crate::distributed::{Collective, World, fingerprint, fingerprint_more};
use crate::evaluate::{Losses, evaluate_rows};
use crate::inference::{SampleRequest, sample_texts};
use crate::metrics::EvalRecord;
use crate::run_dir::RunDir;
use crate::schedule::learning_rate;
use crate::step::{Batch, Trainer};
use crate::{TrainConfig, TrainError};

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

/// Everything a run needs besides the backend.
pub struct Run<'a> {
    /// Settings.
    pub config: TrainConfig,
    /// The corpus.
    pub dataset: &'a Dataset,
    /// The run directory, opened (and locked) with [`RunDir::open`]; `None` records and
    /// saves nothing (the ranks other than 0 of a data-parallel run).
    pub out: Option<RunDir>,
    /// A checkpoint to continue from.
    pub resume: Option<Checkpoint>,
    /// A checkpoint whose weights a fresh run starts from, with a fresh optimizer
    /// (finetuning; see [`Checkpoint::init_model`]). Ignored when resuming.
    pub init_from: Option<Checkpoint>,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop at the next step.
    pub stop: Option<&'a AtomicBool>,
    /// One rank of a data-parallel run: `batch_size` is per rank, each step's batch of
    /// `size × batch_size` rows is drawn from the shared seeded stream and this rank
    /// trains on its slice; gradients, losses and the stop are agreed on by all ranks.
    pub parallel: Option<World>,
}

/// Evaluation batches differ between evaluations but are fixed by the random seed.
fn eval_seed(seed: u64, iter: usize) -> u64 {
    seed ^ 0x5EED_E7A1_0000_0000 ^ iter as u64
}

/// Trains as `run` says, on `device`: evaluates every `eval_interval` steps and at the
/// end (recording, checkpointing and sampling each time), steps otherwise.
pub fn train<AB: AutodiffBackend>(
    run: Run<'_>,
    device: &AB::Device,
    observer: &mut dyn Observer,
) -> Result<Outcome, TrainError> {
    let Run {
        config,
        dataset,
        mut out,
        resume,
        init_from,
        stop,
        parallel,
    } = run;
    config.validate()?;
    dataset.split.check_block_size(config.block_size)?;
    let run_config = RunConfig {
        model: config.model_config(dataset.tokenizer.vocab_size()),
        train: config.clone(),
    };
    let collective = match parallel {
        Some(world) => {
            let params = run_config.model.num_params() as usize;
            let collective = Collective::<AB::InnerBackend>::join(world, device, params)?;
            let settings = settings_fingerprint(&run_config, dataset, &collective, &resume)?;
            collective.check_same(
                "the settings (model, training, data, world size or checkpoint)",
                settings,
            )?;
            Some(collective)
        }
        None => None,
    };
    // Every rank draws the whole batch of all ranks (the same seeded stream as one
    // process with that batch) and keeps its own rows.
    let (ranks, rows) = collective.as_ref().map_or((1, 0..config.batch_size), |c| {
        let r = c.world().rank;
        (
            c.world().size,
            r * config.batch_size..(r + 1) * config.batch_size,
        )
    });
    let mut sampler =
        quill_data::BatchSampler::new(config.batch_size * ranks, config.block_size, config.seed)?;
    let tokens_per_iter = config.tokens_per_iter() * ranks;
    let (mut trainer, mut state) = match &resume {
        Some(checkpoint) => {
            checkpoint.check_resumable(&run_config.model)?;
            let model = checkpoint.model::<AB>(device)?;
            let s = &checkpoint.state;
            let trainer = Trainer::resume(
                model,
                &config,
                s.iter,
                &checkpoint.optimizer,
                s.optimizer_steps,
            )?;
            sampler.set_rng(s.sampler_rng.clone());
            if let Some(out) = out.as_mut() {
                out.resume_at(s.iter, s.iter >= config.max_iters)?;
            }
            (trainer, s.clone())
        }
        None => {
            if let Some(out) = out.as_mut() {
                out.start_fresh()?;
            }
            let model = match &init_from {
                Some(init) => {
                    dataset.check_tokenizer(&init.tokenizer)?;
                    init.init_model::<AB>(&run_config.model, device)?
                }
                None => run_config.model.init::<AB>(config.seed, device)?,
            };
            (
                Trainer::new(model, &config),
                TrainState::new(sampler.rng().clone()),
            )
        }
    };
    if let Some(collective) = collective {
        trainer = trainer.with_collective(collective);
    }
    let (start, clock, elapsed_before) = (state.iter, Instant::now(), state.elapsed_s);
    let mut stop_agreed = false;
    let mut since_eval = (Instant::now(), 0usize);
    let mut lr = learning_rate(&config, start);
    observer.on_start(start, config.max_iters);

    loop {
        let iter = trainer.iter();
        state.iter = iter;
        state.elapsed_s = elapsed_before + clock.elapsed().as_secs_f64();
        state.sampler_rng = sampler.rng().clone();
        state.optimizer_steps = trainer.optimizer().steps();
        let last = iter >= config.max_iters;
        // A resumed run already evaluated at its first step, unless that is the end.
        let resumed_here = resume.is_some() && iter == start && !last;
        if (last || iter % config.eval_interval == 0) && !resumed_here {
            let eval_iters = if last {
                config.final_eval_iters
            } else {
                config.eval_iters
            };
            let model = trainer.model().valid();
            let mut losses = evaluate_rows(
                &model,
                &dataset.split,
                config.batch_size * ranks,
                rows.clone(),
                eval_iters,
                eval_seed(config.seed, iter),
            )?;
            if let Some(collective) = trainer.collective() {
                let weights = weights_fingerprint(&model);
                collective.check_same(&format!("the weights at step {iter}"), weights)?;
                let (spent, exchanges) = collective.time_in_sums();
                observer.on_ranks_agree(&Agreement {
                    iter,
                    weights,
                    exchange_s: spent.as_secs_f64(),
                    exchanges,
                });
                let all = collective.gather(&[losses.train, losses.val])?;
                let mean = |i: usize| all.iter().map(|l| l[i]).sum::<f32>() / ranks as f32;
                losses = Losses {
                    train: mean(0),
                    val: mean(1),
                };
            }
            let seconds = since_eval.0.elapsed().as_secs_f64().max(1e-9);
            let record = EvalRecord {
                iter,
                train_loss: losses.train,
                val_loss: losses.val,
                lr,
                tokens_per_s: (since_eval.1 * tokens_per_iter) as f64 / seconds,
                elapsed_s: state.elapsed_s,
            };
            if let Some(out) = out.as_mut() {
                out.record_eval(&record, &plot_title(out, &run_config, iter))?;
            }
            let sample = (config.sample_chars > 0)
                .then(|| {
                    let request =
                        SampleRequest::from_newline(config.sample_chars, config.seed ^ iter as u64);
                    sample_texts(&model, &dataset.tokenizer, &request, |_, _| {})
                })
                .transpose()?;
            observer.on_eval(&record, sample.as_ref().map(|s| s[0].as_str()));
            let improved = state
                .best_val_loss
                .is_none_or(|best| record.val_loss < best);
            if improved {
                state.best_val_loss = Some(record.val_loss);
            }
            if let Some(out) = &out {
                let checkpoint = capture(&run_config, dataset, &trainer, &state);
                out.save_checkpoint(&checkpoint, improved)?;
            }
            if last {
                return Ok(Outcome::Finished(record));
            }
            since_eval = (Instant::now(), 0);
        }
        let stop_wanted = stop.is_some_and(|s| s.load(Ordering::SeqCst));
        // Ranks stop together, after the step in which one of them asked to.
        if stop_agreed || (stop_wanted && ranks == 1) {
            if let Some(out) = out.as_mut() {
                out.flush()?;
                out.save_checkpoint(&capture(&run_config, dataset, &trainer, &state), false)?;
            }
            return Ok(Outcome::Interrupted(iter));
        }

        let step_start = Instant::now();
        let batch = Batch::sample_rows(
            &mut sampler,
            &dataset.split.train,
            config.grad_accum,
            rows.clone(),
            device,
        )?;
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
        };
        if let Some(out) = out.as_mut() {
            out.record_step(&report)?;
        }
        observer.on_step(&report);
    }
}

/// What every rank of a data-parallel run must agree on before training: the model and
/// training settings, the data (vocabulary, split sizes, the first tokens), the world
/// size and the checkpoint's step when resuming.
fn settings_fingerprint<B: burn::tensor::backend::Backend>(
    run_config: &RunConfig,
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
        "run": run_config,
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
pub fn weights_fingerprint<B: burn::tensor::backend::Backend>(
    model: &quill_model::LanguageModel<B>,
) -> u64 {
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
    run_config: &RunConfig,
    dataset: &Dataset,
    trainer: &Trainer<AB>,
    state: &TrainState,
) -> Checkpoint {
    let optimizer = trainer.optimizer().state();
    Checkpoint::capture(
        run_config.clone(),
        dataset.tokenizer.clone(),
        trainer.model(),
        optimizer,
        state.clone(),
    )
}

/// `cpu · GPT 4 layers × 128 (4 heads) · 0.80 M parameters · 1.54 M tokens seen`.
fn plot_title(out: &RunDir, run_config: &RunConfig, iter: usize) -> String {
    let name = out
        .path()
        .file_name()
        .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    let model = match &run_config.model {
        ModelConfig::Gpt(g) => format!(
            "GPT {} layers × {} ({} heads)",
            g.n_layer, g.n_embd, g.n_head
        ),
        ModelConfig::Bigram(b) => format!("bigram × {}", b.n_embd),
    };
    format!(
        "{name} · {model} · {} parameters · {} tokens seen",
        human_count(run_config.model.num_params()),
        human_count((iter * run_config.train.tokens_per_iter()) as f64)
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
