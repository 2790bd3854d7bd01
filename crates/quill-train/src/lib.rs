//! # quill-train
//!
//! Training for quill's models, nanoGPT-style:
//!
//! - [`config`]: [`TrainConfig`], the presets and their overrides.
//! - [`schedule`]: warmup + cosine (or constant, or warmup–stable–decay) learning rate.
//! - [`optim`]: AdamW with decay groups, global-norm clipping, gradient accumulation.
//! - [`muon`]: Muon, which may update the hidden matrices instead of AdamW.
//! - [`step`]: the public optimizer step: a [`Trainer`] (model + AdamW + schedule) whose
//!   [`Trainer::step`] takes a [`Batch`] and returns a [`StepOutput`].
//! - [`evaluate`](mod@evaluate): train and val [`Losses`] of a model.
//! - [`train`](mod@train): the loop that composes them with the run directory:
//!   evaluation, samples, records, checkpoints.
//! - [`inference`]: prompts, stop sequences and streaming for sampling.
//! - [`distributed`]: data parallelism over Burn's collective engine: ranks, the
//!   coordinator, faults.
//! - [`checkpoint`]: self-contained, atomically written checkpoint directories.
//! - [`hf`]: Hugging Face GPT-2 checkpoints to and from quill's.
//! - [`run_dir`]: the run directory: one trainer at a time, records, cleanup after
//!   killed writers.
//! - [`metrics`]: `metrics.jsonl` and `steps.jsonl` records.
//! - [`plot`]: `loss.svg` and `loss.png`.
//! - [`memory`]: the memory a run needs, estimated before anything is allocated.
//! - [`bench`](mod@bench): throughput measurements for `quill bench`.
//! - [`parity`]: the same losses on every backend, for `quill parity`.
//!
//! ```no_run
//! use burn_autodiff::Autodiff;
//! use burn_flex::Flex;
//! use quill_data::Dataset;
//! use quill_train::{Run, RunDir, TrainConfig, train};
//!
//! let text = std::fs::read_to_string("data/tinyshakespeare/input.txt").unwrap();
//! let mut config = TrainConfig::preset("cpu").unwrap();
//! config.max_iters = 100;
//! let dataset = Dataset::new(&text, config.val_fraction).unwrap();
//! let out = RunDir::open("runs/demo").unwrap();
//! let run = Run { config, dataset: &dataset, out: Some(out), resume: None, init_from: None, stop: None, parallel: None };
//! let outcome = train::<Autodiff<Flex>>(run, &Default::default(), &mut ()).unwrap();
//! println!("{outcome:?}");
//! ```

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod error;
pub mod evaluate;
pub mod hf;
pub mod inference;
pub mod memory;
pub mod metrics;
pub mod muon;
pub mod optim;
pub mod parity;
pub mod plot;
pub mod run_dir;
pub mod schedule;
mod shard;
pub mod step;
pub mod train;

pub use checkpoint::{Checkpoint, RunConfig};
pub use config::{TrainConfig, TrainOverrides};
pub use error::TrainError;
pub use evaluate::{Losses, estimate_loss, estimate_loss_rows, evaluate, evaluate_rows};
pub use inference::{SampleRequest, sample_texts};
pub use memory::MemoryEstimate;
pub use run_dir::RunDir;
pub use step::{Batch, StepOutput, Trainer};
pub use train::{Agreement, Observer, Outcome, Run, StepReport, train};
