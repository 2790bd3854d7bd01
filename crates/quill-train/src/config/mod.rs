//! A run's settings: the model's ([`ModelConfig`], stated once in `quill-model`) and
//! the training's ([`TrainConfig`]), together a [`RunConfig`]. They come from a
//! [`Preset`] (or a checkpoint), then a `--config` TOML file, then flags: one chain,
//! [`RunConfig::resolve`], for every command.

use serde::{Deserialize, Serialize};

use quill_data::BatchSampler;
use quill_model::{ModelConfig, ModelOverrides};

use crate::{Checkpoint, TrainError};

mod presets;

pub use presets::{DEFAULT_PRESET, PRESETS, Preset};

/// The longest sample printed at each evaluation (`sample_tokens`).
const MAX_SAMPLE_TOKENS: usize = 100_000;

/// How the learning rate changes over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The peak learning rate throughout.
    Constant,
    /// Linear warmup, then cosine decay to the minimum learning rate at the last step.
    Cosine,
    /// Warmup, stable, decay: linear warmup, the peak learning rate, then a linear
    /// decay to the minimum over the last cooldown_iters steps (modded-nanogpt's).
    Wsd,
}

/// Which optimizer updates the hidden matrices (the Linear weights inside blocks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW for every parameter (nanoGPT).
    #[default]
    Adamw,
    /// Muon (momentum orthogonalised by Newton–Schulz) for the hidden matrices; AdamW
    /// for embeddings, the LM head, gains and biases.
    Muon,
}

/// Declares [`TrainConfig`] with its defaults, its all-optional twin [`TrainOverrides`]
/// (what a TOML file or the command line may change), and [`TrainConfig::apply`], from
/// one field list in the grammar of the model's settings (`quill_model::GptConfig`):
/// `field: type = default; "help"`.
/// `#[formerly "key", "flag"]` keeps another name of a setting working as a file key and
/// a flag: a renamed setting's old name, or nanoGPT's where quill's is shorter.
macro_rules! train_config {
    ($(
        $(#[doc = $doc:literal])* $(#[formerly $old:literal, $old_flag:literal])?
        $field:ident : $ty:ty = $default:expr ; $help:literal
    ),* $(,)?) => {
        /// The training settings of a run (the model's are its [`ModelConfig`]). Saved in
        /// each checkpoint's `config.json`, beside the model. Every setting has a
        /// default, nanoGPT's `train.py` value where it has one (GPT-2 124M on
        /// OpenWebText), so a program and a preset name only what they change:
        ///
        /// ```
        /// use quill_train::TrainConfig;
        ///
        /// let config = TrainConfig { batch_size: 64, max_iters: 5000, ..Default::default() };
        /// assert_eq!((config.lr, config.grad_accum, config.beta2), (6e-4, 40, 0.95));
        /// config.validate().unwrap();
        /// ```
        ///
        /// A setting missing from a `config.json` takes its default too.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct TrainConfig {
            $( $(#[doc = $doc])* $(#[serde(alias = $old)])? pub $field: $ty, )*
        }

        impl Default for TrainConfig {
            fn default() -> Self {
                TrainConfig { $( $field: $default, )* }
            }
        }

        /// Changes to a [`TrainConfig`]: the keys of a `--config` TOML file and the
        /// flags of `quill train`, named as in nanoGPT (kebab-case on the command line).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        pub struct TrainOverrides {
            $(
                #[doc = $help]
                #[cfg_attr(feature = "clap", arg(long $(, alias = $old_flag)?))]
                #[serde(skip_serializing_if = "Option::is_none")]
                $(#[serde(alias = $old)])?
                pub $field: Option<$ty>,
            )*
        }

        impl TrainConfig {
            /// Replaces every field that `overrides` sets.
            pub fn apply(&mut self, overrides: &TrainOverrides) {
                $( if let Some(value) = &overrides.$field { self.$field = value.clone(); } )*
            }
        }

        impl TrainOverrides {
            /// The keys a `--config` file may give the training.
            pub const KEYS: &[&str] = &[$( stringify!($field), )*];
            /// Other names of keys (former ones, nanoGPT's), which read as the key.
            pub const FORMER_KEYS: &[&str] = &[$( $($old,)? )*];

            /// Takes every field that `later` sets (a command line over a file).
            pub fn apply(&mut self, later: &TrainOverrides) {
                $( if later.$field.is_some() { self.$field = later.$field.clone(); } )*
            }
        }
    };
}

train_config! {
    /// Sequences per micro-batch.
    batch_size: usize = 12; "Sequences per micro-batch.",
    /// Micro-batches per optimizer step (nanoGPT: 5 × 8, for 8 GPUs).
    #[formerly "gradient_accumulation_steps", "gradient-accumulation-steps"]
    grad_accum: usize = 40; "Micro-batches per optimizer step.",
    /// Optimizer steps.
    max_iters: usize = 600_000; "Optimizer steps.",
    /// Evaluate (and checkpoint) every this many steps.
    eval_interval: usize = 2000; "Evaluate (and checkpoint) every this many steps.",
    /// Batches per split in each periodic evaluation.
    eval_iters: usize = 200; "Batches per split in each periodic evaluation.",
    /// Batches per split in the evaluation after the last step.
    final_eval_iters: usize = 200; "Batches per split in the evaluation after the last step.",
    /// Peak learning rate.
    #[formerly "learning_rate", "learning-rate"]
    lr: f64 = 6e-4; "Peak learning rate.",
    /// Final learning rate of the cosine and wsd schedules.
    min_lr: f64 = 6e-5; "Final learning rate of the cosine and wsd schedules.",
    /// Learning-rate schedule.
    schedule: Schedule = Schedule::Cosine; "Learning-rate schedule.",
    /// Linear warmup steps (cosine and wsd schedules).
    warmup_iters: usize = 2000; "Linear warmup steps (cosine and wsd schedules).",
    /// Final steps of linear decay to min_lr (wsd schedule).
    cooldown_iters: usize = 0; "Final steps of linear decay to min_lr (wsd schedule).",
    /// The hidden matrices' optimizer: adamw or muon.
    optimizer: OptimizerKind = OptimizerKind::Adamw; "The hidden matrices' optimizer: adamw or muon.",
    /// Muon's peak learning rate (the schedule scales it as it scales lr): 0.02, the
    /// best of 0.02, 0.05 (modded-nanogpt's) and 0.1 on the cpu model (BENCHMARKS.md).
    muon_lr: f64 = 0.02; "Muon's peak learning rate (the schedule scales it as it scales lr).",
    /// Muon's momentum (Nesterov).
    muon_momentum: f64 = 0.95; "Muon's momentum (Nesterov).",
    /// AdamW decoupled weight decay (on ≥2-D weights only).
    weight_decay: f64 = 0.1; "AdamW decoupled weight decay (on ≥2-D weights only).",
    /// AdamW β1.
    beta1: f64 = 0.9; "AdamW β1.",
    /// AdamW β2.
    beta2: f64 = 0.95; "AdamW β2.",
    /// AdamW ε (PyTorch's default; nanoGPT does not set it).
    eps: f64 = 1e-8; "AdamW ε.",
    /// Clip the global gradient norm to this (0 disables).
    grad_clip: f64 = 1.0; "Clip the global gradient norm to this (0 disables).",
    /// Seed of weights, batches, dropout and samples.
    seed: u64 = 1337; "Seed of weights, batches, dropout and samples.",
    /// Fraction of the corpus held out for validation (taken from its end; nanoGPT's
    /// character and Shakespeare data hold out 10 %).
    val_fraction: f64 = 0.1; "Fraction of the corpus held out for validation (taken from its end).",
    /// Tokens sampled and shown at each evaluation (0 disables; nanoGPT's `train.py`
    /// samples nothing, its `sample.py` afterwards).
    #[formerly "sample_chars", "sample-chars"]
    sample_tokens: usize = 200; "Tokens sampled and shown at each evaluation (0 disables).",
    /// In 16-bit training (bf16, f16, or emulate_bf16), keep an f32 master copy of
    /// every parameter that the optimizer updates and the model holds the rounding of
    /// (false: the 16-bit parameters alone, which lose updates smaller than their last
    /// bit). On in configurations written before the setting existed.
    master_weights: bool = true;
        "In 16-bit training, keep an f32 master copy of every parameter the optimizer updates.",
    /// Round every parameter to bf16 after each update while computing in f32: what
    /// bf16 parameter storage does to the weights, measurable on the CPU (f32 only).
    emulate_bf16: bool = false;
        "Round every parameter to bf16 after each update while computing in f32 (f32 only).",
}

/// Every setting of a run: the model and the training. A checkpoint's `config.json`
/// holds exactly this, the model once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The model (its `vocab_size` is the tokenizer's once a run starts).
    pub model: ModelConfig,
    /// The training settings. (Files written before the model was stored once repeat
    /// the model's settings here; they are ignored.)
    pub train: TrainConfig,
}

/// Changes to a [`RunConfig`]: a `--config` TOML file's keys and `quill train`'s flags,
/// the model's and the training's side by side (as in nanoGPT's configurator).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct RunOverrides {
    /// The model's settings.
    #[serde(flatten)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub model: ModelOverrides,
    /// The training settings.
    #[serde(flatten)]
    #[cfg_attr(feature = "clap", command(flatten))]
    pub train: TrainOverrides,
}

impl RunOverrides {
    /// Reads the keys of a TOML file's text (the names of [`ModelOverrides`] and
    /// [`TrainOverrides`]); an unknown key is an error naming it.
    pub fn from_toml(text: &str) -> Result<RunOverrides, TrainError> {
        let err = |e: toml::de::Error| TrainError::Config(format!("config file: {}", e.message()));
        let table: toml::Table = toml::from_str(text).map_err(err)?;
        let keys = || ModelOverrides::KEYS.iter().chain(TrainOverrides::KEYS);
        let known =
            |key: &str| keys().any(|k| *k == key) || TrainOverrides::FORMER_KEYS.contains(&key);
        if let Some(key) = table.keys().find(|key| !known(key)) {
            let keys: Vec<&str> = keys().copied().collect();
            return Err(TrainError::Config(format!(
                "config file: unknown key {key:?}; the keys are {}",
                keys.join(", ")
            )));
        }
        // A value of the wrong kind is an error that names its key.
        for (key, value) in &table {
            let one = toml::Table::from_iter([(key.clone(), value.clone())]);
            let checked = match ModelOverrides::KEYS.contains(&key.as_str()) {
                true => toml::Value::Table(one)
                    .try_into::<ModelOverrides>()
                    .map(drop),
                false => toml::Value::Table(one)
                    .try_into::<TrainOverrides>()
                    .map(drop),
            };
            checked.map_err(|e| {
                TrainError::Config(format!("config file: {key} = {value}: {}", e.message()))
            })?;
        }
        let (model, train): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(key, _)| ModelOverrides::KEYS.contains(&key.as_str()));
        Ok(RunOverrides {
            model: toml::Value::Table(model).try_into().map_err(err)?,
            train: toml::Value::Table(train).try_into().map_err(err)?,
        })
    }

    /// Takes every setting that `later` sets (a command line over a file).
    pub fn apply(&mut self, later: &RunOverrides) {
        self.model.apply(&later.model);
        self.train.apply(&later.train);
    }
}

/// Where a run's settings come from, in the order they apply: a checkpoint to resume
/// (its settings are the base), else a checkpoint to finetune without a preset (its
/// settings), else the preset (`cpu` when none is named); then a `--config` file; then
/// the flags. A finetuning run keeps its checkpoint's model, changed only by what the
/// file or flags set explicitly ([`Checkpoint::check_init`] says what may differ).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// `--preset`.
    pub preset: Option<&'a str>,
    /// `--resume`.
    pub resume: Option<&'a Checkpoint>,
    /// `--init-from`.
    pub init_from: Option<&'a Checkpoint>,
    /// The `--config` file's settings.
    pub file: Option<&'a RunOverrides>,
    /// The flags.
    pub flags: Option<&'a RunOverrides>,
}

impl RunConfig {
    /// The preset called `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<RunConfig, TrainError> {
        Ok(Preset::named(name)?.config())
    }

    /// The settings `sources` describe, checked.
    pub fn resolve(sources: &Sources<'_>) -> Result<RunConfig, TrainError> {
        let mut config = match (sources.resume, sources.init_from, sources.preset) {
            (Some(checkpoint), _, _) | (None, Some(checkpoint), None) => checkpoint.config.clone(),
            (None, _, preset) => RunConfig::preset(preset.unwrap_or(DEFAULT_PRESET))?,
        };
        let mut explicit = sources.file.cloned().unwrap_or_default();
        explicit.apply(&sources.flags.cloned().unwrap_or_default());
        config.apply(&explicit);
        if let (None, Some(init)) = (sources.resume, sources.init_from) {
            config.model = init.config.model.clone();
            config.model.apply(&explicit.model);
        }
        config.validate()?;
        Ok(config)
    }

    /// Replaces every setting that `overrides` sets.
    pub fn apply(&mut self, overrides: &RunOverrides) {
        self.model.apply(&overrides.model);
        self.train.apply(&overrides.train);
    }

    /// Checks the model and the training settings.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.train.validate()?;
        self.model.validate()?;
        Ok(())
    }

    /// The model for a vocabulary of `vocab_size` tokens.
    pub fn model_for(&self, vocab_size: usize) -> ModelConfig {
        self.model.clone().with_vocab_size(vocab_size)
    }

    /// Context length in tokens.
    pub fn block_size(&self) -> usize {
        self.model.block_size()
    }

    /// Training tokens per optimizer step.
    pub fn tokens_per_iter(&self) -> usize {
        self.train.batch_size * self.block_size() * self.train.grad_accum
    }

    /// The sampler of training batches these settings describe: `batch_size` blocks of
    /// `block_size` tokens, drawn from `seed` (the trainer, the benchmark and the parity
    /// check all draw the same batches).
    pub fn batch_sampler(&self) -> Result<BatchSampler, TrainError> {
        Ok(BatchSampler::new(
            self.train.batch_size,
            self.block_size(),
            self.train.seed,
        )?)
    }

    /// Every setting as flat keys (those of a `--config` file, which reads it back):
    /// what `quill train` prints and `quill bench --json` reports.
    pub fn flat(&self) -> FlatConfig<'_> {
        FlatConfig {
            model: self.model.overrides(),
            train: &self.train,
        }
    }
}

/// [`RunConfig::flat`]: the model's settings, then the training's, as one map.
#[derive(Debug, Serialize)]
pub struct FlatConfig<'a> {
    #[serde(flatten)]
    model: ModelOverrides,
    #[serde(flatten)]
    train: &'a TrainConfig,
}

impl FlatConfig<'_> {
    /// As TOML, the format of `--config` files.
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string(self).map_err(|e| TrainError::Config(e.to_string()))
    }
}

impl TrainConfig {
    /// Checks the training settings (the model's are checked by [`ModelConfig`]).
    /// Every value is finite and in range; a setting that JSON cannot store (`inf`) never
    /// reaches a checkpoint.
    pub fn validate(&self) -> Result<(), TrainError> {
        let positive = [
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("eval_interval", self.eval_interval),
            ("eval_iters", self.eval_iters),
            ("final_eval_iters", self.final_eval_iters),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(TrainError::Config(format!("{name} must be at least 1")));
        }
        let checks = [
            (
                self.lr > 0.0 && self.lr.is_finite(),
                "lr must be a positive number",
            ),
            (
                self.min_lr >= 0.0 && self.min_lr <= self.lr,
                "min_lr must be in [0, lr]",
            ),
            (
                self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
                "weight_decay must be a number ≥ 0",
            ),
            ((0.0..1.0).contains(&self.beta1), "beta1 must be in [0, 1)"),
            ((0.0..1.0).contains(&self.beta2), "beta2 must be in [0, 1)"),
            (
                self.eps > 0.0 && self.eps.is_finite(),
                "eps must be a number > 0",
            ),
            (
                self.muon_lr > 0.0 && self.muon_lr.is_finite(),
                "muon_lr must be a positive number",
            ),
            (
                (0.0..1.0).contains(&self.muon_momentum),
                "muon_momentum must be in [0, 1)",
            ),
            (
                self.schedule != Schedule::Wsd
                    || self.warmup_iters + self.cooldown_iters <= self.max_iters,
                "the wsd schedule needs warmup_iters + cooldown_iters ≤ max_iters",
            ),
            (
                self.grad_clip >= 0.0 && self.grad_clip.is_finite(),
                "grad_clip must be a number ≥ 0 (0 disables clipping)",
            ),
            (
                self.grad_accum <= MAX_GRAD_ACCUM,
                "grad_accum must be at most 65536",
            ),
            (
                self.sample_tokens <= MAX_SAMPLE_TOKENS,
                "sample_tokens must be at most 100000 (the sample printed at each evaluation)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(TrainError::Config(message.to_string())),
            None => Ok(()),
        }
    }
}

/// The largest `grad_accum`: its product with a batch and a block stays far from
/// overflowing (a batch too large is the memory check's to refuse).
const MAX_GRAD_ACCUM: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;
    use quill_data::TokenizerSpec;
    use quill_model::{Activation, BigramConfig, GptConfig, ModelKind, Norm, Position};

    fn gpt(config: &RunConfig) -> &GptConfig {
        match &config.model {
            ModelConfig::Gpt(g) => g,
            ModelConfig::Bigram(_) => panic!("a GPT preset"),
        }
    }

    #[test]
    fn presets_match_the_table() {
        let cpu = RunConfig::preset("cpu").unwrap();
        let (m, t) = (gpt(&cpu), &cpu.train);
        assert_eq!(
            (
                m.n_layer,
                m.n_head,
                m.n_embd,
                m.block_size,
                t.batch_size,
                t.max_iters
            ),
            (4, 4, 128, 64, 12, 2000)
        );
        assert_eq!((t.eval_interval, t.eval_iters, m.dropout), (250, 20, 0.0));
        assert!(m.tie_weights && !m.bias);
        let sc = RunConfig::preset("shakespeare-char").unwrap().train;
        assert_eq!(
            (sc.lr, sc.min_lr, sc.warmup_iters, sc.beta2, sc.weight_decay),
            (1e-3, 1e-4, 100, 0.99, 0.1)
        );
        assert_eq!(sc.schedule, Schedule::Cosine);
        let lecture = RunConfig::preset("lecture").unwrap();
        assert_eq!(
            (
                lecture.train.lr,
                lecture.train.schedule,
                gpt(&lecture).tie_weights,
                lecture.train.eval_interval
            ),
            (3e-4, Schedule::Constant, false, 500)
        );
        let bigram = RunConfig::preset("bigram").unwrap();
        assert_eq!(
            bigram.model,
            ModelConfig::Bigram(BigramConfig {
                vocab_size: 65,
                block_size: 8,
                n_embd: 32
            })
        );
        assert_eq!(
            (bigram.train.batch_size, bigram.train.max_iters),
            (32, 10_000)
        );
        let fast = RunConfig::preset("cpu-fast").unwrap();
        let m = gpt(&fast);
        assert_eq!(
            (m.n_layer, m.n_embd, m.block_size, fast.train.batch_size),
            (3, 128, 64, 12)
        );
        assert_eq!(
            (fast.train.optimizer, m.position, m.activation, m.norm),
            (
                OptimizerKind::Muon,
                Position::Rotary,
                Activation::Relu2,
                Norm::Layer
            )
        );
        let t = &fast.train;
        assert_eq!(
            (t.schedule, t.max_iters, t.warmup_iters, t.cooldown_iters),
            (Schedule::Wsd, 450, 30, 180)
        );
        assert_eq!(
            gpt(&RunConfig::preset("shakespeare-gpt2").unwrap()).dropout,
            0.1
        );
        for preset in &PRESETS {
            preset.config().validate().unwrap();
        }
        assert_eq!(
            Preset::named("shakespeare-gpt2").unwrap().tokenizer,
            TokenizerSpec::Gpt2
        );
    }

    #[test]
    fn the_defaults_are_nanogpts_train_py() {
        let d = TrainConfig::default();
        assert_eq!(
            (
                d.batch_size,
                d.grad_accum,
                d.max_iters,
                d.eval_interval,
                d.eval_iters
            ),
            (12, 40, 600_000, 2000, 200)
        );
        assert_eq!(
            (d.lr, d.min_lr, d.warmup_iters, d.schedule),
            (6e-4, 6e-5, 2000, Schedule::Cosine)
        );
        assert_eq!(
            (d.weight_decay, d.beta1, d.beta2, d.grad_clip, d.seed),
            (0.1, 0.9, 0.95, 1.0, 1337)
        );
        d.validate().unwrap();
        // A config.json without a setting reads it as its default.
        let t: TrainConfig = serde_json::from_str(r#"{"batch_size": 64}"#).unwrap();
        assert_eq!(
            t,
            TrainConfig {
                batch_size: 64,
                ..Default::default()
            }
        );
    }

    #[test]
    fn unknown_preset_lists_the_presets() {
        let err = RunConfig::preset("gpt5").unwrap_err().to_string();
        assert!(
            err.contains(
                "bigram, lecture, shakespeare-char, cpu, shakespeare-gpt2, cpu-fast, shakespeare-char-fast"
            ),
            "{err}"
        );
    }

    #[test]
    fn file_then_flags_override_the_preset() {
        let file = RunOverrides::from_toml(
            "max_iters = 10\nlr = 0.01\nschedule = \"constant\"\nn_layer = 2\n",
        )
        .unwrap();
        let flags = RunOverrides {
            train: TrainOverrides {
                lr: Some(0.02),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = RunConfig::resolve(&Sources {
            file: Some(&file),
            flags: Some(&flags),
            ..Default::default()
        })
        .unwrap();
        let t = &config.train;
        assert_eq!(
            (t.max_iters, t.lr, t.schedule),
            (10, 0.02, Schedule::Constant)
        );
        assert_eq!((gpt(&config).n_embd, gpt(&config).n_layer), (128, 2));
        // The effective configuration reads back as a file to the same settings.
        let text = config.flat().to_toml().unwrap();
        let back = RunOverrides::from_toml(&text).unwrap();
        let mut again = RunConfig::preset("bigram").unwrap();
        again.apply(&back);
        assert_eq!(again.model.kind(), ModelKind::Gpt);
        assert_eq!(again.train, config.train);
        assert_eq!(
            again.model.with_vocab_size(1),
            config.model.with_vocab_size(1)
        );
    }

    #[test]
    fn a_renamed_setting_reads_under_its_old_name() {
        let old = RunOverrides::from_toml("sample_chars = 7").unwrap();
        assert_eq!(old.train.sample_tokens, Some(7));
        let mut json = serde_json::to_value(RunConfig::preset("cpu").unwrap().train).unwrap();
        let map = json.as_object_mut().unwrap();
        map.remove("sample_tokens");
        map.insert("sample_chars".into(), 9.into());
        let train: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(train.sample_tokens, 9);
        // nanoGPT's names of settings quill names shorter.
        let nanogpt =
            RunOverrides::from_toml("learning_rate = 2e-3\ngradient_accumulation_steps = 4")
                .unwrap();
        assert_eq!(
            (nanogpt.train.lr, nanogpt.train.grad_accum),
            (Some(2e-3), Some(4))
        );
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        let err = RunOverrides::from_toml("max_itres = 10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key \"max_itres\""), "{err}");
        // The list names the model's keys and the training's.
        let err = RunOverrides::from_toml("n_layr = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the keys are model, n_layer, n_head"), "{err}");
        assert!(
            err.ends_with("sample_tokens, master_weights, emulate_bf16"),
            "{err}"
        );
        let message = |text: &str| RunOverrides::from_toml(text).unwrap_err().to_string();
        assert_eq!(
            message("lr = 1e-3\nmax_iters = \"ten\""),
            "invalid configuration: config file: max_iters = \"ten\": invalid type: string \"ten\", expected usize"
        );
        assert_eq!(
            message("n_layer = 2.5"),
            "invalid configuration: config file: n_layer = 2.5: invalid type: floating point `2.5`, expected usize"
        );
        let mut config = RunConfig::preset("cpu").unwrap();
        config.model.apply(&ModelOverrides {
            n_head: Some(3),
            ..Default::default()
        });
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("divisible")
        );
        let mut config = RunConfig::preset("cpu").unwrap();
        config.train.batch_size = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: batch_size must be at least 1"
        );
    }
}
