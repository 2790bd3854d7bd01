//! `quill import gpt2`, `quill import nanogpt` and `quill export --format hf`: Hugging
//! Face GPT-2 checkpoints in and out, nanoGPT checkpoints in (the conversions are
//! `quill_train::hf` and `quill_train::nanogpt`; this adds the download and the command
//! line).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use quill_model::ModelConfig;
use quill_train::checkpoint::CHECKPOINT;
use quill_train::hf::{self, GPT2_MODELS, HF_FILES};
use quill_train::nanogpt::NanoGpt;
use quill_train::{Checkpoint, MemoryEstimate};

use crate::backend::{self, DType, DeviceChoice, Job};
use crate::cli::{ExportArgs, ImportArgs, ImportFormat};

/// The Hub, unless `HF_ENDPOINT` names a mirror (as `huggingface_hub` reads it).
const HUB: &str = "https://huggingface.co";

/// `(n_layer, n_head, n_embd)` of each released GPT-2, to check what was downloaded.
fn released_shape(model: &str) -> Option<(usize, usize, usize)> {
    match model {
        "gpt2" => Some((12, 12, 768)),
        "gpt2-medium" => Some((24, 16, 1024)),
        "gpt2-large" => Some((36, 20, 1280)),
        "gpt2-xl" => Some((48, 25, 1600)),
        _ => None,
    }
}

pub fn import(args: ImportArgs) -> Result<()> {
    quill_data::atomic::check_owned(&args.out, &CHECKPOINT)?;
    if args.format == ImportFormat::Nanogpt {
        return import_nanogpt(args);
    }
    if args.meta.is_some() {
        bail!("--meta is for nanogpt checkpoints; a GPT-2 checkpoint has GPT-2's tokenizer");
    }
    let (dir, released) = match &args.from {
        Some(dir) => (dir.clone(), None),
        None => (download(&args.model)?, Some(args.model.as_str())),
    };
    let target = backend::prepare(DeviceChoice::Cpu, DType::F32)?;
    // The model is built to check the weights: its memory first.
    let model = ModelConfig::Gpt(hf::read_config(&dir, args.pad_vocab)?);
    target.check_memory(&MemoryEstimate::sampling(&model, 1, target.dtype_bytes()))?;
    let checkpoint = target.run(ImportJob {
        dir: dir.clone(),
        pad_vocab: args.pad_vocab,
    })?;
    let ModelConfig::Gpt(gpt) = &checkpoint.config.model else {
        unreachable!("hf::import builds GPTs")
    };
    if let Some((model, expected)) = released.and_then(|m| Some((m, released_shape(m)?))) {
        let shape = (gpt.n_layer, gpt.n_head, gpt.n_embd);
        if shape != expected {
            bail!(
                "{}: n_layer, n_head, n_embd are {shape:?}, but {model} has {expected:?}; delete the directory to download it again",
                dir.display(),
            );
        }
    }
    checkpoint.save(&args.out)?;
    println!(
        "imported {} into {}: {:.1}M parameters, {}, vocabulary {}{}, {}",
        dir.display(),
        args.out.display(),
        gpt.num_params() / 1e6,
        shape(gpt),
        gpt.vocab_size,
        match gpt.padded_vocab_size() {
            rows if rows > gpt.vocab_size => format!(" (padded to {rows})"),
            _ => String::new(),
        },
        match gpt.activation {
            quill_model::Activation::Gelu => "GELU",
            quill_model::Activation::GeluTanh => "GELU (tanh)",
            quill_model::Activation::Relu2 => "ReLU²",
        }
    );
    println!(
        "sample:   quill sample --checkpoint {} --prompt \"Hello, I'm a language model,\"",
        args.out.display()
    );
    println!(
        "finetune: quill train --init-from {} --data data/NAME (a dataset prepared with --tokenizer gpt2)",
        args.out.display()
    );
    Ok(())
}

/// An imported GPT's shape, for the line that reports the import.
fn shape(gpt: &quill_model::GptConfig) -> String {
    format!(
        "{} layers, {} heads, {} wide, context {}",
        gpt.n_layer, gpt.n_head, gpt.n_embd, gpt.block_size
    )
}

/// `quill import nanogpt`.
fn import_nanogpt(args: ImportArgs) -> Result<()> {
    let from = args.from.expect("clap requires --from for nanogpt");
    let nanogpt = NanoGpt::read(&from, args.meta.as_deref())?;
    let target = backend::prepare(DeviceChoice::Cpu, DType::F32)?;
    // The model is built to check the weights: its memory first.
    let model = ModelConfig::Gpt(nanogpt.model.clone());
    target.check_memory(&MemoryEstimate::sampling(&model, 1, target.dtype_bytes()))?;
    for note in &nanogpt.notes {
        eprintln!("note: {note}");
    }
    let checkpoint = target.run(NanoGptJob(nanogpt))?;
    checkpoint.save(&args.out)?;
    let ModelConfig::Gpt(gpt) = &checkpoint.config.model else {
        unreachable!("nanoGPT checkpoints are GPTs")
    };
    println!(
        "imported {} into {}: {:.2}M parameters, {}, {} tokenizer ({} tokens), step {}{}",
        from.display(),
        args.out.display(),
        gpt.num_params() / 1e6,
        shape(gpt),
        checkpoint.tokenizer.name(),
        gpt.vocab_size,
        checkpoint.state.iter,
        match checkpoint.optimizer.is_empty() {
            true => ", no optimizer state",
            false => ", with AdamW's state",
        }
    );
    let out = args.out.display();
    println!("sample:   quill sample --checkpoint {out}");
    println!(
        "resume:   quill train --resume {out} --data DATA (the same tokens, prepared by quill)"
    );
    Ok(())
}

struct NanoGptJob(NanoGpt);

impl Job for NanoGptJob {
    type Output = Checkpoint;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Checkpoint> {
        Ok(self.0.import::<B::InnerBackend>(&device)?)
    }
}

struct ImportJob {
    dir: PathBuf,
    pad_vocab: usize,
}

impl Job for ImportJob {
    type Output = Checkpoint;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Checkpoint> {
        Ok(hf::import::<B::InnerBackend>(
            &self.dir,
            self.pad_vocab,
            &device,
        )?)
    }
}

/// `config.json` and `model.safetensors` of `model` in `data/hf/MODEL`, downloaded
/// (with a progress bar) unless already there.
fn download(model: &str) -> Result<PathBuf> {
    if !GPT2_MODELS.contains(&model) {
        bail!(
            "unknown --model {model:?}; the GPT-2 models are {} (or pass --from DIR)",
            GPT2_MODELS.join(", ")
        );
    }
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| HUB.to_string());
    let dir = PathBuf::from("data/hf").join(model);
    for file in HF_FILES {
        let dest = dir.join(file);
        if dest.is_file() {
            continue;
        }
        let url = format!(
            "{}/{model}/resolve/main/{file}",
            endpoint.trim_end_matches('/')
        );
        eprintln!("downloading {url}");
        let bar = crate::progress::bytes_bar();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let result = quill_data::download::fetch_url(&url, &dest, |read, total| {
            bar.set_length(total.max(read));
            bar.set_position(read);
        });
        bar.finish_and_clear();
        result.with_context(|| {
            format!("could not download {model} (pass --from DIR to import a local copy)")
        })?;
    }
    Ok(dir)
}

pub fn export(args: ExportArgs) -> Result<()> {
    let dir = super::checkpoint_dir(&args.checkpoint, quill_train::Which::Best, "--checkpoint")?;
    let checkpoint = Checkpoint::load(&dir)?;
    hf::export(&checkpoint, &args.out)?;
    if let ModelConfig::Gpt(gpt) = &checkpoint.config.model
        && gpt.activation == quill_model::Activation::Gelu
    {
        eprintln!(
            "note: the model uses the exact GELU (activation_function \"gelu\"): transformers honours it; llama.cpp computes GPT-2's tanh GELU for every GPT-2, a ~1e-3 difference in its logits"
        );
    }
    if let ModelConfig::Gpt(gpt) = &checkpoint.config.model
        && gpt.block_size < hf::SHORT_CONTEXT
    {
        eprintln!(
            "note: the model's context is {} tokens: transformers stops with an IndexError past them, prompt included; generation_config.json sets max_length {0}, so pass max_length (or max_new_tokens plus the prompt's tokens) ≤ {0}",
            gpt.block_size
        );
    }
    println!(
        "wrote {}: load it with transformers.AutoModelForCausalLM.from_pretrained(\"{0}\") and AutoTokenizer.from_pretrained(\"{0}\"); README.md is its model card",
        args.out.display(),
    );
    Ok(())
}
