//! nanoGPT's checkpoints (`out-dir/ckpt.pt`, with `data/NAME/meta.pkl` for a character
//! model) as quill checkpoints.
//!
//! `train.py` saves one dictionary with `torch.save`: `model` (the state dict, its
//! names prefixed with `_orig_mod.` when the model was compiled), `optimizer` (AdamW's
//! state dict), `model_args`, `iter_num`, `best_val_loss` and `config`. It is read with
//! Burn's PyTorch reader (`burn-store`), which parses the pickle without running it:
//! tensors and plain values (numbers, strings, lists, dictionaries) only; any other
//! Python object is refused. The names and layouts are quill's own (quill's checkpoints
//! follow nanoGPT's), and the model is nanoGPT's: exact GELU, LayerNorm (with or without
//! biases), learned positions, a tied head.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn_store::pytorch::PytorchReader;
use burn_store::pytorch::reader::PickleValue;
use quill_data::{CharTokenizer, Rng, Tokenizer};
use quill_model::params::NamedTensor;
use quill_model::{GptConfig, ModelConfig};

use crate::config::{OptimizerKind, Schedule};
use crate::run::checkpoint::{Checkpoint, TrainState};
use crate::{RunConfig, TrainConfig, TrainError};

/// The prefix `torch.compile` gives a compiled model's state-dict names.
const COMPILED: &str = "_orig_mod.";
/// The keys of `train.py`'s checkpoint that quill needs.
const KEYS: [&str; 4] = ["model", "model_args", "iter_num", "config"];

fn error(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::NanoGpt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A nanoGPT checkpoint's settings, read without its tensors: what to estimate the
/// memory of before [`NanoGpt::import`] builds the model.
#[derive(Debug, Clone)]
pub struct NanoGpt {
    /// The model, as quill configures it.
    pub model: GptConfig,
    /// The training settings of `config`, as quill's.
    pub train: TrainConfig,
    /// The tokenizer: `meta.pkl`'s characters, or GPT-2's.
    pub tokenizer: Tokenizer,
    /// `iter_num`: the steps the run had taken.
    pub iter_num: usize,
    /// Notes on what quill does differently with this run's settings, one line each.
    pub notes: Vec<String>,
    path: std::path::PathBuf,
    top: HashMap<String, PickleValue>,
}

/// `value` as a whole number.
fn int(value: Option<&PickleValue>) -> Option<i64> {
    match value? {
        PickleValue::Int(i) => Some(*i),
        _ => None,
    }
}

fn float(value: Option<&PickleValue>) -> Option<f64> {
    match value? {
        PickleValue::Int(i) => Some(*i as f64),
        PickleValue::Float(f) => Some(*f),
        _ => None,
    }
}

fn boolean(value: Option<&PickleValue>) -> Option<bool> {
    match value? {
        PickleValue::Bool(b) => Some(*b),
        _ => None,
    }
}

fn dict(value: Option<&PickleValue>) -> Option<&HashMap<String, PickleValue>> {
    match value? {
        PickleValue::Dict(d) => Some(d),
        _ => None,
    }
}

impl NanoGpt {
    /// Reads the checkpoint at `path` (a `ckpt.pt`, or the directory holding one) and,
    /// for a character model, its `meta.pkl`. A file that is not a nanoGPT checkpoint,
    /// a pickle holding anything but tensors and plain values, settings quill's GPT
    /// cannot take, or a character vocabulary without its `meta.pkl` is an error.
    pub fn read(path: &Path, meta: Option<&Path>) -> Result<NanoGpt, TrainError> {
        let path = match path.is_dir() {
            true => path.join("ckpt.pt"),
            false => path.to_path_buf(),
        };
        // A FIFO or a device is refused before the reader opens it.
        quill_data::files::open_regular(&path).map_err(|e| error(&path, e.to_string()))?;
        let unreadable = |e: burn_store::pytorch::PytorchError| {
            error(
                &path,
                format!(
                    "not a PyTorch checkpoint quill can read ({}); quill reads only tensors and plain values from a pickle",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            )
        };
        let top = match PytorchReader::read_pickle_data(&path, None).map_err(unreadable)? {
            PickleValue::Dict(top) => top,
            _ => return Err(error(&path, "not a nanoGPT checkpoint (not a dictionary)")),
        };
        if let Some(key) = KEYS.iter().find(|k| !top.contains_key(**k)) {
            return Err(error(
                &path,
                format!(
                    "not a nanoGPT checkpoint: it has no {key:?} (train.py saves model, optimizer, model_args, iter_num, best_val_loss, config)"
                ),
            ));
        }
        let args = dict(top.get("model_args"))
            .ok_or_else(|| error(&path, "model_args is not a dictionary"))?;
        let size = |key: &str| -> Result<usize, TrainError> {
            int(args.get(key))
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| {
                    error(
                        &path,
                        format!("model_args[{key:?}] is missing or not a positive whole number"),
                    )
                })
        };
        let rows = size("vocab_size")?;
        let tokenizer = match meta {
            Some(meta) => read_meta(meta)?,
            None if rows == 50_257 || rows == 50_304 => Tokenizer::gpt2(),
            None => {
                return Err(error(
                    &path,
                    format!(
                        "its vocabulary has {rows} tokens, not GPT-2's: a character model needs its meta.pkl (--meta data/NAME/meta.pkl)"
                    ),
                ));
            }
        };
        let vocab = tokenizer.vocab_size();
        if rows < vocab {
            return Err(error(
                &path,
                format!("model_args has vocab_size {rows}, but the tokenizer has {vocab} tokens"),
            ));
        }
        let model = GptConfig {
            vocab_size: vocab,
            // nanoGPT pads GPT-2's 50,257 to 50,304 rows: the same rows, their logits
            // dropped.
            pad_vocab: rows,
            n_layer: size("n_layer")?,
            n_head: size("n_head")?,
            n_embd: size("n_embd")?,
            block_size: size("block_size")?,
            bias: boolean(args.get("bias")).unwrap_or(true),
            dropout: float(args.get("dropout")).unwrap_or(0.0),
            // nanoGPT's GPT: nn.GELU(), LayerNorm, learned positions, tied head.
            ..GptConfig::default()
        };
        model.validate().map_err(|e| error(&path, e.to_string()))?;
        let config =
            dict(top.get("config")).ok_or_else(|| error(&path, "config is not a dictionary"))?;
        let (train, notes) = train_config(config).map_err(|e| error(&path, e))?;
        // The checks `quill train` makes of its settings: an import never writes a
        // checkpoint that quill cannot load or resume.
        train
            .validate()
            .map_err(|e| error(&path, format!("its config: {e}")))?;
        let iter_num = int(top.get("iter_num"))
            .filter(|&i| (0..=MAX_ITERS as i64).contains(&i))
            .ok_or_else(|| {
                error(
                    &path,
                    format!("iter_num is not a whole number from 0 to {MAX_ITERS}"),
                )
            })? as usize;
        Ok(NanoGpt {
            model,
            train,
            tokenizer,
            iter_num,
            notes,
            path,
            top,
        })
    }

    /// The checkpoint, its model built on `device` to check every tensor: the weights
    /// (the `_orig_mod.` prefix stripped, the causal-mask buffers dropped) and, when the
    /// file has them, AdamW's moments and step, so that `--resume` continues the run.
    pub fn import<B: Backend>(self, device: &B::Device) -> Result<Checkpoint, TrainError> {
        let path = &self.path;
        let reader = PytorchReader::new(path).map_err(|e| {
            error(
                path,
                format!(
                    "cannot read its tensors: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            )
        })?;
        let gpt = self.model.clone();
        let config = ModelConfig::Gpt(gpt.clone());
        let fresh = config.init::<B>(0, device)?;
        // Every tensor's declared shape is checked against the model's before a byte
        // of it is read: a file cannot make quill allocate what it only declares.
        let expected = quill_model::params::shapes(&fresh);
        let order = optimizer_order(&self.model, &expected);
        let expected_shape = |key: &str| -> Option<Vec<usize>> {
            if let Some(name) = key.strip_prefix("model.") {
                let name = name.strip_prefix(COMPILED).unwrap_or(name);
                if let Some(layer) = name.strip_suffix(".attn.bias") {
                    let _ = layer; // the causal mask, a buffer: skipped unread
                    return None;
                }
                return expected.get(name).cloned();
            }
            if let Some(rest) = key.strip_prefix("optimizer.state.") {
                let (index, kind) = rest.split_once('.')?;
                let name = order.get(index.parse::<usize>().ok()?)?;
                return match kind {
                    "exp_avg" | "exp_avg_sq" => expected.get(name).cloned(),
                    "step" => Some(Vec::new()),
                    _ => None,
                };
            }
            (key == "best_val_loss").then(Vec::new)
        };
        let mut weights = BTreeMap::new();
        let mut optimizer = HashMap::new();
        let mut best_val_loss = float(self.top.get("best_val_loss")).map(|v| v as f32);
        for (key, snapshot) in reader.tensors() {
            let is_mask = key.ends_with(".attn.bias") && key.starts_with("model.");
            match expected_shape(key) {
                _ if is_mask => continue,
                Some(shape) if shape == snapshot.shape.to_vec() => {}
                // A scalar may be stored with shape [] or [1].
                Some(shape) if shape.is_empty() && snapshot.shape.to_vec() == [1] => {}
                Some(shape) => {
                    return Err(error(
                        path,
                        format!(
                            "tensor {key} has shape {:?}; the model of its model_args has {shape:?}",
                            snapshot.shape.to_vec()
                        ),
                    ));
                }
                None => {
                    return Err(error(
                        path,
                        format!(
                            "tensor {key} (shape {:?}) belongs to no parameter of the model of its model_args",
                            snapshot.shape.to_vec()
                        ),
                    ));
                }
            }
            let values = || -> Result<(Vec<usize>, Vec<f32>), TrainError> {
                let data = snapshot
                    .to_data()
                    .map_err(|e| error(path, format!("tensor {key}: {e:?}")))?;
                let shape = data.shape.clone().to_vec();
                let values = data
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| error(path, format!("tensor {key}: {e:?}")))?;
                Ok((shape, values))
            };
            if let Some(name) = key.strip_prefix("model.") {
                let name = name.strip_prefix(COMPILED).unwrap_or(name);
                let (shape, values) = values()?;
                let tensor = NamedTensor {
                    name: name.to_string(),
                    shape,
                    values,
                };
                weights.insert(name.to_string(), tensor);
            } else if let Some(rest) = key.strip_prefix("optimizer.state.") {
                optimizer.insert(rest.to_string(), values()?);
            } else if key == "best_val_loss" {
                best_val_loss = values()?.1.first().copied();
            }
        }
        let model =
            quill_model::params::import(fresh, &weights).map_err(|e| error(path, e.to_string()))?;
        let (moments, steps) = match optimizer.is_empty() {
            true => (Vec::new(), 0),
            false => self.moments(&weights, optimizer)?,
        };
        let mut state = TrainState::new(Rng::new(self.train.seed));
        state.iter = self.iter_num;
        state.optimizer_steps = steps;
        state.best_val_loss = best_val_loss;
        let config = RunConfig {
            model: ModelConfig::Gpt(gpt),
            train: self.train,
        };
        Checkpoint::capture(config, self.tokenizer, &model, moments, state)
    }

    /// AdamW's moments as quill saves them (`exp_avg.NAME`, `exp_avg_sq.NAME`, flat, in
    /// the order of quill's parameter layout) and the step count. `state.I.*` belongs to
    /// the I-th parameter of the optimizer's groups: nanoGPT's `configure_optimizers`
    /// lists the ≥2-D parameters, then the others, each in `named_parameters` order.
    fn moments(
        &self,
        weights: &BTreeMap<String, NamedTensor>,
        mut state: HashMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<(Vec<NamedTensor>, u64), TrainError> {
        let path = &self.path;
        let bad = |reason: String| error(path, format!("optimizer: {reason}"));
        let shapes: BTreeMap<String, Vec<usize>> = weights
            .iter()
            .map(|(name, t)| (name.clone(), t.shape.clone()))
            .collect();
        let order = optimizer_order(&self.model, &shapes);
        let decay = order
            .iter()
            .filter(|name| shapes.get(*name).is_some_and(|s| s.len() >= 2))
            .count();
        let (decay, other) = order.split_at(decay);
        let groups = match self
            .top
            .get("optimizer")
            .and_then(|o| dict(Some(o))?.get("param_groups"))
        {
            Some(PickleValue::List(groups)) => groups.clone(),
            _ => return Err(bad("no param_groups".into())),
        };
        let sizes: Vec<usize> = groups
            .iter()
            .map(|g| match dict(Some(g)).and_then(|g| g.get("params")) {
                Some(PickleValue::List(params)) => params.len(),
                _ => usize::MAX,
            })
            .collect();
        if sizes != [decay.len(), other.len()] {
            return Err(bad(format!(
                "its parameter groups hold {sizes:?} parameters; nanoGPT's GPT of these settings has {} to decay and {} not",
                decay.len(),
                other.len()
            )));
        }
        let mut out = Vec::new();
        let mut steps = None;
        for (index, name) in decay.iter().chain(other).enumerate() {
            let weight = &weights[name.as_str()];
            for moment in ["exp_avg", "exp_avg_sq"] {
                let (shape, values) = state
                    .remove(&format!("{index}.{moment}"))
                    .ok_or_else(|| bad(format!("no {moment} for parameter {index} ({name})")))?;
                if shape != weight.shape {
                    return Err(bad(format!(
                        "{moment} of {name} has shape {shape:?}, the parameter {:?}",
                        weight.shape
                    )));
                }
                // quill holds a Linear weight `[in, out]`, PyTorch `[out, in]`.
                let values = match crate::interop::hf::is_linear_weight(name) {
                    true => quill_model::params::transposed(&shape, &values),
                    false => values,
                };
                out.push(NamedTensor {
                    name: format!("{moment}.{name}"),
                    shape: vec![values.len()],
                    values,
                });
            }
            let step = state
                .remove(&format!("{index}.step"))
                .and_then(|(_, v)| v.first().copied())
                .ok_or_else(|| bad(format!("no step for parameter {index} ({name})")))?;
            if *steps.get_or_insert(step) != step {
                return Err(bad(
                    "its parameters have taken different numbers of steps".into()
                ));
            }
        }
        if let Some(key) = state.keys().next() {
            return Err(bad(format!("state.{key} belongs to no parameter")));
        }
        Ok((out, steps.unwrap_or(0.0) as u64))
    }
}

/// The parameters in the order of nanoGPT's optimizer state (`state.I` is the I-th):
/// `configure_optimizers` lists the ≥2-D parameters, then the others, each in
/// `named_parameters` order; `shapes` are the parameters' shapes by name.
fn optimizer_order(gpt: &GptConfig, shapes: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
    let (decay, other): (Vec<String>, Vec<String>) = parameter_order(gpt)
        .into_iter()
        .partition(|name| shapes.get(name).is_some_and(|s| s.len() >= 2));
    decay.into_iter().chain(other).collect()
}

/// nanoGPT's `named_parameters()` order for a model of `gpt`'s settings (the tied head
/// is the embedding, listed once).
fn parameter_order(gpt: &GptConfig) -> Vec<String> {
    let params: &[&str] = match gpt.bias {
        true => &["weight", "bias"],
        false => &["weight"],
    };
    let layers = crate::interop::hf::block_layers(gpt.n_layer);
    let weights = layers
        .iter()
        .flat_map(|layer| params.iter().map(move |p| format!("{layer}.{p}")));
    ["transformer.wte.weight", "transformer.wpe.weight"]
        .map(String::from)
        .into_iter()
        .chain(weights)
        .collect()
}

/// `train.py`'s `config` as quill's training settings, starting from the
/// `shakespeare-char` preset (nanoGPT's `train_shakespeare_char.py`) for anything it
/// lacks; and notes on what quill does differently.
fn train_config(
    config: &HashMap<String, PickleValue>,
) -> Result<(TrainConfig, Vec<String>), String> {
    let mut train = RunConfig::preset("shakespeare-char")
        .expect("a built-in preset")
        .train;
    // A setting the file has must be of its kind: never dropped for the preset's.
    let usize_of = |key: &str| -> Result<Option<usize>, String> {
        match config.get(key) {
            None => Ok(None),
            Some(value) => int(Some(value))
                .filter(|v| (0..=MAX_ITERS as i64).contains(v))
                .map(|v| Some(v as usize))
                .ok_or_else(|| {
                    format!(
                        "config[{key:?}] is {value:?}, not a whole number from 0 to {MAX_ITERS}"
                    )
                }),
        }
    };
    let f64_of = |key: &str| -> Result<Option<f64>, String> {
        match config.get(key) {
            None => Ok(None),
            Some(value) => float(Some(value))
                .map(Some)
                .ok_or_else(|| format!("config[{key:?}] is {value:?}, not a number")),
        }
    };
    macro_rules! take {
        ($field:ident, $key:literal, $get:ident) => {
            if let Some(value) = $get($key)? {
                train.$field = value;
            }
        };
    }
    take!(batch_size, "batch_size", usize_of);
    take!(grad_accum, "gradient_accumulation_steps", usize_of);
    take!(max_iters, "max_iters", usize_of);
    take!(eval_interval, "eval_interval", usize_of);
    take!(eval_iters, "eval_iters", usize_of);
    take!(final_eval_iters, "eval_iters", usize_of);
    take!(lr, "learning_rate", f64_of);
    take!(min_lr, "min_lr", f64_of);
    take!(warmup_iters, "warmup_iters", usize_of);
    take!(weight_decay, "weight_decay", f64_of);
    take!(beta1, "beta1", f64_of);
    take!(beta2, "beta2", f64_of);
    take!(grad_clip, "grad_clip", f64_of);
    train.batch_size = train.batch_size.max(1);
    train.grad_accum = train.grad_accum.max(1);
    train.optimizer = OptimizerKind::Adamw;
    train.eps = 1e-8; // torch.optim.AdamW's
    train.cooldown_iters = 0;
    let mut notes = Vec::new();
    match boolean(config.get("decay_lr")) {
        Some(false) => {
            train.schedule = Schedule::Constant;
            train.min_lr = train.lr;
        }
        _ => {
            train.schedule = Schedule::Cosine;
            if let Some(end) = usize_of("lr_decay_iters")?
                && end != train.max_iters
            {
                notes.push(format!(
                    "lr_decay_iters is {end} and max_iters {}: quill's cosine schedule ends at max_iters",
                    train.max_iters
                ));
            }
        }
    }
    Ok((train, notes))
}

/// The most steps (and micro-batches a step) an imported run may count: far past any
/// real run, and small enough that no product of them overflows.
const MAX_ITERS: usize = 1 << 40;

/// The largest `meta.pkl` read: a character vocabulary is a few kilobytes.
const META_LIMIT: u64 = 1 << 20;

/// A character vocabulary from `data/NAME/meta.pkl` (`prepare.py`'s `{'vocab_size',
/// 'itos', 'stoi'}`, written by `pickle.dump`): `itos[0]`, `itos[1]`, … in id order.
/// Read with the same bounded pickle machine as the checkpoint, which builds plain
/// values only and refuses any other Python object.
fn read_meta(path: &Path) -> Result<Tokenizer, TrainError> {
    use burn_store::pytorch::pickle_reader::{Object, read_pickle};
    let bad = |reason: String| error(path, reason);
    let bytes =
        quill_data::files::read_regular(path, META_LIMIT).map_err(|e| bad(e.to_string()))?;
    let meta = read_pickle(&mut std::io::Cursor::new(bytes)).map_err(|e| {
        bad(format!(
            "not a meta.pkl quill can read ({e}); quill reads only plain values from a pickle"
        ))
    })?;
    let no_itos = || {
        bad(
            "no itos dictionary (a character model's meta.pkl has vocab_size, itos and stoi)"
                .into(),
        )
    };
    let Object::Dict(meta) = meta else {
        return Err(no_itos());
    };
    let Some(Object::Dict(itos)) = meta.get("itos") else {
        return Err(no_itos());
    };
    let mut vocab = String::new();
    for id in 0..itos.len() {
        match itos.get(&id.to_string()) {
            Some(Object::String(s)) if s.chars().count() == 1 => vocab.push_str(s),
            _ => return Err(bad(format!("itos has no single character for id {id}"))),
        }
    }
    let json = serde_json::json!({ "vocab": vocab }).to_string();
    let chars = CharTokenizer::from_json(&json).map_err(|e| bad(e.to_string()))?;
    Ok(chars.into())
}
