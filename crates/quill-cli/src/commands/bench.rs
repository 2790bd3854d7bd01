//! `quill bench`: training, evaluation and sampling speed of a preset on one device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, ensure};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_data::Dataset;
use quill_model::WeightFormat;
use quill_train::bench::{
    SampleBench, ToLossBench, TrainBench, bench_sampling, bench_to_loss, bench_training,
    peak_rss_mb, time_generation,
};
use quill_train::{MemoryEstimate, Preset, RunConfig, RunOverrides, Sources, TrainOverrides};
use serde::Serialize;

use crate::backend::{self, Job};
use crate::cli::BenchArgs;

use super::prepared::PreparedModel;

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
    /// The measured settings, as flat keys (the PyTorch comparator in bench/ reads them).
    config: serde_json::Value,
}

pub fn run(args: BenchArgs) -> Result<()> {
    if let Some(dir) = &args.checkpoint {
        return checkpoint(dir, &args);
    }
    ensure!(
        args.weights.weights == WeightFormat::F32,
        "--weights applies to --checkpoint (a preset's fresh model trains in f32)"
    );
    let file = super::config_file(args.config.as_deref())?;
    let flags = RunOverrides {
        train: TrainOverrides {
            seed: args.seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let config = RunConfig::resolve(&Sources {
        preset: Some(&args.preset),
        file: Some(&file),
        flags: Some(&flags),
        ..Default::default()
    })?;
    ensure!(args.iters > 0, "--iters must be at least 1");
    ensure!(args.eval_iters > 0, "--eval-iters must be at least 1");
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let spec = Preset::named(&args.preset)?.tokenizer;
    let dataset = super::load_dataset(
        &(&args.source).into(),
        None,
        spec,
        config.train.val_fraction,
    )?;
    let dataset = dataset.dataset;
    target.check_memory(&MemoryEstimate::training(
        &config,
        dataset.tokenizer.vocab_size(),
        target.dtype_bytes(),
    ))?;
    if let Some(loss) = args.to_loss {
        ensure!(
            loss.is_finite() && loss > 0.0,
            "--to-loss must be a positive number"
        );
        ensure!(args.eval_every > 0, "--eval-every must be at least 1");
        let job = ToLossJob {
            config: config.clone(),
            dataset,
            target: loss,
            eval_every: args.eval_every,
        };
        let (backend, result) = target.run(job)?;
        let report = ToLossReport {
            preset: args.preset.clone(),
            backend,
            num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            to_loss: result,
            config: serde_json::to_value(config.flat())?,
        };
        return super::print_report(args.json, &report, print_to_loss);
    }
    let job = BenchJob {
        config: config.clone(),
        dataset,
        args: &args,
    };
    let (backend, train, sample) = target.run(job)?;
    let report = Report {
        preset: args.preset.clone(),
        backend,
        dtype: args.target.dtype().to_string(),
        batch_size: config.train.batch_size,
        block_size: config.block_size(),
        tokens_per_iter: config.tokens_per_iter(),
        num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        train,
        sample,
        peak_rss_mb: peak_rss_mb(),
        config: serde_json::to_value(config.flat())?,
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
    if t.shards > 1 {
        println!(
            "                    each batch as {} shards of rows, one per thread",
            t.shards
        );
    }
    println!(
        "TensorBoard event:  {:.1} µs/step written ({:.3}% of a step)",
        t.tensorboard_ms_per_iter * 1e3,
        100.0 * t.tensorboard_ms_per_iter / t.ms_per_iter
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

/// What `quill bench --to-loss LOSS --json` prints.
#[derive(Debug, Serialize)]
struct ToLossReport {
    preset: String,
    backend: String,
    num_threads: usize,
    #[serde(flatten)]
    to_loss: ToLossBench,
    /// The settings, as flat keys.
    config: serde_json::Value,
}

fn print_to_loss(r: &ToLossReport) {
    let t = &r.to_loss;
    let last = t.curve.last().map_or(f32::NAN, |&(_, loss)| loss);
    match t.reached {
        true => println!(
            "{} on {} (seed {}): val {last:.4} <= {} after {} steps: {:.1} s of training, {:.1} s wall with evaluations",
            r.preset, r.backend, r.config["seed"], t.target, t.steps, t.train_s, t.wall_s
        ),
        false => println!(
            "{} on {} (seed {}): val {last:.4} > {} after all {} steps ({:.1} s of training): not reached",
            r.preset, r.backend, r.config["seed"], t.target, t.steps, t.train_s
        ),
    }
}

struct ToLossJob {
    config: RunConfig,
    dataset: Dataset,
    target: f32,
    eval_every: usize,
}

impl Job for ToLossJob {
    type Output = (String, ToLossBench);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let c = &self.config;
        let result = bench_to_loss::<B>(
            c,
            &self.dataset,
            &device,
            self.target,
            self.eval_every,
            c.train.eval_iters,
        )?;
        Ok((<B as Backend>::name(&device), result))
    }
}

/// What `quill bench --checkpoint DIR --json` prints.
#[derive(Debug, Serialize)]
struct CheckpointReport {
    checkpoint: PathBuf,
    backend: String,
    num_params: usize,
    num_threads: usize,
    sample_new_tokens: usize,
    sample_tokens_per_s: f64,
    /// How the weight matrices were stored (`--weights`).
    weights: WeightFormat,
    /// Bytes of the parameters as stored: what one decoded token reads.
    weight_bytes: usize,
    /// The machine's read bandwidth over a buffer of `weight_bytes` (GB/s, best of 5
    /// passes on every thread; see `quill_kernels::decode::read_bandwidth`).
    read_bandwidth_gb_s: f64,
    /// `read_bandwidth / weight_bytes`: no decoder that reads every weight once per
    /// token is faster.
    bound_tokens_per_s: f64,
    /// `sample_tokens_per_s / bound_tokens_per_s`.
    fraction_of_bound: f64,
    /// Seconds to read the checkpoint and build the model on the device.
    load_s: f64,
    peak_rss_mb: Option<f64>,
}

fn checkpoint(dir: &Path, args: &BenchArgs) -> Result<()> {
    ensure!(args.sample_tokens > 0, "--sample-tokens must be at least 1");
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let start = Instant::now();
    let prepared = PreparedModel::open(dir, args.weights.weights)?;
    prepared.check(&target, 1)?;
    let (dir, weights) = (&prepared.dir.clone(), prepared.weights);
    let job = SampleJob {
        prepared,
        tokens: args.sample_tokens,
        seed: 1337,
        start,
    };
    let (backend, num_params, weight_bytes, load_s, tokens_per_s) = target.run(job)?;
    let bandwidth = quill_kernels::decode::read_bandwidth(weight_bytes, 5);
    let bound = bandwidth / weight_bytes as f64;
    let report = CheckpointReport {
        checkpoint: dir.to_path_buf(),
        backend,
        num_params,
        num_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        sample_new_tokens: args.sample_tokens,
        sample_tokens_per_s: tokens_per_s,
        weights,
        weight_bytes,
        read_bandwidth_gb_s: bandwidth / 1e9,
        bound_tokens_per_s: bound,
        fraction_of_bound: tokens_per_s / bound,
        load_s,
        peak_rss_mb: peak_rss_mb(),
    };
    super::print_report(args.json, &report, |r| {
        println!(
            "{} on {}: {:.1}M parameters, loaded in {:.2} s",
            r.checkpoint.display(),
            r.backend,
            r.num_params as f64 / 1e6,
            r.load_s
        );
        println!(
            "sampling:           {:.2} tokens/s with the KV cache ({} tokens), {} weights",
            r.sample_tokens_per_s, r.sample_new_tokens, r.weights
        );
        println!(
            "bandwidth bound:    {:.2} tokens/s ({:.1} MB of weights at {:.2} GB/s read): {:.0}% of it",
            r.bound_tokens_per_s,
            r.weight_bytes as f64 / 1e6,
            r.read_bandwidth_gb_s,
            100.0 * r.fraction_of_bound
        );
        if let Some(mb) = r.peak_rss_mb {
            println!("peak RSS:           {mb:.0} MiB");
        }
    })
}

struct SampleJob {
    prepared: PreparedModel,
    tokens: usize,
    seed: u64,
    start: Instant,
}

impl Job for SampleJob {
    /// Backend, parameters, stored bytes, load seconds, tokens/s.
    type Output = (String, usize, usize, f64, f64);
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output> {
        let model = self.prepared.model::<B::InnerBackend>(&device)?;
        drop(self.prepared);
        let load_s = self.start.elapsed().as_secs_f64();
        // Timed as quill sample runs it: on a pool worker.
        let (_, seconds) = backend::on_pool_worker(|| {
            time_generation(&model, 8, self.seed, true)?;
            time_generation(&model, self.tokens, self.seed, true)
        })??;
        let name = <B as Backend>::name(&device);
        Ok((
            name,
            model.num_params(),
            quill_model::weights::stored_bytes(&model),
            load_s,
            self.tokens as f64 / seconds,
        ))
    }
}

struct BenchJob<'a> {
    config: RunConfig,
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
            let model_config = self.config.model_for(self.dataset.tokenizer.vocab_size());
            let seed = self.config.train.seed;
            let model = model_config.init::<B::InnerBackend>(seed, &device)?;
            // Timed as quill sample runs it: on a pool worker.
            let sampled =
                backend::on_pool_worker(|| bench_sampling(&model, args.sample_tokens, seed))?;
            Some(sampled?)
        } else {
            None
        };
        Ok((<B as Backend>::name(&device), train, sample))
    }
}
