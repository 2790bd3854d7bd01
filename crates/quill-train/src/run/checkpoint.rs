//! Self-contained checkpoints: one directory that holds everything needed to sample,
//! evaluate or resume, written atomically.
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | weights, f32, PyTorch names and layout ([`quill_model::params`]); in 16-bit training, the optimizer's f32 master copies |
//! | `optimizer.safetensors` | AdamW moments, `exp_avg.<param>` and `exp_avg_sq.<param>`; with Muon, `momentum_buffer.<param>` of each hidden matrix instead |
//! | `config.json` | [`RunConfig`]: `{"model": ModelConfig, "train": TrainConfig}`, the model once |
//! | `vocab.json` or `tokenizer.json` (+ `bpe.tiktoken`) | the tokenizer ([`quill_data::tokenizer`]) |
//! | `state.json` | format tag, iteration, optimizer steps, best val loss, batch-sampler RNG |
//!
//! A checkpoint is written into a temporary sibling directory and renamed into place,
//! so at any moment the directory is either absent or complete.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use quill_data::atomic::Marker;
use quill_data::files::{JSON_LIMIT, read_regular};
use quill_data::{Rng, Tokenizer};
use quill_model::params::{NamedTensor, export, import};
use quill_model::{GptConfig, LanguageModel, ModelConfig, WeightFormat};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::{RunConfig, TrainError};

/// The `format` tag of `state.json`.
pub const FORMAT: &str = "quill-checkpoint-v1";
/// A checkpoint directory is quill's when its `state.json` has quill's format tag:
/// only such a directory (or an empty one) is replaced by [`Checkpoint::save`].
pub const CHECKPOINT: Marker = Marker {
    file: STATE_FILE,
    format: FORMAT,
    alternates: &[
        quill_data::tokenizer::VOCAB_FILE,
        quill_data::tokenizer::TOKENIZER_FILE,
        quill_data::tokenizer::RANKS_FILE,
    ],
};

const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CONFIG_FILE: &str = "config.json";
const STATE_FILE: &str = "state.json";
/// The position table, which a finetuning run with a shorter context crops.
const POSITIONS: &str = "transformer.wpe.weight";

/// Progress of a run, saved in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Always [`FORMAT`].
    pub format: String,
    /// The next optimizer step to take (= steps taken).
    pub iter: usize,
    /// AdamW's step count.
    pub optimizer_steps: u64,
    /// Lowest validation loss seen so far.
    pub best_val_loss: Option<f32>,
    /// The training batch sampler's generator.
    pub sampler_rng: Rng,
    /// Training wall time so far, in seconds.
    pub elapsed_s: f64,
    /// The loss scaler of f16 training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::optim::LossScaler>,
    /// The float type the parameters trained in: a resumed run continues in it.
    /// `None` in checkpoints that quill did not train (imports) and in older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<FloatType>,
    /// What the run trained on, when its trainer was told ([`crate::Run::with_data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRecord>,
    /// The evaluation at `iter` was interrupted before it ended: a resumed run starts
    /// with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eval_pending: bool,
}

/// The data a run trained on: where it came from and its tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The corpus, dataset or training shards' pattern as the user named it
    /// (`data/tinyshakespeare/input.txt`).
    pub source: String,
    /// The validation shards' pattern, when `source` is a pattern of training shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<String>,
    /// The tokenizer's name (`char`, `gpt2`, `bpe:4096`).
    pub tokenizer: String,
}

impl DataRecord {
    /// The data and the validation shards, as a run resumed from it reads them again.
    /// (Records written before `val` existed held both in `source`, as
    /// `PATTERN (val PATTERN)`.)
    pub fn paths(&self) -> (String, Option<String>) {
        if self.val.is_some() {
            return (self.source.clone(), self.val.clone());
        }
        match (self.source.strip_suffix(')')).and_then(|s| s.split_once(" (val ")) {
            Some((data, val)) => (data.to_string(), Some(val.to_string())),
            None => (self.source.clone(), None),
        }
    }
}

impl std::fmt::Display for DataRecord {
    /// `data/input.txt`, or `PATTERN (val PATTERN)` for shards.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.val {
            Some(val) => write!(f, "{} (val {val})", self.source),
            None => f.write_str(&self.source),
        }
    }
}

/// The float type of a run's parameters (and activations), as `--dtype` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    /// 32-bit float.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    F16,
}

impl FloatType {
    /// The float type of Burn's `dtype`; `None` for one quill does not train in.
    pub fn of(dtype: burn::tensor::DType) -> Option<Self> {
        match dtype {
            burn::tensor::DType::F32 => Some(FloatType::F32),
            burn::tensor::DType::BF16 => Some(FloatType::Bf16),
            burn::tensor::DType::F16 => Some(FloatType::F16),
            _ => None,
        }
    }

    /// The float type a checkpoint's run trained in: the one recorded, else f16 for a
    /// checkpoint with a loss scaler (only f16 training has one); `None` when unknown.
    pub fn of_state(state: &TrainState) -> Option<Self> {
        state.dtype.or(state.loss_scaler.map(|_| FloatType::F16))
    }
}

impl std::fmt::Display for FloatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloatType::F32 => "f32",
            FloatType::Bf16 => "bf16",
            FloatType::F16 => "f16",
        })
    }
}

impl TrainState {
    /// The state of a run about to take its first step, its batches drawn by `sampler_rng`.
    pub fn new(sampler_rng: Rng) -> Self {
        TrainState {
            format: FORMAT.to_string(),
            iter: 0,
            optimizer_steps: 0,
            best_val_loss: None,
            sampler_rng,
            elapsed_s: 0.0,
            loss_scaler: None,
            dtype: None,
            data: None,
            eval_pending: false,
        }
    }
}

/// A checkpoint in memory, on the host.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Model and training settings.
    pub config: RunConfig,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Weights by name.
    pub weights: BTreeMap<String, NamedTensor>,
    /// Optimizer moments by name.
    pub optimizer: BTreeMap<String, NamedTensor>,
    /// Progress.
    pub state: TrainState,
}

impl Checkpoint {
    /// Gathers a checkpoint from a live model. A model whose weights were converted for
    /// inference ([`LanguageModel::with_weights`]) is refused: a checkpoint holds the
    /// weights as trained, never their narrower copies.
    pub fn capture<B: Backend>(
        config: RunConfig,
        tokenizer: Tokenizer,
        model: &LanguageModel<B>,
        optimizer: Vec<NamedTensor>,
        state: TrainState,
    ) -> Result<Self, TrainError> {
        let format = model.weight_format();
        if format != WeightFormat::F32 {
            return Err(TrainError::Config(format!(
                "a model with {format} weights for inference is not saved: load the checkpoint again to train or export it"
            )));
        }
        let by_name = |ts: Vec<NamedTensor>| ts.into_iter().map(|t| (t.name.clone(), t)).collect();
        Ok(Checkpoint {
            config,
            tokenizer,
            weights: by_name(export(model)),
            optimizer: by_name(optimizer),
            state,
        })
    }

    /// Builds the model on `device` with the saved weights.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<LanguageModel<B>, TrainError> {
        let model = self.config.model.init::<B>(0, device)?;
        Ok(import(model, &self.weights)?)
    }

    /// Writes the checkpoint to `dir` atomically, replacing the checkpoint that was
    /// there; a directory that is not empty and not a checkpoint is refused.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        quill_data::atomic::replace_dir(dir, &CHECKPOINT, |tmp| -> Result<(), TrainError> {
            write_safetensors(self.weights.values(), &tmp.join(MODEL_FILE))?;
            write_safetensors(self.optimizer.values(), &tmp.join(OPTIMIZER_FILE))?;
            let mut files: Vec<(&str, Vec<u8>)> = vec![
                (CONFIG_FILE, to_json(&self.config)),
                (STATE_FILE, to_json(&self.state)),
            ];
            files.extend(self.tokenizer.files());
            for (name, bytes) in files {
                quill_data::atomic::write_file(&tmp.join(name), &bytes)?;
            }
            Ok(())
        })
    }

    /// Checks that a run of `model` can continue from this checkpoint: the model's
    /// settings must be the checkpoint's (training settings may change).
    pub fn check_resumable(&self, model: &ModelConfig) -> Result<(), TrainError> {
        match differing_setting(&self.config.model, model) {
            None => Ok(()),
            Some((setting, checkpoint, wanted)) => Err(TrainError::ResumeChangesModel {
                setting,
                checkpoint,
                wanted,
            }),
        }
    }

    /// Checks that a finetuning run of `model` can start from this checkpoint's weights
    /// (nanoGPT's `init_from`): `model` must be the checkpoint's model, except for its
    /// dropout and a block_size no larger than the checkpoint's.
    pub fn check_init(&self, model: &ModelConfig) -> Result<(), TrainError> {
        let comparable = match (&self.config.model, model) {
            (ModelConfig::Gpt(saved), ModelConfig::Gpt(wanted)) => {
                if wanted.block_size > saved.block_size {
                    return Err(TrainError::Config(format!(
                        "block_size {} exceeds the block_size {} of the model being finetuned",
                        wanted.block_size, saved.block_size
                    )));
                }
                ModelConfig::Gpt(GptConfig {
                    dropout: wanted.dropout,
                    block_size: wanted.block_size,
                    ..saved.clone()
                })
            }
            (saved, _) => saved.clone(),
        };
        match differing_setting(&comparable, model) {
            None => Ok(()),
            Some((setting, checkpoint, wanted)) => Err(TrainError::InitChangesModel {
                setting,
                checkpoint,
                wanted,
            }),
        }
    }

    /// Builds `model` on `device` from this checkpoint's weights (see
    /// [`Checkpoint::check_init`]), the position table cropped to its block_size as
    /// nanoGPT's `crop_block_size` does: the start of a finetuning run.
    pub fn init_model<B: Backend>(
        &self,
        model: &ModelConfig,
        device: &B::Device,
    ) -> Result<LanguageModel<B>, TrainError> {
        self.check_init(model)?;
        let fresh = model.init::<B>(0, device)?;
        let rows = model.block_size();
        let crop = self
            .weights
            .get(POSITIONS)
            .filter(|wpe| wpe.shape.len() == 2 && wpe.shape[0] > rows);
        let Some(wpe) = crop else {
            return Ok(import(fresh, &self.weights)?);
        };
        // A copy of the weights with the position table cropped (`import` takes one map).
        let mut weights = self.weights.clone();
        let cropped = NamedTensor {
            name: POSITIONS.to_string(),
            shape: vec![rows, wpe.shape[1]],
            values: wpe.values[..rows * wpe.shape[1]].to_vec(),
        };
        weights.insert(POSITIONS.to_string(), cropped);
        Ok(import(fresh, &weights)?)
    }

    /// The settings and progress of the checkpoint in `dir` (`config.json` and
    /// `state.json`, checked as [`Checkpoint::load`] checks them), without reading its
    /// weights: what `quill runs` shows.
    pub fn read_settings(dir: &Path) -> Result<(RunConfig, TrainState), TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        let read = |name: &str| {
            read_regular(&dir.join(name), JSON_LIMIT).map_err(|e| bad(format!("{name}: {e}")))
        };
        let state: TrainState = parse_json(STATE_FILE, &read(STATE_FILE)?).map_err(&bad)?;
        if state.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                state.format
            )));
        }
        let config: RunConfig = parse_json(CONFIG_FILE, &read(CONFIG_FILE)?).map_err(&bad)?;
        // Settings from a file are checked as settings from the command line are.
        config
            .model
            .validate()
            .map_err(|e| bad(format!("{CONFIG_FILE}: {e}")))?;
        config
            .train
            .validate()
            .map_err(|e| bad(format!("{CONFIG_FILE}: {e}")))?;
        Ok((config, state))
    }

    /// Reads and checks the checkpoint in `dir`.
    pub fn load(dir: &Path) -> Result<Checkpoint, TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason,
        };
        if !dir.is_dir() {
            return Err(bad("no such directory".into()));
        }
        // Weights are as large as the model: only a regular file is asked of them.
        let read = |name: &str| {
            read_regular(&dir.join(name), u64::MAX).map_err(|e| bad(format!("{name}: {e}")))
        };
        let (config, state) = Self::read_settings(dir)?;
        let tokenizer = Tokenizer::read(dir).map_err(|e| bad(e.to_string()))?;
        if tokenizer.vocab_size() != config.model.vocab_size() {
            return Err(bad(format!(
                "the {} tokenizer has {} tokens but the model's vocab_size is {}",
                tokenizer.name(),
                tokenizer.vocab_size(),
                config.model.vocab_size()
            )));
        }
        let checkpoint = Checkpoint {
            weights: from_safetensors(MODEL_FILE, &read(MODEL_FILE)?).map_err(&bad)?,
            optimizer: from_safetensors(OPTIMIZER_FILE, &read(OPTIMIZER_FILE)?).map_err(&bad)?,
            config,
            tokenizer,
            state,
        };
        Ok(checkpoint)
    }
}

/// The first setting of `wanted` whose value differs from `saved`'s, with both values
/// (or `kind`, for models of different kinds); `None` when they are equal.
fn differing_setting(
    saved: &ModelConfig,
    wanted: &ModelConfig,
) -> Option<(String, String, String)> {
    if saved == wanted {
        return None;
    }
    let fields = |m: &ModelConfig| match serde_json::to_value(m) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => Default::default(),
    };
    let (saved, wanted) = (fields(saved), fields(wanted));
    let setting = wanted
        .iter()
        .find(|(key, value)| saved.get(*key) != Some(value))
        .map_or_else(|| "kind".to_string(), |(key, _)| key.clone());
    let value = |fields: &serde_json::Map<_, _>| {
        fields
            .get(&setting)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    Some((setting.clone(), value(&saved), value(&wanted)))
}

fn parse_json<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{name}: {e}"))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("checkpoint metadata always serialises")
}

/// Writes named f32 tensors to `path` as safetensors (with `{"format": "pt"}`
/// metadata), streamed from the tensors' own memory: no second copy of the weights,
/// which for GPT-2 124M and its AdamW moments would be 1.5 GB.
pub(crate) fn write_safetensors<'a>(
    tensors: impl Iterator<Item = &'a NamedTensor>,
    path: &Path,
) -> Result<(), TrainError> {
    let views = tensors
        .map(|t| {
            let bytes: Cow<[u8]> = match cfg!(target_endian = "little") {
                true => Cow::Borrowed(bytemuck::cast_slice(&t.values)),
                false => Cow::Owned(t.values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            };
            (
                t.name.clone(),
                F32View {
                    shape: &t.shape,
                    bytes,
                },
            )
        })
        .collect::<Vec<_>>();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| {
        TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

/// One f32 tensor's little-endian bytes, as safetensors serialises them.
struct F32View<'a> {
    shape: &'a [usize],
    bytes: Cow<'a, [u8]>,
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Little-endian float32, float16 or bfloat16 bytes as float32 values; `None` for
/// another dtype.
pub(crate) fn f32_values(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Parses safetensors bytes holding f32 tensors.
fn from_safetensors(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, NamedTensor>, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| format!("{name}: {e}"))?;
    file.tensors()
        .into_iter()
        .map(|(tensor_name, view)| {
            let values = match view.dtype() {
                Dtype::F32 => f32_values(view.dtype(), view.data()),
                _ => None,
            }
            .ok_or_else(|| {
                format!(
                    "{name}: tensor {tensor_name} is {:?}, expected F32",
                    view.dtype()
                )
            })?;
            let tensor = NamedTensor {
                name: tensor_name.clone(),
                shape: view.shape().to_vec(),
                values,
            };
            Ok((tensor_name, tensor))
        })
        .collect()
}

/// Where a run keeps its checkpoints: `<out>/last` and `<out>/best`.
pub fn last_dir(out: &Path) -> PathBuf {
    out.join("last")
}

/// See [`last_dir`].
pub fn best_dir(out: &Path) -> PathBuf {
    out.join("best")
}
