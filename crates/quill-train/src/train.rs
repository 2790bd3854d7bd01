//! The training loop, composed of the public pieces: a [`Trainer`] steps, [`evaluate`]
//! measures, the [`RunDir`] records and checkpoints, an [`Observer`] shows progress.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use quill_data::Dataset;
use quill_model::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, RunConfig, TrainState};
use crate::evaluate::evaluate;
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
    /// The run directory, opened (and locked) with [`RunDir::open`].
    pub out: RunDir,
    /// A checkpoint to continue from.
    pub resume: Option<Checkpoint>,
    /// A checkpoint whose weights a fresh run starts from, with a fresh optimizer
    /// (finetuning; see [`Checkpoint::init_model`]). Ignored when resuming.
    pub init_from: Option<Checkpoint>,
    /// Set (e.g. by Ctrl-C) to save a checkpoint and stop at the next step.
    pub stop: Option<&'a AtomicBool>,
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
    } = run;
    config.validate()?;
    dataset.split.check_block_size(config.block_size)?;
    let run_config = RunConfig {
        model: config.model_config(dataset.tokenizer.vocab_size()),
        train: config.clone(),
    };
    let mut sampler = config.batch_sampler()?;
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
            out.resume_at(s.iter, s.iter >= config.max_iters)?;
            (trainer, s.clone())
        }
        None => {
            out.start_fresh()?;
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
    let (start, clock, elapsed_before) = (state.iter, Instant::now(), state.elapsed_s);
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
            let losses = evaluate(
                &model,
                &dataset.split,
                config.batch_size,
                eval_iters,
                eval_seed(config.seed, iter),
            )?;
            let seconds = since_eval.0.elapsed().as_secs_f64().max(1e-9);
            let record = EvalRecord {
                iter,
                train_loss: losses.train,
                val_loss: losses.val,
                lr,
                tokens_per_s: (since_eval.1 * config.tokens_per_iter()) as f64 / seconds,
                elapsed_s: state.elapsed_s,
            };
            out.record_eval(&record, &plot_title(&out, &run_config, iter))?;
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
            let checkpoint = capture(&run_config, dataset, &trainer, &state);
            out.save_checkpoint(&checkpoint, improved)?;
            if last {
                return Ok(Outcome::Finished(record));
            }
            since_eval = (Instant::now(), 0);
        }
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            out.flush()?;
            out.save_checkpoint(&capture(&run_config, dataset, &trainer, &state), false)?;
            return Ok(Outcome::Interrupted(iter));
        }

        let step_start = Instant::now();
        let batch = Batch::sample(
            &mut sampler,
            &dataset.split.train,
            config.grad_accum,
            device,
        )?;
        let step = trainer.step(&batch)?;
        lr = step.lr;
        since_eval.1 += 1;
        let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
        let report = StepReport {
            iter: iter + 1,
            loss: step.loss,
            lr: step.lr,
            grad_norm: step.grad_norm,
            tokens_per_s: config.tokens_per_iter() as f64 / seconds,
        };
        out.record_step(&report)?;
        observer.on_step(&report);
    }
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
