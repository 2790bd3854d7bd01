//! # quill-train
//!
//! Training for quill's models, nanoGPT-style. The core builds on its own; the run
//! directory's pictures (`plot`) and data parallelism across processes (`distributed`)
//! are default features.
//!
//! - **Settings** ([`RunConfig`]): the model's [`ModelConfig`](quill_model::ModelConfig)
//!   and the training's [`TrainConfig`], from a [`Preset`], a checkpoint, a `--config`
//!   file and flags, in that order ([`RunConfig::resolve`]).
//! - **The step** ([`Trainer`]): forward, backward, gradients averaged over
//!   micro-batches, shards of rows and the ranks of a [`Strategy`], then [`Optimizer`]
//!   at the [`learning_rate`] of the step.
//! - **Measuring** ([`evaluate()`]): train and val [`Losses`].
//! - **A run** ([`train()`]): the loop that composes them with the run directory
//!   ([`RunDir`]): evaluations, samples, records, [`Checkpoint`]s.
//! - **Data parallelism** (feature `distributed`): `World` and `Collective`, over Burn's
//!   collective engine.
//! - **Hugging Face** ([`hf`]): GPT-2 checkpoints to and from quill's.
//! - **Tools**: [`MemoryEstimate`] (before anything is allocated), [`mod@bench`] (for
//!   `quill bench`), [`parity`] (the same losses on every backend).
//!
//! ```no_run
//! use burn_autodiff::Autodiff;
//! use burn_flex::Flex;
//! use quill_data::Dataset;
//! use quill_train::{Run, RunConfig, RunDir, train};
//!
//! let text = std::fs::read_to_string("data/tinyshakespeare/input.txt").unwrap();
//! let mut config = RunConfig::preset("cpu").unwrap();
//! config.train.max_iters = 100;
//! let dataset = Dataset::new(&text, config.train.val_fraction).unwrap();
//! let run = Run::new(config, &dataset).with_out(RunDir::open("runs/demo").unwrap());
//! let outcome = train::<Autodiff<Flex>>(run, &Default::default(), &mut ()).unwrap();
//! println!("{outcome:?}");
//! ```

#![forbid(unsafe_code)]

mod config;
#[cfg(feature = "distributed")]
mod distributed;
mod error;
mod evaluate;
mod interop;
mod optim;
mod run;
mod schedule;
mod tools;
mod trainer;

pub use config::{
    DEFAULT_PRESET, FlatConfig, OptimizerKind, PRESETS, Preset, RunConfig, RunOverrides, Schedule,
    Sources, TrainConfig, TrainOverrides,
};
#[cfg(feature = "distributed")]
pub use distributed::{
    Collective, DEFAULT_COORDINATOR, RunSecret, World, coordinator_from_env, parse_coordinator,
    run_on_devices, stop_in_process_workers,
};
pub use error::TrainError;
pub use evaluate::{Losses, estimate_loss, estimate_loss_with, evaluate, evaluate_with};
pub use interop::{hf, nanogpt};
pub use optim::{
    AdamW, GradBuffer, LossScaler, Member, Muon, Optimizer, Precision, StepContext, StepOptions,
    UpdateRule, adamw, muon, param_lengths,
};
#[cfg(feature = "plot")]
pub use run::plot::{LossPlot, PlotRun, PlotX, RunsPlot, smoothed};
pub use run::run_dir::{
    OutRequest, RUN, RunCheckpoint, RunDir, Which, check_run_dir, checkpoint_in, checkpoint_of_run,
    fresh_run_dir, holds_run, is_run_dir,
};
pub use run::summary::{
    RunRecords, RunState, RunSummary, differing_settings, flat_settings, preset_of,
};
pub use run::{
    Agreement, Observer, Outcome, Run, StepReport, checkpoint, human_count, metrics, train,
    weights_fingerprint,
};
pub use run::{
    checkpoint::Checkpoint, checkpoint::DataRecord, checkpoint::FloatType, checkpoint::TrainState,
    metrics::EvalRecord,
};
pub use schedule::learning_rate;
pub use tools::memory::{Component, MemoryEstimate, human_bytes};
pub use tools::{bench, parity};
pub use trainer::strategy::{SingleProcess, Strategy, fingerprint, fingerprint_more};
pub use trainer::{Batch, StepOutput, Trainer};
