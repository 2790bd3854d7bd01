//! `quill train`: preset + config file + flags → the trainer, with a progress bar,
//! Ctrl-C handling, and a sample at the end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use quill_train::checkpoint::{best_dir, last_dir};
use quill_train::{Checkpoint, Dataset, Outcome, Run, TrainConfig, sample_text, train};

use crate::backend::{self, Job};
use crate::cli::TrainArgs;
use crate::progress::Progress;

static STOP: AtomicBool = AtomicBool::new(false);

/// Characters of the sample printed when training ends.
const FINAL_SAMPLE_CHARS: usize = 500;

pub fn run(args: TrainArgs) -> Result<()> {
    let resume = args.resume.as_deref().map(Checkpoint::load).transpose()?;
    let preset = args.preset.as_deref().unwrap_or("cpu");
    let mut config = match &resume {
        Some(checkpoint) => checkpoint.config.train.clone(),
        None => TrainConfig::preset(preset)?,
    };
    if let Some(file) = &args.config {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        config.apply(&TrainConfig::overrides_from_toml(&text)?);
    }
    config.apply(&args.overrides);
    config.validate()?;
    let out = match (&args.out, &args.resume) {
        (Some(out), _) => out.clone(),
        (None, Some(dir)) => dir.parent().map(PathBuf::from).unwrap_or_default(),
        (None, None) => PathBuf::from("runs").join(preset),
    };
    let corpus = super::load_corpus(&args.source)?;
    let dataset = match &resume {
        Some(checkpoint) => Dataset::with_tokenizer(
            &corpus.text,
            checkpoint.tokenizer.clone(),
            config.val_fraction,
        )?,
        None => Dataset::new(&corpus.text, config.val_fraction)?,
    };
    println!(
        "# effective configuration ({})",
        match &args.resume {
            Some(dir) => format!("resumed from {}", dir.display()),
            None => format!("preset {preset}"),
        }
    );
    print!("{}", toml::to_string(&config)?);
    println!(
        "# corpus: {} ({} characters, vocab_size {}), run directory: {}",
        corpus.source.display(),
        corpus.text.chars().count(),
        dataset.tokenizer.vocab_size(),
        out.display()
    );
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint (Ctrl-C again quits at once)");
    });
    backend::run(
        args.target.device,
        args.target.dtype,
        TrainJob {
            config,
            dataset,
            out,
            resume,
        },
    )
}

struct TrainJob {
    config: TrainConfig,
    dataset: Dataset,
    out: PathBuf,
    resume: Option<Checkpoint>,
}

impl Job for TrainJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let run = Run {
            config: self.config,
            dataset: &self.dataset,
            out: self.out.clone(),
            resume: self.resume,
            stop: Some(&STOP),
        };
        let mut progress = Progress::new();
        let outcome = train::<B>(run, &device, &mut progress);
        progress.finish();
        match outcome? {
            Outcome::Interrupted(iter) => {
                let last = last_dir(&self.out);
                println!(
                    "stopped after {iter} iterations; checkpoint saved to {}",
                    last.display()
                );
                println!("resume with: quill train --resume {}", last.display());
            }
            Outcome::Finished(record) => {
                println!(
                    "done: {} iterations, train loss {:.4}, val loss {:.4}, {:.1} s",
                    record.iter, record.train_loss, record.val_loss, record.elapsed_s
                );
                let best = best_dir(&self.out);
                let checkpoint = Checkpoint::load(&best)?;
                let model = checkpoint.model::<B::InnerBackend>(&device)?;
                let text = sample_text(
                    &model,
                    &checkpoint.tokenizer,
                    FINAL_SAMPLE_CHARS,
                    checkpoint.config.train.seed,
                )?;
                println!("--- a sample from {} ---\n{text}", best.display());
            }
        }
        Ok(())
    }
}
