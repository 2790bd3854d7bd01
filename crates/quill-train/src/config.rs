//! Training configuration: presets, overridden by a TOML file, overridden by flags.

use serde::{Deserialize, Serialize};

use quill_data::{BatchSampler, TokenizerSpec};
use quill_model::{Activation, BigramConfig, GptConfig, ModelConfig, Norm, Position};

use crate::TrainError;

/// The longest sample printed at each evaluation (`sample_chars`).
const MAX_SAMPLE_CHARS: usize = 100_000;

/// Which model a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The lecture's bigram model: token and position embeddings, then an LM head.
    Bigram,
    /// nanoGPT's transformer.
    Gpt,
}

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

/// Declares [`TrainConfig`], its all-optional twin [`TrainOverrides`] (what a TOML file
/// or the command line may change), and [`TrainConfig::apply`], from one field list.
macro_rules! train_config {
    ($( $(#[doc = $doc:literal])* $(#[serde $serde:tt])? $field:ident : $ty:ty ),* $(,)?) => {
        /// Every setting of a training run. Saved in each checkpoint's `config.json`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct TrainConfig {
            $( $(#[doc = $doc])* $(#[serde $serde])? pub $field: $ty, )*
        }

        /// Changes to a [`TrainConfig`]: the keys of a `--config` TOML file and the
        /// flags of `quill train`, named as in nanoGPT (kebab-case on the command line).
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        pub struct TrainOverrides {
            $( $(#[doc = $doc])* #[cfg_attr(feature = "clap", arg(long))] pub $field: Option<$ty>, )*
        }

        impl TrainConfig {
            /// Replaces every field that `overrides` sets.
            pub fn apply(&mut self, overrides: &TrainOverrides) {
                $( if let Some(value) = &overrides.$field { self.$field = value.clone(); } )*
            }
        }

        impl TrainOverrides {
            /// Takes every field that `later` sets (a command line over a file).
            pub fn apply(&mut self, later: &TrainOverrides) {
                $( if later.$field.is_some() { self.$field = later.$field.clone(); } )*
            }
        }
    };
}

train_config! {
    /// Model family.
    model: ModelKind,
    /// Transformer blocks (GPT).
    n_layer: usize,
    /// Attention heads per block (GPT).
    n_head: usize,
    /// Embedding width.
    n_embd: usize,
    /// Context length in tokens.
    block_size: usize,
    /// Dropout probability while training (GPT).
    dropout: f64,
    /// Biases in Linear and LayerNorm layers (GPT).
    bias: bool,
    /// Share the token embedding with the LM head (GPT).
    tie_weights: bool,
    /// The MLP's nonlinearity (GPT): gelu (exact, nanoGPT) or gelu-tanh (GPT-2's weights).
    #[serde(default)]
    activation: Activation,
    /// Round the embedding and LM head rows up to a multiple of this (GPT; 1: none).
    #[serde(default = "quill_model::config::no_vocab_padding")]
    pad_vocab: usize,
    /// Position encoding (GPT): learned (a table, GPT-2) or rotary.
    #[serde(default)]
    position: Position,
    /// Normalisation layers (GPT): layer (LayerNorm) or rms (RMSNorm).
    #[serde(default)]
    norm: Norm,
    /// Start the residual projections at zero (GPT).
    #[serde(default)]
    zero_init_proj: bool,
    /// Sequences per micro-batch.
    batch_size: usize,
    /// Micro-batches per optimizer step.
    grad_accum: usize,
    /// Optimizer steps.
    max_iters: usize,
    /// Evaluate (and checkpoint) every this many steps.
    eval_interval: usize,
    /// Batches per split in each periodic evaluation.
    eval_iters: usize,
    /// Batches per split in the evaluation after the last step.
    final_eval_iters: usize,
    /// Peak learning rate.
    lr: f64,
    /// Final learning rate of the cosine schedule.
    min_lr: f64,
    /// Learning-rate schedule.
    schedule: Schedule,
    /// Linear warmup steps (cosine and wsd schedules).
    warmup_iters: usize,
    /// Final steps of linear decay to min_lr (wsd schedule).
    #[serde(default)]
    cooldown_iters: usize,
    /// The hidden matrices' optimizer: adamw or muon.
    #[serde(default)]
    optimizer: OptimizerKind,
    /// Muon's peak learning rate (the schedule scales it as it scales lr).
    #[serde(default = "default_muon_lr")]
    muon_lr: f64,
    /// Muon's momentum (Nesterov).
    #[serde(default = "default_muon_momentum")]
    muon_momentum: f64,
    /// AdamW decoupled weight decay (on ≥2-D weights only).
    weight_decay: f64,
    /// AdamW β1.
    beta1: f64,
    /// AdamW β2.
    beta2: f64,
    /// AdamW ε.
    eps: f64,
    /// Clip the global gradient norm to this (0 disables).
    grad_clip: f64,
    /// Seed of weights, batches, dropout and samples.
    seed: u64,
    /// Fraction of the corpus held out for validation (taken from its end).
    val_fraction: f64,
    /// Tokens sampled and shown at each evaluation (0 disables).
    sample_chars: usize,
}

/// `muon_lr` of configurations written before Muon existed: 0.02, the best of 0.02,
/// 0.05 (modded-nanogpt's) and 0.1 on the cpu model (BENCHMARKS.md).
pub(crate) fn default_muon_lr() -> f64 {
    0.02
}

/// `muon_momentum` of configurations written before Muon existed: 0.95.
pub(crate) fn default_muon_momentum() -> f64 {
    0.95
}

/// Names of the built-in presets.
pub const PRESETS: [&str; 7] = [
    "bigram",
    "lecture",
    "shakespeare-char",
    "cpu",
    "shakespeare-gpt2",
    "cpu-fast",
    "shakespeare-char-fast",
];

/// The fast recipe on `base`'s model: the modded-nanogpt choices that shortened the
/// time to val ≤ 1.95 on the cpu model, each alone over 3 seeds (BENCHMARKS.md): Muon,
/// rotary positions, ReLU², and a warmup–stable–decay schedule of `max_iters` steps
/// with a short warmup and the last 40% decaying. (RMSNorm and zero-initialised
/// projections did not win there and stay off.)
fn fast_recipe(base: TrainConfig, max_iters: usize, warmup_iters: usize) -> TrainConfig {
    TrainConfig {
        optimizer: OptimizerKind::Muon,
        position: Position::Rotary,
        activation: Activation::Relu2,
        schedule: Schedule::Wsd,
        max_iters,
        warmup_iters,
        cooldown_iters: max_iters * 2 / 5,
        ..base
    }
}

impl TrainConfig {
    /// The preset called `name`, or an error listing the presets.
    pub fn preset(name: &str) -> Result<TrainConfig, TrainError> {
        let shakespeare_char = TrainConfig {
            model: ModelKind::Gpt,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            dropout: 0.2,
            bias: false,
            tie_weights: true,
            activation: Activation::Gelu,
            pad_vocab: 1,
            position: Position::Learned,
            norm: Norm::Layer,
            zero_init_proj: false,
            batch_size: 64,
            grad_accum: 1,
            max_iters: 5000,
            eval_interval: 250,
            eval_iters: 200,
            final_eval_iters: 200,
            lr: 1e-3,
            min_lr: 1e-4,
            schedule: Schedule::Cosine,
            warmup_iters: 100,
            cooldown_iters: 0,
            optimizer: OptimizerKind::Adamw,
            muon_lr: default_muon_lr(),
            muon_momentum: default_muon_momentum(),
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 1337,
            val_fraction: 0.1,
            sample_chars: 200,
        };
        // The lecture's PyTorch defaults: AdamW(lr) with β2 0.999, weight decay 0.01, no clipping.
        let lecture = TrainConfig {
            tie_weights: false,
            bias: true,
            eval_interval: 500,
            lr: 3e-4,
            min_lr: 3e-4,
            schedule: Schedule::Constant,
            warmup_iters: 0,
            weight_decay: 0.01,
            beta2: 0.999,
            grad_clip: 0.0,
            ..shakespeare_char.clone()
        };
        let cpu = TrainConfig {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 64,
            dropout: 0.0,
            batch_size: 12,
            max_iters: 2000,
            eval_interval: 250,
            eval_iters: 20,
            ..shakespeare_char.clone()
        };
        Ok(match name {
            "shakespeare-char" => shakespeare_char,
            "lecture" => lecture,
            "bigram" => TrainConfig {
                model: ModelKind::Bigram,
                n_layer: 0,
                n_head: 0,
                n_embd: 32,
                block_size: 8,
                dropout: 0.0,
                batch_size: 32,
                max_iters: 10_000,
                lr: 1e-3,
                min_lr: 1e-3,
                ..lecture
            },
            // One layer fewer than cpu: it reached val 1.95 in the same steps, each 25%
            // cheaper (BENCHMARKS.md).
            "cpu-fast" => TrainConfig {
                n_layer: 3,
                eval_interval: 100,
                ..fast_recipe(cpu, 450, 30)
            },
            // Not measured: no GPU was at hand (the steps are a guess from cpu-fast's).
            "shakespeare-char-fast" => fast_recipe(shakespeare_char, 2500, 100),
            "cpu" => cpu,
            // The cpu model on GPT-2 tokens of tiny Shakespeare (nanoGPT's
            // data/shakespeare): 302k training tokens overfit within a few hundred steps
            // of this model, hence dropout and a short run.
            "shakespeare-gpt2" => TrainConfig {
                dropout: 0.1,
                max_iters: 500,
                eval_interval: 100,
                warmup_iters: 50,
                sample_chars: 100,
                ..cpu
            },
            other => {
                return Err(TrainError::Config(format!(
                    "unknown preset {other:?}; the presets are {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }

    /// The tokenizer preset `name` trains with: GPT-2's for `shakespeare-gpt2`,
    /// characters for the others.
    pub fn preset_tokenizer(name: &str) -> TokenizerSpec {
        match name {
            "shakespeare-gpt2" => TokenizerSpec::Gpt2,
            _ => TokenizerSpec::Char,
        }
    }

    /// Reads overrides from a TOML file's text (keys as in [`TrainOverrides`]).
    pub fn overrides_from_toml(text: &str) -> Result<TrainOverrides, TrainError> {
        toml::from_str(text)
            .map_err(|e| TrainError::Config(format!("config file: {}", e.message())))
    }

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
                self.sample_chars <= MAX_SAMPLE_CHARS,
                "sample_chars must be at most 100000 (the sample printed at each evaluation)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(TrainError::Config(message.to_string())),
            None => self.model_config(1).validate().map_err(TrainError::from),
        }
    }

    /// The model these settings describe, for a vocabulary of `vocab_size`.
    pub fn model_config(&self, vocab_size: usize) -> ModelConfig {
        match self.model {
            ModelKind::Bigram => ModelConfig::Bigram(BigramConfig {
                vocab_size,
                block_size: self.block_size,
                n_embd: self.n_embd,
            }),
            ModelKind::Gpt => ModelConfig::Gpt(GptConfig {
                vocab_size,
                block_size: self.block_size,
                n_layer: self.n_layer,
                n_head: self.n_head,
                n_embd: self.n_embd,
                dropout: self.dropout,
                bias: self.bias,
                tie_weights: self.tie_weights,
                activation: self.activation,
                pad_vocab: self.pad_vocab,
                position: self.position,
                norm: self.norm,
                zero_init_proj: self.zero_init_proj,
            }),
        }
    }

    /// The sampler of training batches these settings describe: `batch_size` blocks of
    /// `block_size` tokens, drawn from `seed` (the trainer, the benchmark and the parity
    /// check all draw the same batches).
    pub fn batch_sampler(&self) -> Result<BatchSampler, TrainError> {
        Ok(BatchSampler::new(
            self.batch_size,
            self.block_size,
            self.seed,
        )?)
    }

    /// Takes the model settings of `model` (a checkpoint's, for `--init-from`) except
    /// those `explicit` sets (a file's or the command line's), which must then agree
    /// with it ([`crate::Checkpoint::init_model`] says which does not). Only dropout
    /// and a smaller block_size may differ.
    pub fn adopt_model(&mut self, model: &ModelConfig, explicit: &TrainOverrides) {
        let adopted = match model {
            ModelConfig::Bigram(b) => TrainOverrides {
                model: Some(ModelKind::Bigram),
                n_embd: Some(b.n_embd),
                block_size: Some(b.block_size),
                ..Default::default()
            },
            ModelConfig::Gpt(gpt) => TrainOverrides {
                model: Some(ModelKind::Gpt),
                n_layer: Some(gpt.n_layer),
                n_head: Some(gpt.n_head),
                n_embd: Some(gpt.n_embd),
                block_size: Some(gpt.block_size),
                bias: Some(gpt.bias),
                tie_weights: Some(gpt.tie_weights),
                activation: Some(gpt.activation),
                pad_vocab: Some(gpt.pad_vocab),
                position: Some(gpt.position),
                norm: Some(gpt.norm),
                zero_init_proj: Some(gpt.zero_init_proj),
                ..Default::default()
            },
        };
        self.apply(&adopted);
        self.apply(explicit);
    }

    /// Training tokens per optimizer step.
    pub fn tokens_per_iter(&self) -> usize {
        self.batch_size * self.block_size * self.grad_accum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_table() {
        let cpu = TrainConfig::preset("cpu").unwrap();
        assert_eq!(
            (
                cpu.n_layer,
                cpu.n_head,
                cpu.n_embd,
                cpu.block_size,
                cpu.batch_size,
                cpu.max_iters
            ),
            (4, 4, 128, 64, 12, 2000)
        );
        assert_eq!(
            (cpu.eval_interval, cpu.eval_iters, cpu.dropout),
            (250, 20, 0.0)
        );
        assert!(cpu.tie_weights);
        let sc = TrainConfig::preset("shakespeare-char").unwrap();
        assert_eq!(
            (sc.lr, sc.min_lr, sc.warmup_iters, sc.beta2, sc.weight_decay),
            (1e-3, 1e-4, 100, 0.99, 0.1)
        );
        assert_eq!(sc.schedule, Schedule::Cosine);
        let lecture = TrainConfig::preset("lecture").unwrap();
        assert_eq!(
            (
                lecture.lr,
                lecture.schedule,
                lecture.tie_weights,
                lecture.eval_interval
            ),
            (3e-4, Schedule::Constant, false, 500)
        );
        let bigram = TrainConfig::preset("bigram").unwrap();
        assert_eq!(
            (
                bigram.model,
                bigram.n_embd,
                bigram.block_size,
                bigram.batch_size,
                bigram.max_iters
            ),
            (ModelKind::Bigram, 32, 8, 32, 10_000)
        );
        let fast = TrainConfig::preset("cpu-fast").unwrap();
        assert_eq!(
            (fast.n_layer, fast.n_embd, fast.block_size, fast.batch_size),
            (3, 128, 64, 12)
        );
        assert_eq!(
            (fast.optimizer, fast.position, fast.activation, fast.norm),
            (
                OptimizerKind::Muon,
                Position::Rotary,
                Activation::Relu2,
                Norm::Layer
            )
        );
        assert_eq!(
            (
                fast.schedule,
                fast.max_iters,
                fast.warmup_iters,
                fast.cooldown_iters
            ),
            (Schedule::Wsd, 450, 30, 180)
        );
        for name in PRESETS {
            TrainConfig::preset(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn unknown_preset_lists_the_presets() {
        let err = TrainConfig::preset("gpt5").unwrap_err().to_string();
        assert!(
            err.contains(
                "bigram, lecture, shakespeare-char, cpu, shakespeare-gpt2, cpu-fast, shakespeare-char-fast"
            ),
            "{err}"
        );
    }

    #[test]
    fn file_then_flags_override_the_preset() {
        let mut config = TrainConfig::preset("cpu").unwrap();
        let file = TrainConfig::overrides_from_toml(
            "max_iters = 10\nlr = 0.01\nschedule = \"constant\"\n",
        )
        .unwrap();
        config.apply(&file);
        let flags = TrainOverrides {
            lr: Some(0.02),
            ..Default::default()
        };
        config.apply(&flags);
        assert_eq!(
            (config.max_iters, config.lr, config.schedule),
            (10, 0.02, Schedule::Constant)
        );
        assert_eq!(config.n_embd, 128);
    }

    #[test]
    fn bad_files_and_values_are_errors() {
        let err = TrainConfig::overrides_from_toml("max_itres = 10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_itres"), "{err}");
        assert!(TrainConfig::overrides_from_toml("max_iters = \"ten\"").is_err());
        let mut config = TrainConfig::preset("cpu").unwrap();
        config.n_head = 3;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("divisible")
        );
        let mut config = TrainConfig::preset("cpu").unwrap();
        config.batch_size = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: batch_size must be at least 1"
        );
    }
}
