//! The command line, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use quill_train::{PRESETS, RunOverrides};

use crate::backend::{DType, DeviceChoice};

/// Train and sample GPT language models on characters or subword tokens (nanoGPT in
/// Rust, on Burn).
#[derive(Debug, Parser)]
#[command(name = "quill", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show a corpus or a prepared dataset (size, vocabulary, split sizes); 'quill data
    /// prepare' tokenizes a corpus into token files.
    Data(DataArgs),
    /// Train a model (default: the cpu preset on tiny Shakespeare), then print a sample.
    Train(Box<TrainArgs>),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Measure train and val loss of a checkpoint.
    Eval(EvalArgs),
    /// Serve a checkpoint over HTTP: an OpenAI-compatible completions API, with
    /// concurrent requests decoded together, and a playground page at /.
    Serve(ServeArgs),
    /// Measure speed: training steps, evaluation and sampling (with and without the KV cache).
    Bench(BenchArgs),
    /// Compare runs: a table of run directories (default: every one under runs/) with
    /// their preset, size, steps, best val loss, speed, wall time and state.
    Runs(RunsArgs),
    /// Draw the val and smoothed train losses of several runs on one picture.
    Plot(PlotArgs),
    /// List the backends compiled in and the devices each can see.
    Devices(DevicesArgs),
    /// Check that --device computes the same losses as the CPU backend: same initial
    /// weights, same batches, then AdamW steps.
    Parity(ParityArgs),
    /// Convert a Hugging Face GPT-2 checkpoint into a quill checkpoint, downloading it
    /// from the Hugging Face Hub unless --from names a local copy.
    Import(ImportArgs),
    /// Write a quill GPT checkpoint in another tool's layout (hf: Hugging Face GPT-2,
    /// which transformers loads).
    Export(ExportArgs),
    /// Start several ranks of a data-parallel run on this machine, as torchrun does:
    /// quill launch --nproc 2 -- train --preset cpu
    Launch(LaunchArgs),
}

/// Arguments of 'quill launch'.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Ranks to start on this machine (one per device, or per group of CPU cores).
    #[arg(long, value_name = "N")]
    pub nproc: usize,
    /// Machines taking part; start 'quill launch' on each with its own --node-rank.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's place, 0 to M - 1; machine 0 runs rank 0, the coordinator.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub node_rank: usize,
    /// HOST:PORT of rank 0, reachable from every machine [default: 127.0.0.1:29500 on
    /// one machine]
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// The quill command each rank runs (train and its arguments), after --. Its
    /// --device may list one device per rank (cuda:0,cuda:1); a bare cuda or wgpu
    /// gives rank R of this machine device R.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// Data-parallel training across processes and machines. torchrun's environment
/// variables are read when the flags are absent.
#[derive(Debug, Args)]
pub struct ParallelArgs {
    /// Processes training one model together (data parallel); --batch-size is per
    /// process.
    #[arg(long, env = "WORLD_SIZE", value_name = "N")]
    pub world_size: Option<usize>,
    /// This process's rank, 0 to N - 1; rank 0 coordinates, writes the run directory
    /// and prints progress.
    #[arg(long, env = "RANK", value_name = "R")]
    pub rank: Option<usize>,
    /// HOST:PORT where rank 0 coordinates; rank R also uses PORT + 1 + R [default:
    /// MASTER_ADDR:MASTER_PORT, or 127.0.0.1:29500]
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// Seconds to wait for every rank to join, and for any one step's exchange.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub collective_timeout: u64,
    /// A file holding the run's secret, which every process of the run proves to the
    /// others ('quill launch' makes one for its ranks) [default: the QUILL_SECRET
    /// environment variable]
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Listen on every network interface (0.0.0.0) instead of only the coordinator's
    /// address (rank 0) and this machine's address towards it.
    #[arg(long)]
    pub listen_any: bool,
}

/// The checkpoint formats 'quill import' reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// Hugging Face GPT-2 (config.json and model.safetensors).
    Gpt2,
    /// A nanoGPT checkpoint (train.py's ckpt.pt, with prepare.py's meta.pkl for
    /// characters).
    Nanogpt,
}

/// The layouts 'quill export' writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Hugging Face GPT-2 with its tokenizer: config.json, model.safetensors,
    /// generation_config.json and tokenizer.json (+ its config) for
    /// AutoModelForCausalLM and AutoTokenizer.
    Hf,
}

/// Arguments of 'quill import'.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import.
    #[arg(value_enum)]
    pub format: ImportFormat,
    /// Which GPT-2 to download: gpt2 (124M), gpt2-medium (350M), gpt2-large (774M) or
    /// gpt2-xl (1558M).
    #[arg(long, default_value = "gpt2")]
    pub model: String,
    /// gpt2: a directory holding the checkpoint's config.json and model.safetensors
    /// (works offline); without it, they are downloaded into data/hf/MODEL from the Hub
    /// (or from the HF_ENDPOINT mirror). nanogpt: the ckpt.pt (or its out directory).
    #[arg(long, value_name = "PATH", required_if_eq("format", "nanogpt"))]
    pub from: Option<PathBuf>,
    /// nanogpt: the meta.pkl of a character model's data (data/NAME/meta.pkl); without
    /// it, the model must have GPT-2's vocabulary.
    #[arg(long, value_name = "FILE")]
    pub meta: Option<PathBuf>,
    /// Where to write the quill checkpoint.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Pad the vocabulary to a multiple of this (nanoGPT: 64, giving 50304); the padding
    /// is never sampled.
    #[arg(long, default_value_t = 1)]
    pub pad_vocab: usize,
}

/// Arguments of 'quill export'.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The layout to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// The quill checkpoint to export.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Where to write it (a new or empty directory, or an earlier export).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Where the work runs: `--device` and `--dtype`.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Device: auto (CUDA, else a hardware WGPU adapter, else CPU), cpu, flex, ndarray,
    /// wgpu, wgpu:cpu, wgpu:N, cuda, cuda:N ('quill devices' lists what this machine has).
    /// quill train takes a list, cuda:0,cuda:1: one worker per device, training one
    /// model together.
    #[arg(long, default_value = "auto")]
    pub device: DeviceList,
    /// Float type of the computation: f32 (every backend), bf16 (CUDA, CPU), f16 (CUDA,
    /// CPU, and WGPU adapters with 16-bit float shaders) [default: f32, or for
    /// train --resume the float type the run trained in]
    #[arg(long, value_enum)]
    pub dtype: Option<DType>,
}

/// `--weights`: how a loaded model's matrices are stored while it samples or evaluates.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    /// Store the weight matrices for this run as f32 (as trained), bf16, f16, or q8
    /// (8-bit, one scale per 32 weights): converted once at load, never saved;
    /// activations stay f32. Narrower weights are read faster (sampling reads every
    /// weight once per token). CPU (--device cpu, --dtype f32) only.
    #[arg(long, value_enum, default_value_t = quill_model::WeightFormat::F32)]
    pub weights: quill_model::WeightFormat,
}

/// One device, or several separated by commas (data parallelism in one process).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceList(pub Vec<DeviceChoice>);

impl std::str::FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(DeviceList)
    }
}

impl DeviceArgs {
    /// The float type `--dtype` asks for, f32 when it is not given.
    pub fn dtype(&self) -> DType {
        self.dtype.unwrap_or_default()
    }

    /// The one device of a command that uses one.
    pub fn one(&self) -> anyhow::Result<DeviceChoice> {
        match self.device.0.as_slice() {
            [one] => Ok(*one),
            many => anyhow::bail!(
                "--device lists {} devices; only quill train uses several",
                many.len()
            ),
        }
    }
}

/// Where the corpus comes from: `--data` and `--val-data` ([`quill_data::source`]
/// resolves them).
#[derive(Debug, Default, Args)]
pub struct DataFlags {
    /// A UTF-8 text file, a directory of *.txt files, or a dataset directory made by
    /// 'quill data prepare' [default: tiny Shakespeare at data/tinyshakespeare/input.txt,
    /// downloaded if missing; with the gpt2 tokenizer, data/shakespeare-gpt2, prepared
    /// from it if missing]
    /// Also llm.c's token shards: a pattern ('fineweb10B/fineweb_train_*.bin', with
    /// --val-data), or a directory holding *train_*.bin and *val_*.bin shards.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// The validation shards when --data is a pattern of training shards
    /// ('fineweb10B/fineweb_val_*.bin').
    #[arg(long, value_name = "PATTERN", requires = "data")]
    pub val_data: Option<String>,
}

impl From<&DataFlags> for quill_data::source::DataSource {
    fn from(flags: &DataFlags) -> Self {
        quill_data::source::DataSource {
            data: flags.data.clone(),
            val_data: flags.val_data.clone(),
            read_only: false,
        }
    }
}

/// `quill data`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DataArgs {
    /// prepare: tokenize a corpus into a dataset directory.
    #[command(subcommand)]
    pub command: Option<DataCommand>,
    /// The corpus or prepared dataset to show (the same as --data).
    #[arg(value_name = "PATH", conflicts_with = "data")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub source: DataFlags,
    /// Fraction of the corpus held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `quill data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Tokenize a corpus once, as a stream on all cores, into train.bin and val.bin
    /// (llm.c's token-shard layout) with the tokenizer and a meta.json.
    Prepare(PrepareArgs),
    /// Put tiny Shakespeare in place (data/tinyshakespeare/input.txt): downloaded, or
    /// copied from a file you have with --from; its sha256 is checked either way.
    Get(GetArgs),
}

/// `quill data get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// A copy of tiny Shakespeare you already have (no network needed).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
}

/// `quill data prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// A UTF-8 text file, or a directory read recursively (files with an --ext extension).
    #[arg(long, value_name = "PATH")]
    pub data: PathBuf,
    /// char, gpt2 (GPT-2's BPE, bundled) or bpe:VOCAB_SIZE (a byte-level BPE trained on
    /// the corpus' training part).
    #[arg(long, default_value = "char")]
    pub tokenizer: String,
    /// The dataset directory to write (replaced atomically if it is a dataset already).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Fraction of the corpus (its last bytes) held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Token files: llmc (256-int32 header, then uint16 tokens, or uint32 above 65,536
    /// ids) or nanogpt (raw uint16, as nanoGPT's prepare.py writes).
    #[arg(long, value_enum, default_value_t = TokenFileFormat::Llmc)]
    pub format: TokenFileFormat,
    /// Extensions of the files read from a directory, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "txt")]
    pub ext: Vec<String>,
    /// Replace invalid UTF-8 by U+FFFD (and count it) instead of stopping at it.
    #[arg(long)]
    pub lossy: bool,
    /// Cut each split into shards of this many tokens (train_000000.bin, …,
    /// val_000000.bin, …), as llm.c keeps large corpora, instead of one train.bin and one
    /// val.bin.
    #[arg(long, value_name = "N")]
    pub shard_tokens: Option<u64>,
    /// Print one JSON object instead of text: {"dataset": meta.json, "seconds": per phase}.
    #[arg(long)]
    pub json: bool,
}

/// `--format` of `quill data prepare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenFileFormat {
    /// llm.c / modded-nanogpt shards.
    Llmc,
    /// nanoGPT's raw uint16 files.
    Nanogpt,
}

/// `quill train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The settings to start from [default: cpu] (--help lists the presets)
    #[arg(long, conflicts_with = "resume", long_help = presets_help("[default: cpu]"))]
    pub preset: Option<String>,
    /// TOML file of settings (keys as the flags, in snake_case), applied over the preset.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub source: DataFlags,
    /// Run directory for checkpoints and metrics [default: runs/PRESET, or runs/PRESET-2,
    /// -3, … when that holds a run; a resumed run continues in its own directory]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the run that --out holds (its checkpoints, records and pictures); without
    /// it, a directory holding another run is refused.
    #[arg(long, requires = "out")]
    pub overwrite: bool,
    /// Continue from this checkpoint directory (e.g. runs/cpu/last, or the run
    /// directory runs/cpu for its last/), exactly where it stopped.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start from the weights of this checkpoint (e.g. one made by 'quill import gpt2')
    /// with a fresh optimizer: finetuning. Its model settings are kept; training
    /// settings come from its config (or --preset), then --config, then flags, and only
    /// --dropout and a smaller --block-size may change the model.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,
    /// Check every setting, print the effective configuration, the memory estimate, the
    /// run directory and the time (three steps of a throwaway model of the same shapes
    /// measure it), and stop without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// When stdout is not a terminal (a pipe, a log file), print a step line (loss, lr,
    /// ms, tokens/s, GFLOP/s) every this many steps; 0 prints none.
    #[arg(long, default_value_t = 10, value_name = "STEPS")]
    pub log_interval: usize,
    /// Write no TensorBoard event file in the run directory (by default one records
    /// the configuration, every step's loss, learning rate, gradient norm and speed,
    /// and each evaluation's losses and sample).
    #[arg(long)]
    pub no_tensorboard: bool,
    #[command(flatten)]
    pub target: DeviceArgs,
    #[command(flatten)]
    pub parallel: ParallelArgs,
    #[command(flatten)]
    pub overrides: RunOverrides,
}

/// `--preset`'s long help: every preset with its one line, from the registry.
fn presets_help(default: &str) -> String {
    let mut help = format!("The settings to start from {default}:\n");
    for preset in &PRESETS {
        help += &format!("\n  {:<22} {}", preset.name, preset.description);
    }
    help
}

/// `quill sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Checkpoint directory (e.g. runs/cpu/best).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Text to continue [default: start from a newline].
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file ('-': standard input).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Tokens to generate per sample.
    #[arg(long, default_value_t = 500)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample only from the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only from the most likely tokens totalling this probability.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Sample only from tokens at least this fraction as likely as the most likely one.
    #[arg(long)]
    pub min_p: Option<f64>,
    /// Divide the positive logits (multiply the negative ones) of every token already in
    /// the text, prompt included, by this; 1 is off, 1.1–1.3 discourages repeating.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Subtract this, times the times it was generated, from each token's logit
    /// (OpenAI's, −2 to 2); 0 is off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f64,
    /// Subtract this from the logit of each token generated at least once (OpenAI's,
    /// −2 to 2); 0 is off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f64,
    /// Number of samples, generated as one batch.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Stop a sample once it has produced this text.
    #[arg(long)]
    pub stop: Option<String>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Recompute the whole context for every token instead of using the key/value
    /// cache (same text, slower).
    #[arg(long)]
    pub no_kv_cache: bool,
    /// Print on stderr where the time went: loading, the prompt, decoding.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub target: DeviceArgs,
}

/// `quill serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Checkpoint directory (e.g. runs/cpu/best).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Address to listen on; 127.0.0.1 answers this machine only. Another address
    /// (0.0.0.0: every interface) needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The name clients use for the model; the checkpoint's path is accepted too
    /// [default: the run's name, cpu for runs/cpu/best]
    #[arg(long)]
    pub model_name: Option<String>,
    /// Sequences decoded together at most (a request asking for n completions counts n).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_batch: usize,
    /// Requests that may wait for a place in the batch; more are refused (503).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_queue: usize,
    /// The most tokens one completion may ask for (max_tokens); past the model's
    /// context the window slides, as in quill sample.
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_tokens_limit: usize,
    /// Require this key as 'Authorization: Bearer KEY' on every request but /health.
    #[arg(
        long,
        env = "QUILL_API_KEY",
        hide_env_values = true,
        conflicts_with = "api_key_file"
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The most connections open at once; more are closed as they arrive. A
    /// connection that sends no complete request header within 10 seconds (idle, or
    /// sending slowly) is closed.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_connections: usize,
    /// After Ctrl-C or SIGTERM, how long to finish the requests in progress before
    /// stopping anyway (a second signal stops at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
    /// No request log (by default one line per request on stderr: client, method,
    /// path, status, tokens in and out, milliseconds).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub target: DeviceArgs,
}

/// `quill runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Run directories [default: every directory in runs/]; others are skipped.
    #[arg(value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Show only the settings that differ between the runs.
    #[arg(long)]
    pub diff: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `quill plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run directories.
    #[arg(value_name = "RUN", required = true)]
    pub runs: Vec<PathBuf>,
    /// The picture to write: .png or .svg [default: plot.png, or plot-2.png, … when
    /// that exists]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The x axis: optimizer steps, training tokens, or seconds of training (the steps'
    /// own time, evaluations left out: a time-to-target comparison).
    #[arg(long, value_enum, default_value_t = PlotAxis::Step)]
    pub x: PlotAxis,
    /// A logarithmic loss axis.
    #[arg(long)]
    pub log_y: bool,
}

/// `quill plot --x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlotAxis {
    /// Optimizer steps.
    Step,
    /// Training tokens seen.
    Tokens,
    /// Seconds of training.
    Time,
}

/// `quill eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub source: DataFlags,
    /// Batches per split [default: the checkpoint's final_eval_iters].
    #[arg(long)]
    pub eval_iters: Option<usize>,
    /// Seed of the evaluation batches.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `quill bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The preset to measure, from freshly initialised weights (--help lists them)
    #[arg(long, default_value = "cpu", long_help = presets_help("to measure, from freshly initialised weights"))]
    pub preset: String,
    /// Measure sampling from this checkpoint instead (e.g. an imported GPT-2): tokens/s
    /// with the KV cache, from one start token, after an 8-token warm-up, and the peak
    /// RSS. No training, no data.
    #[arg(long, value_name = "DIR", conflicts_with = "preset")]
    pub checkpoint: Option<PathBuf>,
    /// TOML file of training settings (keys as the flags of quill train, in snake_case),
    /// applied over the preset.
    #[arg(long, value_name = "FILE", conflicts_with = "checkpoint")]
    pub config: Option<PathBuf>,
    /// Seed of the weights and batches [default: the preset's].
    #[arg(long, conflicts_with = "checkpoint")]
    pub seed: Option<u64>,
    /// Time to target instead of speed: train from fresh weights until the validation
    /// loss is at most LOSS (or max_iters steps are done), evaluating every --eval-every
    /// steps on the same eval_iters batches of evenly spaced windows, and report the
    /// steps and seconds it took.
    #[arg(long, value_name = "LOSS", conflicts_with = "checkpoint")]
    pub to_loss: Option<f32>,
    /// With --to-loss: steps between evaluations.
    #[arg(long, default_value_t = 50)]
    pub eval_every: usize,
    #[command(flatten)]
    pub source: DataFlags,
    /// Timed training steps.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Untimed training steps after the first (cold) one, before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed evaluation batches.
    #[arg(long, default_value_t = 10)]
    pub eval_iters: usize,
    /// New tokens generated by each sampling path (with and without the KV cache); 0
    /// skips sampling.
    #[arg(long, default_value_t = 200)]
    pub sample_tokens: usize,
    // With --checkpoint: how the weights are stored while sampling.
    #[command(flatten)]
    pub weights: WeightsArgs,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `quill devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `quill parity`.
#[derive(Debug, Args)]
pub struct ParityArgs {
    /// Use this preset's model (dropout set to 0) instead of the small default model
    /// (the cpu preset with 2 layers, 2 heads, n_embd 32, block 32, batch 4, no warm-up).
    #[arg(long, long_help = presets_help("instead of the small default model (the cpu preset with 2 layers, 2 heads, n_embd 32, block 32, batch 4, no warm-up); dropout is set to 0"))]
    pub preset: Option<String>,
    #[command(flatten)]
    pub source: DataFlags,
    /// AdamW steps after the initial loss.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Largest allowed difference of the initial loss.
    #[arg(long, default_value_t = 1e-4)]
    pub initial_tolerance: f32,
    /// Largest allowed difference of the losses after each step.
    #[arg(long, default_value_t = 1e-3)]
    pub step_tolerance: f32,
    #[command(flatten)]
    pub target: DeviceArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}
