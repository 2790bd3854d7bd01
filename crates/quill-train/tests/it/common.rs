//! What the trainer's tests share: a small corpus and model on the CPU, an observer that
//! records, and runs that stop and resume.
#![allow(dead_code)] // each test file uses a part

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_data::Dataset;
use quill_model::{GptConfig, ModelConfig};
use quill_train::{
    Checkpoint, EvalRecord, Observer, Outcome, Run, RunConfig, RunDir, Schedule, StepReport,
    TrainConfig, TrainError, train,
};

/// Flex, not NdArray: NdArray's multi-threaded reductions are not deterministic run to
/// run (two identical runs differed in the last bits here), Flex's are.
pub type AB = Autodiff<Flex>;

pub fn corpus() -> String {
    let verse = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
                 First Citizen:\nYou are all resolved rather to die than to famish?\n\n";
    verse.repeat(40)
}

/// The corpus's vocabulary size.
pub fn expected_vocab() -> usize {
    Dataset::new(&corpus(), 0.1).unwrap().tokenizer.vocab_size()
}

pub fn config() -> RunConfig {
    let cpu = RunConfig::preset("cpu").unwrap();
    RunConfig {
        model: ModelConfig::Gpt(GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
            block_size: 16,
            dropout: 0.0,
            bias: false,
            ..Default::default()
        }),
        train: TrainConfig {
            batch_size: 4,
            max_iters: 8,
            eval_interval: 4,
            eval_iters: 2,
            final_eval_iters: 3,
            warmup_iters: 2,
            schedule: Schedule::Cosine,
            sample_tokens: 10,
            ..cpu.train
        },
    }
}

/// `config` changed by `change`.
pub fn tweak(mut config: RunConfig, change: impl FnOnce(&mut RunConfig)) -> RunConfig {
    change(&mut config);
    config
}

/// The GPT settings of `config`.
pub fn gpt(config: &mut RunConfig) -> &mut GptConfig {
    match &mut config.model {
        ModelConfig::Gpt(g) => g,
        ModelConfig::Bigram(_) => panic!("a GPT"),
    }
}

#[derive(Default)]
pub struct Record {
    pub losses: Vec<(usize, f32)>,
    pub evals: Vec<EvalRecord>,
    pub samples: Vec<String>,
    pub stop_after: Option<(usize, &'static AtomicBool)>,
}

impl Observer for Record {
    fn on_step(&mut self, step: &StepReport) {
        self.losses.push((step.iter, step.loss));
        if let Some((n, flag)) = self.stop_after
            && step.iter == n
        {
            flag.store(true, Ordering::SeqCst);
        }
    }
    fn on_eval(&mut self, record: &EvalRecord, sample: Option<&str>) {
        self.evals.push(record.clone());
        self.samples.extend(sample.map(str::to_string));
    }
}

pub fn run_to(
    config: RunConfig,
    out: &Path,
    resume: Option<Checkpoint>,
    stop: Option<&'static AtomicBool>,
    observer: &mut Record,
) -> Result<Outcome, TrainError> {
    let dataset = Dataset::new(&corpus(), config.train.val_fraction).unwrap();
    let mut run = Run::new(config, &dataset)
        .with_out(RunDir::open(out)?)
        .with_resume(resume);
    if let Some(stop) = stop {
        run = run.with_stop(stop);
    }
    train::<AB>(run, &Default::default(), observer)
}

/// Trains `config` into `out`, stopped (as by Ctrl-C) after `stop_after` steps, then
/// resumes from `out/last`; returns the losses of both parts and the final outcome.
pub fn interrupted_then_resumed_with(
    config: RunConfig,
    out: &Path,
    stop_after: usize,
    flag: &'static AtomicBool,
) -> (Vec<(usize, f32)>, Outcome) {
    let mut first = Record {
        stop_after: Some((stop_after, flag)),
        ..Default::default()
    };
    let outcome = run_to(config.clone(), out, None, Some(flag), &mut first).unwrap();
    assert_eq!(outcome, Outcome::Interrupted(stop_after));
    let checkpoint = Checkpoint::load(&out.join("last")).unwrap();
    assert_eq!(checkpoint.state.iter, stop_after);
    let mut second = Record::default();
    let outcome = run_to(config, out, Some(checkpoint), None, &mut second).unwrap();
    let mut losses = first.losses;
    losses.extend(second.losses);
    (losses, outcome)
}
