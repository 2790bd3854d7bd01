//! `quill bench`: training, evaluation and sampling speed of a preset on one device.

use anyhow::{Result, ensure};
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::Dataset;
use quill_train::bench::{SampleBench, TrainBench, bench_sampling, bench_training, peak_rss_mb};
use quill_train::{MemoryEstimate, TrainConfig};
use serde::Serialize;

use crate::backend::{self, Job};
use crate::cli::BenchArgs;

/// Everything `quill bench --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    preset: String,
    backend: String,
    dtype: String,
    batch_size: usize,
    block_size: usize,
    tokens_per_iter: usize,
    num_threads: usize,
    #[serde(flatten)]
    train: TrainBench,
    #[serde(flatten)]
    sample: Option<SampleBench>,
    peak_rss_mb: Option<f64>,
    /// The measured settings (the PyTorch comparator in bench/ reads them).
    config: TrainConfig,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let config = TrainConfig::preset(&args.preset)?;
    ensure!(args.iters > 0, "--iters must be at least 1");
    ensure!(args.eval_iters > 0, "--eval-iters must be at least 1");
    let target = backend::prepare(args.target.device, args.target.dtype)?;
    let spec = TrainConfig::preset_tokenizer(&args.preset);
    let dataset = super::load_dataset(&args.source, None, spec, config.val_fraction)?.dataset;
    target.check_memory(&MemoryEstimate::training(
        &config,
        dataset.tokenizer.vocab_size(),
        target.dtype_bytes(),
    ))?;
    let job = BenchJob {
        config: config.clone(),
        dataset,
        args: &args,
    };
    let (backend, train, sample) = target.run(job)?;
    let report = Report {
        preset: args.preset.clone(),
        backend,
        dtype: args.target.dtype.to_string(),
        batch_size: config.batch_size,
        block_size: config.block_size,
        tokens_per_iter: config.tokens_per_iter(),
        num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        train,
        sample,
        peak_rss_mb: peak_rss_mb(),
        config,
    };
    super::print_report(args.json, &report, print_text)?;
    if let Some(sample) = &report.sample {
        ensure!(
            sample.identical_tokens,
            "the cached and recomputed samples differ"
        );
    }
    Ok(())
}

fn print_text(r: &Report) {
    let t = &r.train;
    println!(
        "{} on {} ({}), batch {} x block {} = {} tokens/iter",
        r.preset, r.backend, r.dtype, r.batch_size, r.block_size, r.tokens_per_iter
    );
    println!("first step (cold):  {:.2} s", t.first_step_s);
    println!(
        "training:           {:.1} ms/iter, {:.0} tokens/s over {} steps after {} warm-up (mean loss {:.4})",
        t.ms_per_iter, t.train_tokens_per_s, t.iters, t.warmup_iters, t.mean_loss
    );
    println!(
        "model FLOPs:        {:.3} MFLOP/token, {:.4} TFLOP/s achieved",
        t.flops_per_token / 1e6,
        t.achieved_tflops
    );
    println!("evaluation:         {:.0} tokens/s", t.eval_tokens_per_s);
    if let Some(s) = &r.sample {
        println!(
            "sampling:           {:.1} tokens/s with the KV cache, {:.1} without ({:.1}x){}",
            s.sample_tokens_per_s,
            s.sample_tokens_per_s_no_cache,
            s.kv_cache_speedup,
            if s.identical_tokens {
                ", same tokens"
            } else {
                ", TOKENS DIFFER"
            }
        );
    }
    if let Some(mb) = r.peak_rss_mb {
        println!("peak RSS:           {mb:.0} MiB");
    }
}

struct BenchJob<'a> {
    config: TrainConfig,
    dataset: Dataset,
    args: &'a BenchArgs,
}

impl Job for BenchJob<'_> {
    type Output = (String, TrainBench, Option<SampleBench>);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let args = self.args;
        let train = bench_training::<B>(
            &self.config,
            &self.dataset,
            &device,
            args.warmup,
            args.iters,
            args.eval_iters,
        )?;
        let sample = if args.sample_tokens > 0 {
            let model_config = self
                .config
                .model_config(self.dataset.tokenizer.vocab_size());
            let model = model_config.init::<B::InnerBackend>(self.config.seed, &device)?;
            Some(bench_sampling(
                &model,
                args.sample_tokens,
                self.config.seed,
            )?)
        } else {
            None
        };
        Ok((<B as Backend>::name(&device), train, sample))
    }
}
