//! `quill sample`: stream text from a checkpoint.

use std::io::Write;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use std::time::{Duration, Instant};

use quill_model::{Penalties, SampleRequest, SampleTimings, SamplingOptions};

use super::prepared::PreparedModel;

use crate::backend::{self, Job};
use crate::cli::SampleArgs;

pub fn run(args: SampleArgs) -> Result<()> {
    let started = Instant::now();
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let prepared = PreparedModel::open(&args.checkpoint, args.weights.weights)?;
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
            min_p: args.min_p,
            penalties: Penalties {
                repetition: args.repetition_penalty,
                frequency: args.frequency_penalty,
                presence: args.presence_penalty,
            },
            seed: args.seed,
            kv_cache: !args.no_kv_cache,
        },
        stop: args.stop,
    };
    request.options.validate()?;
    (prepared.checkpoint.tokenizer)
        .encode(&request.prompt)
        .context("prompt")?;
    prepared.check(&target, request.num_samples)?;
    target.run(SampleJob {
        prepared,
        request,
        verbose: args.verbose.then_some(started),
    })
}

struct SampleJob {
    prepared: PreparedModel,
    request: SampleRequest,
    /// With `--verbose`: when the command started.
    verbose: Option<Instant>,
}

impl Job for SampleJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let model = self.prepared.model::<B::InnerBackend>(&device)?;
        let loaded = self.verbose.map(|started| started.elapsed());
        let (checkpoint, request) = (&self.prepared.checkpoint, &self.request);
        crate::backend::on_pool_worker(|| -> Result<()> {
            let mut stdout = std::io::stdout().lock();
            let streaming = request.num_samples == 1;
            if streaming {
                write!(stdout, "{}", request.prompt)?;
                stdout.flush()?;
            }
            let samples =
                quill_model::sample(&model, &checkpoint.tokenizer, request, |_, piece| {
                    if streaming {
                        // A closed stdout (e.g. `| head`) just ends the stream.
                        let _ = write!(stdout, "{piece}").and_then(|_| stdout.flush());
                    }
                })?;
            if streaming {
                writeln!(stdout)?;
            } else {
                for text in &samples.texts {
                    writeln!(stdout, "{}{text}\n---------------", request.prompt)?;
                }
            }
            if let (Some(loaded), Some(started)) = (loaded, self.verbose) {
                eprint!("{}", timings(loaded, &samples.timings, started.elapsed()));
            }
            Ok(())
        })?
    }
}

/// `--verbose`'s lines, as llama.cpp prints its own: the load (reading the checkpoint
/// and building the model), the prompt's pass (which gives each sample its first
/// token), the decoding steps after it, and the whole command.
fn timings(load: Duration, t: &SampleTimings, total: Duration) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rate = |tokens: usize, d: Duration| match d.is_zero() {
        true => String::new(),
        false => format!(
            " ({:.2} ms a token, {:.1} tokens/s)",
            ms(d) / tokens.max(1) as f64,
            tokens as f64 / d.as_secs_f64()
        ),
    };
    format!(
        "# load: {:.1} ms\n# prompt: {} in {:.1} ms{}\n# decoding: {} in {:.1} ms{}\n# total: {:.1} ms\n",
        ms(load),
        super::count(t.prompt_tokens as u64, "token"),
        ms(t.prompt),
        rate(t.prompt_tokens, t.prompt),
        super::count(t.decoded_tokens as u64, "token"),
        ms(t.decoding),
        rate(t.decoded_tokens, t.decoding),
        ms(total),
    )
}
