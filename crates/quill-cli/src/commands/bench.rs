//! `quill bench`: speed of a preset's model on the chosen device.

use anyhow::{Result, ensure};
use burn::tensor::backend::AutodiffBackend;
use quill_model::ModelConfig;
use quill_train::TrainConfig;
use quill_train::bench::bench_sampling;

use crate::backend::{self, Job};
use crate::cli::BenchArgs;

/// Tiny Shakespeare's vocabulary size: the benchmarked model's shape.
const VOCAB_SIZE: usize = 65;

pub fn run(args: BenchArgs) -> Result<()> {
    let config = TrainConfig::preset(&args.preset)?;
    ensure!(args.sample_tokens > 0, "--sample-tokens must be at least 1");
    let model = config.model_config(VOCAB_SIZE);
    let job = BenchJob {
        model,
        tokens: args.sample_tokens,
        seed: config.seed,
    };
    let report = backend::run(args.device, job)?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["preset"] = args.preset.into();
        json["block_size"] = config.block_size.into();
        println!("{json}");
    } else {
        println!(
            "{}: sampling {} tokens: {:.1} tokens/s with the KV cache, {:.1} without ({:.1}x){}",
            args.preset,
            report.sample_new_tokens,
            report.sample_tokens_per_s,
            report.sample_tokens_per_s_no_cache,
            report.kv_cache_speedup,
            if report.identical_tokens {
                "; same tokens"
            } else {
                "; TOKENS DIFFER"
            }
        );
    }
    ensure!(
        report.identical_tokens,
        "the cached and recomputed samples differ"
    );
    Ok(())
}

struct BenchJob {
    model: ModelConfig,
    tokens: usize,
    seed: u64,
}

impl Job for BenchJob {
    type Output = quill_train::bench::SampleBench;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let model = self.model.init::<B::InnerBackend>(self.seed, &device)?;
        Ok(bench_sampling(&model, self.tokens, self.seed)?)
    }
}
