//! `quill parity`: the same initial weights and batches on the reference CPU backend and
//! on `--device`; the losses must agree (initial within 1e-4, 20 AdamW steps within 1e-3).

use anyhow::{Result, ensure};
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::Dataset;
use quill_model::ModelOverrides;
use quill_model::params::{NamedTensor, export};
use quill_train::parity::{Parity, compare, trajectory};
use quill_train::{DEFAULT_PRESET, Preset, RunConfig, RunOverrides, Sources, TrainOverrides};
use serde::Serialize;

use crate::backend::{self, DType, DeviceChoice, Job};
use crate::cli::ParityArgs;

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    dtype: String,
    steps: usize,
    #[serde(flatten)]
    parity: Parity,
    losses: Vec<f32>,
    reference_losses: Vec<f32>,
}

/// The model parity runs by default: small enough for a software GPU in CI.
fn tiny() -> RunOverrides {
    RunOverrides {
        model: ModelOverrides {
            n_layer: Some(2),
            n_head: Some(2),
            n_embd: Some(32),
            block_size: Some(32),
            ..Default::default()
        },
        train: TrainOverrides {
            batch_size: Some(4),
            warmup_iters: Some(0), // full learning rate from the first step: the updates matter
            ..Default::default()
        },
    }
}

pub fn run(args: ParityArgs) -> Result<()> {
    let mut flags = match args.preset {
        Some(_) => RunOverrides::default(),
        None => tiny(),
    };
    flags.model.dropout = Some(0.0);
    let config = RunConfig::resolve(&Sources {
        preset: args.preset.as_deref(),
        flags: Some(&flags),
        ..Default::default()
    })?;
    // A device that is not compiled in, not present or failing to start fails here,
    // before the data is read and before the reference run.
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let spec = Preset::named(args.preset.as_deref().unwrap_or(DEFAULT_PRESET))?.tokenizer;
    let dataset = super::load_dataset(
        &(&args.source).into(),
        None,
        spec,
        config.train.val_fraction,
    )?;
    let dataset = dataset.dataset;
    let vocab_size = dataset.tokenizer.vocab_size();
    let job = |weights: Option<Vec<NamedTensor>>| ParityJob {
        config: &config,
        dataset: &dataset,
        weights,
        steps: args.steps,
    };
    let reference = backend::prepare(DeviceChoice::Cpu, DType::F32)?;
    let (_, reference, weights) = reference.run(job(None))?;
    let (backend, losses, _) = target.run(job(Some(weights)))?;
    let parity = compare(
        &reference,
        &losses,
        args.initial_tolerance,
        args.step_tolerance,
    );
    let report = Report {
        backend,
        dtype: args.target.dtype().to_string(),
        steps: args.steps,
        parity,
        losses,
        reference_losses: reference,
    };
    super::print_report(args.json, &report, |report| {
        let p = &report.parity;
        println!(
            "{} ({}) vs cpu reference, vocab {vocab_size}: initial loss {:.6} (diff {:.2e}), max diff over {} steps {:.2e}, final {:.6} vs {:.6}: {}",
            report.backend,
            report.dtype,
            p.reference_initial_loss,
            p.initial_diff,
            report.steps,
            p.max_step_diff,
            p.final_losses.1,
            p.final_losses.0,
            if p.within_tolerance {
                "same"
            } else {
                "DIFFERENT"
            }
        );
    })?;
    ensure!(
        report.parity.within_tolerance,
        "the losses on {} differ from the CPU reference: initial by {:.2e} (tolerance {:.0e}), steps by up to {:.2e} (tolerance {:.0e})",
        report.backend,
        report.parity.initial_diff,
        args.initial_tolerance,
        report.parity.max_step_diff,
        args.step_tolerance
    );
    Ok(())
}

/// Runs the trajectory on one backend; with no weights given, draws them there from the
/// seed and returns them too (the reference run).
struct ParityJob<'a> {
    config: &'a RunConfig,
    dataset: &'a Dataset,
    weights: Option<Vec<NamedTensor>>,
    steps: usize,
}

impl Job for ParityJob<'_> {
    type Output = (String, Vec<f32>, Vec<NamedTensor>);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let vocab_size = self.dataset.tokenizer.vocab_size();
        let weights = match self.weights {
            Some(weights) => weights,
            None => {
                let model = self
                    .config
                    .model_for(vocab_size)
                    .init::<B::InnerBackend>(self.config.train.seed, &device)?;
                export(&model)
            }
        };
        let losses = trajectory::<B>(
            self.config,
            vocab_size,
            &weights,
            &self.dataset.split.train,
            self.steps,
            &device,
        )?;
        Ok((<B as Backend>::name(&device), losses, weights))
    }
}
