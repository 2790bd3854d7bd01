//! Hugging Face GPT-2 checkpoints (`config.json` + `model.safetensors`, as
//! `transformers.GPT2LMHeadModel.save_pretrained` writes them) to and from quill
//! checkpoints, as nanoGPT's `GPT.from_pretrained` reads them.
//!
//! The architecture is the same; what differs is the layout:
//! - Hugging Face's `Conv1D` stores Linear weights `[in, out]` (quill's own layout);
//!   quill's checkpoints store them `[out, in]`, as `torch.nn.Linear` and nanoGPT do.
//! - Names: `transformer.h.0.attn.c_attn.weight` in both, but a `GPT2Model` (not
//!   `…LMHeadModel`) file has no `transformer.` prefix, and older files carry the
//!   attention masks `h.N.attn.bias` / `h.N.attn.masked_bias`, which are buffers, not
//!   weights.
//! - The tied LM head is left out of Hugging Face files (`tie_word_embeddings`).
//! - Weights may be float32, float16 or bfloat16; quill computes in float32.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use quill_data::atomic::Marker;
use quill_data::{Rng, Tokenizer};
use quill_model::params::{NamedTensor, transposed};
use quill_model::{Activation, GptConfig, ModelConfig, Norm, Position};
use safetensors::SafeTensors;
use serde_json::{Value, json};

use crate::config::Schedule;
use crate::run::checkpoint::{Checkpoint, TrainState, f32_values, write_safetensors};
use crate::{RunConfig, TrainConfig, TrainError};

/// The GPT-2 checkpoints OpenAI released, as the Hugging Face Hub names them.
pub const GPT2_MODELS: [&str; 4] = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"];

/// The files of a Hugging Face GPT-2 checkpoint directory.
pub const HF_FILES: [&str; 2] = ["config.json", "model.safetensors"];
/// The sampling settings an export carries, as transformers' `generate` reads them.
pub const GENERATION_CONFIG: &str = "generation_config.json";
/// An export carries this marker beside [`HF_FILES`] (a hidden file Hugging Face's
/// loaders ignore): only such a directory (or an empty one) is replaced by [`export`].
pub const EXPORT: Marker = Marker {
    file: ".quill-export.json",
    format: "quill-export-v1",
    alternates: &[],
};

/// GPT-2's LayerNorm epsilon, the only one quill's LayerNorm has.
const LAYER_NORM_EPS: f64 = 1e-5;

/// The weights quill stores `[out, in]` and Hugging Face `[in, out]`.
const CONV1D: [&str; 4] = [
    ".attn.c_attn.weight",
    ".attn.c_proj.weight",
    ".mlp.c_fc.weight",
    ".mlp.c_proj.weight",
];

fn is_conv1d(name: &str) -> bool {
    CONV1D.iter().any(|suffix| name.ends_with(suffix))
}

/// Whether `name` is a Linear layer's weight, which quill holds `[in, out]` and PyTorch
/// `[out, in]`.
pub(crate) fn is_linear_weight(name: &str) -> bool {
    is_conv1d(name) || name == "lm_head.weight"
}

fn error(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::HuggingFace {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads a Hugging Face `config.json` of a GPT-2 model into quill's model settings.
/// Anything GPT-2 does not have (another `model_type`, another LayerNorm epsilon, an
/// activation other than GELU, an MLP other than 4×) is an error naming the setting.
pub fn gpt_config(path: &Path, text: &str) -> Result<GptConfig, TrainError> {
    let bad = |reason: String| error(path, reason);
    let config: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let model_type = config.get("model_type").and_then(Value::as_str);
    if model_type != Some("gpt2") {
        return Err(bad(format!(
            "model_type is {}, but quill imports GPT-2 checkpoints (model_type \"gpt2\")",
            model_type.map_or("missing".to_string(), |t| format!("{t:?}"))
        )));
    }
    let size = |key: &str| -> Result<usize, TrainError> {
        config
            .get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("{key} is missing or not a whole number")))
    };
    let n_embd = size("n_embd")?;
    let activation = match config.get("activation_function").and_then(Value::as_str) {
        Some("gelu_new") | Some("gelu_pytorch_tanh") | None => Activation::GeluTanh,
        Some("gelu") => Activation::Gelu,
        Some(other) => {
            return Err(bad(format!(
                "activation_function {other:?} is not supported (gelu_new or gelu)"
            )));
        }
    };
    let eps = config.get("layer_norm_epsilon").and_then(Value::as_f64);
    if eps.is_some_and(|eps| (eps - LAYER_NORM_EPS).abs() > 1e-12) {
        return Err(bad(format!(
            "layer_norm_epsilon is {}, quill's LayerNorm uses {LAYER_NORM_EPS}",
            eps.unwrap_or_default()
        )));
    }
    if let Some(inner) = config.get("n_inner").and_then(Value::as_u64)
        && inner as usize != 4 * n_embd
    {
        return Err(bad(format!(
            "n_inner is {inner}, quill's MLP is 4 × n_embd = {}",
            4 * n_embd
        )));
    }
    let flag =
        |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
    if flag("scale_attn_by_inverse_layer_idx", false) || !flag("scale_attn_weights", true) {
        return Err(bad(
            "attention scaling other than 1/√head_size (scale_attn_by_inverse_layer_idx or \
             scale_attn_weights) is not supported"
                .to_string(),
        ));
    }
    let gpt = GptConfig {
        vocab_size: size("vocab_size")?,
        block_size: size("n_positions")?,
        n_layer: size("n_layer")?,
        n_head: size("n_head")?,
        n_embd,
        tie_weights: flag("tie_word_embeddings", true),
        activation,
        // The rest is GPT-2's as nanoGPT's defaults are: biases, learned positions,
        // LayerNorm, no padding; dropout 0, as nanoGPT's `from_pretrained` sets it.
        ..Default::default()
    };
    gpt.validate().map_err(|e| bad(e.to_string()))?;
    Ok(gpt)
}

/// The tensors of a Hugging Face `model.safetensors`, renamed and laid out as quill's
/// checkpoints store them, in float32. Attention-mask buffers are dropped.
pub fn read_weights(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, NamedTensor>, TrainError> {
    let bad = |reason: String| error(path, reason);
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        if name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
            continue;
        }
        let name = match name.starts_with("transformer.") || name == "lm_head.weight" {
            true => name,
            false => format!("transformer.{name}"),
        };
        let values = f32_values(view.dtype(), view.data()).ok_or_else(|| {
            bad(format!(
                "tensor {name} is {:?}; expected F32, F16 or BF16",
                view.dtype()
            ))
        })?;
        let shape = view.shape().to_vec();
        let tensor = match is_conv1d(&name) {
            true if shape.len() == 2 => transpose(name.clone(), &shape, &values),
            true => {
                return Err(bad(format!(
                    "tensor {name} has shape {shape:?}, expected 2 dimensions"
                )));
            }
            false => NamedTensor {
                name: name.clone(),
                shape,
                values,
            },
        };
        out.insert(name, tensor);
    }
    Ok(out)
}

/// `[r, c]` → `[c, r]`.
fn transpose(name: String, shape: &[usize], values: &[f32]) -> NamedTensor {
    NamedTensor {
        name,
        shape: vec![shape[1], shape[0]],
        values: transposed(shape, values),
    }
}

/// nanoGPT's `finetune_shakespeare.py` training settings for an imported model: batch 1 × 32
/// micro-batches of the full context, constant learning rate 3e-5, 20 steps,
/// evaluation every 5 steps on 40 batches; the rest are `train.py`'s defaults
/// ([`TrainConfig::default`]: weight decay 0.1, β2 0.95, clipping at 1).
pub fn finetune_config() -> TrainConfig {
    TrainConfig {
        batch_size: 1,
        grad_accum: 32,
        max_iters: 20,
        eval_interval: 5,
        eval_iters: 40,
        final_eval_iters: 40,
        lr: 3e-5,
        min_lr: 3e-5,
        schedule: Schedule::Constant,
        warmup_iters: 0,
        sample_tokens: 100,
        ..Default::default()
    }
}

/// The model of the Hugging Face GPT-2 checkpoint in `dir` (its `config.json`, checked,
/// the vocabulary padded to a multiple of `pad_vocab`): what to estimate the memory of
/// before [`import`] builds it.
pub fn read_config(dir: &Path, pad_vocab: usize) -> Result<GptConfig, TrainError> {
    let config_path = dir.join(HF_FILES[0]);
    let bytes = quill_data::files::read_regular(&config_path, quill_data::files::JSON_LIMIT)
        .map_err(|e| error(&config_path, e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|e| error(&config_path, e.to_string()))?;
    let mut gpt = gpt_config(&config_path, &text)?;
    let vocab = Tokenizer::gpt2().vocab_size();
    if gpt.vocab_size != vocab {
        return Err(error(
            &config_path,
            format!(
                "vocab_size is {}, GPT-2's tokenizer has {vocab} tokens",
                gpt.vocab_size
            ),
        ));
    }
    gpt.pad_vocab = pad_vocab;
    gpt.validate()?;
    Ok(gpt)
}

/// Reads the Hugging Face GPT-2 checkpoint in `dir` (see [`HF_FILES`]) as a quill
/// checkpoint with GPT-2's tokenizer, [`finetune_config`]'s settings and no optimizer
/// state. The embedding (and an untied head) get zero rows up to a multiple of
/// `pad_vocab`. A missing tensor, one of another shape, or one GPT-2 has no place for
/// is an error naming it: the model is built on `device` to check.
pub fn import<B: Backend>(
    dir: &Path,
    pad_vocab: usize,
    device: &B::Device,
) -> Result<Checkpoint, TrainError> {
    let gpt = read_config(dir, pad_vocab)?;
    let tokenizer = Tokenizer::gpt2();
    let weights_path = dir.join(HF_FILES[1]);
    let bytes = quill_data::files::read_regular(&weights_path, u64::MAX)
        .map_err(|e| error(&weights_path, e.to_string()))?;
    let mut weights = read_weights(&weights_path, &bytes)?;
    let rows = gpt.padded_vocab_size();
    for name in ["transformer.wte.weight", "lm_head.weight"] {
        if let Some(t) = weights.get_mut(name)
            && t.shape.len() == 2
            && t.shape[0] == gpt.vocab_size
        {
            t.values.resize(rows * t.shape[1], 0.0);
            t.shape[0] = rows;
        }
    }
    // Every tensor in place, of the right shape, nothing left over; then the checkpoint
    // as training captures one (a tied head's copy included).
    let model = ModelConfig::Gpt(gpt.clone()).init::<B>(0, device)?;
    let model = quill_model::params::import(model, &weights)
        .map_err(|e| error(&weights_path, e.to_string()))?;
    let train = finetune_config();
    let state = TrainState::new(Rng::new(train.seed));
    let config = RunConfig {
        model: ModelConfig::Gpt(gpt),
        train,
    };
    Checkpoint::capture(config, tokenizer, &model, Vec::new(), state)
}

/// The settings of `gpt` that Hugging Face's GPT-2 cannot express, as `key = value`:
/// the reason an export is refused. Everything else is GPT-2 (`bias = false` is GPT-2
/// with zero biases, an untied head is `tie_word_embeddings = false`, zero-initialised
/// projections are only an initialisation).
pub fn unlike_gpt2(gpt: &GptConfig) -> Vec<&'static str> {
    [
        (gpt.activation == Activation::Relu2, "activation = relu2"),
        (gpt.position == Position::Rotary, "position = rotary"),
        (gpt.norm == Norm::Rms, "norm = rms"),
    ]
    .into_iter()
    .filter_map(|(unlike, setting)| unlike.then_some(setting))
    .collect()
}

/// The LayerNorm and Linear layers of a GPT with `n_layer` blocks, in the order nanoGPT
/// declares them (`named_parameters`): each block's, then `ln_f`. GPT-2 gives each a
/// bias, which a `bias = false` model lacks.
pub(crate) fn block_layers(n_layer: usize) -> Vec<String> {
    let per_block = [
        "ln_1",
        "attn.c_attn",
        "attn.c_proj",
        "ln_2",
        "mlp.c_fc",
        "mlp.c_proj",
    ];
    let mut layers: Vec<String> = (0..n_layer)
        .flat_map(|i| per_block.map(|layer| format!("transformer.h.{i}.{layer}")))
        .collect();
    layers.push("transformer.ln_f".to_string());
    layers
}

/// `generation_config.json`: `quill sample`'s defaults (sampling at temperature 0.8, no
/// top-k, which transformers would otherwise set to 50), the end-of-text token of a
/// BPE vocabulary, and `max_length` = the context: transformers' GPT-2 cannot go past
/// `n_positions` tokens (it fails with an `IndexError`), prompt included.
fn generation_config(end_of_text: Option<u32>, context: usize) -> Value {
    json!({
        "do_sample": true,
        "temperature": 0.8,
        "top_k": 0,
        "max_length": context,
        "bos_token_id": end_of_text,
        "eos_token_id": end_of_text,
    })
}

/// The model card's name.
pub const MODEL_CARD: &str = "README.md";

/// A context shorter than this gets a note at export: generating past it fails in
/// transformers.
pub const SHORT_CONTEXT: usize = 256;

/// The model card (`README.md`): what the model is, what it trained on and how far,
/// and how to load it — with the context limit transformers enforces.
pub fn model_card(checkpoint: &Checkpoint, gpt: &quill_model::GptConfig) -> String {
    let params = checkpoint.config.model.num_params();
    let state = &checkpoint.state;
    let data = match &state.data {
        Some(d) => format!("`{d}`, {} tokenizer", d.tokenizer),
        None => format!(
            "not recorded in the checkpoint ({} tokenizer)",
            checkpoint.tokenizer.name()
        ),
    };
    let best = state.best_val_loss.map_or_else(
        || "no validation loss recorded".to_string(),
        |loss| format!("best validation loss {loss:.4} (nats per token)"),
    );
    let t = &checkpoint.config.train;
    format!(
        r#"---
library_name: transformers
tags:
- quill
- gpt2
---
# A GPT trained with quill

A GPT-2-architecture model trained with quill (a Rust GPT trainer) and exported in
Hugging Face's GPT-2 format, with its tokenizer.

| | |
|---|---|
| model | {n_layer} layers, {n_head} heads, {n_embd} wide, {params} parameters, vocabulary {vocab} |
| context | {context} tokens (`n_positions`) |
| trained on | {data} |
| training | {iter} steps of {batch} × {grad_accum} rows of {context} tokens, learning rate {lr:e}; {best} |

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
out = model.generate(ids, max_length={context})
print(tokenizer.decode(out[0]))
```

The model attends to at most {context} tokens, prompt included: transformers stops
with an `IndexError` past them, so give `max_length` ≤ {context} (the default in
`generation_config.json`), or `max_new_tokens` ≤ {context} − the prompt's tokens.
`quill sample` slides its window instead and generates any length.
"#,
        n_layer = gpt.n_layer,
        n_head = gpt.n_head,
        n_embd = gpt.n_embd,
        vocab = gpt.vocab_size,
        context = gpt.block_size,
        iter = state.iter,
        batch = t.batch_size,
        grad_accum = t.grad_accum,
        lr = t.lr,
    )
}

/// Writes `checkpoint` (a GPT that [`unlike_gpt2`] finds nothing in) to `out` as a
/// Hugging Face model directory that `AutoModelForCausalLM` and `AutoTokenizer` load:
/// `config.json` and `model.safetensors` (float32, `[in, out]` Linear weights, zero
/// biases for a `bias = false` model, no tied head, padding rows dropped),
/// `generation_config.json`, the [`model_card`], the tokenizer's files
/// ([`quill_data::hugging_face::FILES`]) and the [`EXPORT`] marker. `out` is written
/// atomically; an existing directory is replaced only if it is empty or holds an
/// earlier export (it carries the marker).
pub fn export(checkpoint: &Checkpoint, out: &Path) -> Result<(), TrainError> {
    let ModelConfig::Gpt(gpt) = &checkpoint.config.model else {
        return Err(error(
            out,
            "only GPT checkpoints can be exported (this one is the bigram model)",
        ));
    };
    let unlike = unlike_gpt2(gpt);
    if !unlike.is_empty() {
        return Err(error(
            out,
            format!(
                "the checkpoint's model has {}, which Hugging Face GPT-2 cannot express",
                unlike.join(", ")
            ),
        ));
    }
    quill_data::atomic::check_owned(out, &EXPORT)?;
    let mut tensors = Vec::new();
    for (name, t) in &checkpoint.weights {
        if gpt.tie_weights && name == "lm_head.weight" {
            continue;
        }
        // A checkpoint from elsewhere: each tensor's values fill its shape, and the
        // matrices are matrices.
        let matrix =
            is_conv1d(name) || name == "transformer.wte.weight" || name == "lm_head.weight";
        let filled = t.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if filled != Some(t.values.len()) || (matrix && t.shape.len() != 2) {
            return Err(error(
                out,
                format!(
                    "the checkpoint's tensor {name} has shape {:?} and {} values; it cannot be exported",
                    t.shape,
                    t.values.len()
                ),
            ));
        }
        let mut t = match is_conv1d(name) {
            true => transpose(name.clone(), &t.shape, &t.values),
            false => t.clone(),
        };
        if (name == "transformer.wte.weight" || name == "lm_head.weight")
            && t.shape[0] > gpt.vocab_size
        {
            t.values.truncate(gpt.vocab_size * t.shape[1]);
            t.shape[0] = gpt.vocab_size;
        }
        tensors.push(t);
    }
    // GPT-2 with zero biases is exactly a model without them.
    let no_biases = if gpt.bias {
        Vec::new()
    } else {
        block_layers(gpt.n_layer)
    };
    for layer in no_biases {
        let bias = format!("{layer}.bias");
        if checkpoint.weights.contains_key(&bias) {
            continue;
        }
        let Some(weight) = checkpoint.weights.get(&format!("{layer}.weight")) else {
            return Err(error(
                out,
                format!("the checkpoint has no tensor {layer}.weight"),
            ));
        };
        let len = weight.shape[0];
        tensors.push(NamedTensor {
            name: bias,
            shape: vec![len],
            values: vec![0.0; len],
        });
    }
    let tokenizer = &checkpoint.tokenizer;
    let special = tokenizer.end_of_text();
    let config = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": gpt.vocab_size,
        "n_positions": gpt.block_size,
        "n_ctx": gpt.block_size,
        "n_embd": gpt.n_embd,
        "n_layer": gpt.n_layer,
        "n_head": gpt.n_head,
        "n_inner": null,
        "activation_function": match gpt.activation {
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::Relu2 => unreachable!("refused above"),
        },
        "resid_pdrop": gpt.dropout,
        "embd_pdrop": gpt.dropout,
        "attn_pdrop": gpt.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "tie_word_embeddings": gpt.tie_weights,
        "bos_token_id": special,
        "eos_token_id": special,
        "use_cache": true,
        "torch_dtype": "float32",
    });
    let tokenizer_files = quill_data::hugging_face::files(tokenizer, gpt.block_size)?;
    let json_bytes = |v: &Value| serde_json::to_vec_pretty(v).expect("a JSON value serialises");
    quill_data::atomic::replace_dir(out, &EXPORT, |tmp| -> Result<(), TrainError> {
        quill_data::atomic::write_file(&tmp.join(EXPORT.file), &EXPORT.content())?;
        quill_data::atomic::write_file(&tmp.join(HF_FILES[0]), &json_bytes(&config))?;
        quill_data::atomic::write_file(
            &tmp.join(GENERATION_CONFIG),
            &json_bytes(&generation_config(special, gpt.block_size)),
        )?;
        quill_data::atomic::write_file(
            &tmp.join(MODEL_CARD),
            model_card(checkpoint, gpt).as_bytes(),
        )?;
        for (name, bytes) in &tokenizer_files {
            quill_data::atomic::write_file(&tmp.join(name), bytes)?;
        }
        write_safetensors(tensors.iter(), &tmp.join(HF_FILES[1]))
    })
}
