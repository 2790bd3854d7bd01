//! `quill sample`: stream text from a checkpoint.

use std::io::Write;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use quill_model::{SamplingOptions, WeightFormat};
use quill_train::{Checkpoint, MemoryEstimate, SampleRequest, sample_texts};

use crate::backend::{self, Job};
use crate::cli::SampleArgs;

pub fn run(args: SampleArgs) -> Result<()> {
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let dir = super::checkpoint_dir(&args.checkpoint, quill_train::Which::Best, "--checkpoint")?;
    let checkpoint = Checkpoint::load(&dir)?;
    let prompt = match (&args.prompt, &args.prompt_file) {
        (_, Some(file)) if file.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("--prompt-file -: standard input is not UTF-8 text")?;
            text
        }
        (_, Some(file)) => {
            std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?
        }
        (Some(prompt), None) => prompt.clone(),
        (None, None) => String::new(),
    };
    let request = SampleRequest {
        prompt,
        max_new_tokens: args.max_new_tokens,
        num_samples: args.num_samples,
        options: SamplingOptions {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            kv_cache: !args.no_kv_cache,
        },
        stop: args.stop,
    };
    request.options.validate()?;
    checkpoint
        .tokenizer
        .encode(&request.prompt)
        .context("prompt")?;
    target.check_memory(&MemoryEstimate::sampling(
        &checkpoint.config.model,
        request.num_samples,
        target.dtype_bytes(),
    ))?;
    target.check_weights(args.weights.weights)?;
    target.run(SampleJob {
        checkpoint,
        request,
        weights: args.weights.weights,
    })
}

struct SampleJob {
    checkpoint: Checkpoint,
    request: SampleRequest,
    weights: WeightFormat,
}

impl Job for SampleJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let model =
            (self.checkpoint.model::<B::InnerBackend>(&device)?).with_weights(self.weights)?;
        let (checkpoint, request) = (&self.checkpoint, &self.request);
        crate::backend::on_pool_worker(|| -> Result<()> {
            let mut stdout = std::io::stdout().lock();
            let streaming = request.num_samples == 1;
            if streaming {
                write!(stdout, "{}", request.prompt)?;
                stdout.flush()?;
            }
            let texts = sample_texts(&model, &checkpoint.tokenizer, request, |_, piece| {
                if streaming {
                    // A closed stdout (e.g. `| head`) just ends the stream.
                    let _ = write!(stdout, "{piece}").and_then(|_| stdout.flush());
                }
            })?;
            if streaming {
                writeln!(stdout)?;
            } else {
                for text in texts {
                    writeln!(stdout, "{}{text}\n---------------", request.prompt)?;
                }
            }
            Ok(())
        })?
    }
}
