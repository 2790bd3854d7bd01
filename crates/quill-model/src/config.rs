//! Model configurations: validated, serialisable, and the only way to build a model.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{Bigram, Gpt, LanguageModel, ModelError};

/// Declares [`GptConfig`] with its defaults, its all-optional twin [`ModelOverrides`]
/// (the keys of a `--config` file and the flags of `quill train`) and the functions
/// between them, from one list of settings: a new model option is one entry here.
macro_rules! gpt_config {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr ; $help:literal ),* $(,)?) => {
        /// nanoGPT's model configuration. Every setting has a default (nanoGPT's
        /// `GPTConfig`: GPT-2 124M's shape, vocabulary padded to 50,304, biases, tied
        /// head), so a program names only what it changes and survives new settings:
        ///
        /// ```
        /// use quill_model::GptConfig;
        ///
        /// let config = GptConfig { vocab_size: 65, n_layer: 4, n_head: 4, n_embd: 128, ..Default::default() };
        /// assert_eq!((config.block_size, config.dropout, config.bias), (1024, 0.0, true));
        /// config.validate().unwrap();
        /// ```
        ///
        /// A setting missing from a `config.json` takes its default too.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct GptConfig {
            /// Number of distinct tokens (set from the tokenizer when a run starts).
            pub vocab_size: usize,
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for GptConfig {
            fn default() -> Self {
                GptConfig { vocab_size: 50_304, $( $field: $default, )* }
            }
        }

        /// Changes to a model's settings: the keys of a `--config` TOML file and the
        /// flags of `quill train` (kebab-case), named as in nanoGPT. `model` switches
        /// the family; the bigram model takes only `block_size` and `n_embd`.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        pub struct ModelOverrides {
            /// Model family.
            #[cfg_attr(feature = "clap", arg(long))]
            #[serde(skip_serializing_if = "Option::is_none")]
            pub model: Option<ModelKind>,
            $(
                #[doc = $help]
                #[cfg_attr(feature = "clap", arg(long))]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl ModelOverrides {
            /// The keys a `--config` file may give the model.
            pub const KEYS: &[&str] = &["model", $( stringify!($field), )*];

            /// Takes every setting that `later` sets (a command line over a file).
            pub fn apply(&mut self, later: &ModelOverrides) {
                if later.model.is_some() {
                    self.model = later.model;
                }
                $( if later.$field.is_some() { self.$field = later.$field.clone(); } )*
            }
        }

        impl GptConfig {
            /// Replaces every setting that `overrides` sets (not the family).
            pub fn apply(&mut self, overrides: &ModelOverrides) {
                $( if let Some(value) = &overrides.$field { self.$field = value.clone(); } )*
            }

            /// Every setting, as overrides: what a checkpoint's model imposes on a run
            /// that starts from it.
            pub fn overrides(&self) -> ModelOverrides {
                ModelOverrides { model: Some(ModelKind::Gpt), $( $field: Some(self.$field.clone()), )* }
            }
        }
    };
}

gpt_config! {
    /// Number of transformer blocks.
    n_layer: usize = 12; "Transformer blocks (GPT).",
    /// Attention heads per block; must divide `n_embd`.
    n_head: usize = 12; "Attention heads per block (GPT).",
    /// Width of the residual stream.
    n_embd: usize = 768; "Embedding width.",
    /// Maximum context length (positions).
    block_size: usize = 1024; "Context length in tokens.",
    /// Dropout probability in `[0, 1)`, used on embeddings, attention weights and
    /// residual branches while training.
    dropout: f64 = 0.0; "Dropout probability while training (GPT).",
    /// Whether Linear and LayerNorm layers have biases (the LM head never has one).
    bias: bool = true; "Biases in Linear and LayerNorm layers (GPT).",
    /// Whether the LM head shares the token embedding's weights.
    tie_weights: bool = true; "Share the token embedding with the LM head (GPT).",
    /// The MLP's nonlinearity: exact GELU (nanoGPT's `nn.GELU()`), GPT-2's tanh
    /// approximation (which its released weights were trained with) or ReLU².
    activation: Activation = Activation::Gelu;
        "The MLP's nonlinearity (GPT): gelu (exact, nanoGPT), gelu-tanh (GPT-2's weights) or relu2.",
    /// Rows of the token embedding and LM head are rounded up to a multiple of this
    /// (1: none; nanoGPT pads GPT-2's 50,257 to 50,304 = 64·786 for faster matrix
    /// products). The padding rows are parameters, but their logits are dropped: the
    /// model's output has `vocab_size` columns, so they are never sampled nor scored.
    pad_vocab: usize = 1;
        "Round the embedding and LM head rows up to a multiple of this (GPT; 1: none).",
    /// How tokens learn their positions: a learned table added to the token embedding
    /// (GPT-2) or rotary embeddings of the queries and keys (no table).
    position: Position = Position::Learned;
        "Position encoding (GPT): learned (a table, GPT-2) or rotary.",
    /// The normalisation before attention, the MLP and the head: LayerNorm or RMSNorm
    /// (no mean subtraction, no shift).
    norm: Norm = Norm::Layer; "Normalisation layers (GPT): layer (LayerNorm) or rms (RMSNorm).",
    /// Whether the residual projections (attention's and the MLP's `c_proj`) start at
    /// zero, so that every block starts as the identity (modded-nanogpt), instead of
    /// GPT-2's `N(0, (0.02/√(2·n_layer))²)`.
    zero_init_proj: bool = false; "Start the residual projections at zero (GPT).",
}

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The lecture's bigram model: token and position embeddings, then an LM head.
    Bigram,
    /// nanoGPT's transformer.
    Gpt,
}

/// The MLP's nonlinearity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Activation {
    /// Exact GELU, x·Φ(x) (PyTorch's nn.GELU(), nanoGPT's choice).
    #[default]
    Gelu,
    /// GELU's tanh approximation, x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's
    /// gelu_new, which its released weights were trained with.
    GeluTanh,
    /// ReLU squared, max(0, x)² (the modded-nanogpt speedrun's MLP).
    Relu2,
}

/// How a GPT encodes positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Position {
    /// A learned table of block_size vectors added to the token embeddings (GPT-2).
    #[default]
    Learned,
    /// Rotary embeddings (RoFormer): each head's queries and keys are rotated by angles
    /// proportional to their position, so attention sees relative offsets.
    Rotary,
}

/// The normalisation layer of a GPT.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Norm {
    /// LayerNorm: (x − mean) / √(var + eps) · γ (+ β).
    #[default]
    Layer,
    /// RMSNorm: x / √(mean(x²) + eps) · γ, with no mean and no shift.
    Rms,
}

/// The lecture's bigram model: token and position embeddings of width `n_embd`, then a
/// linear LM head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BigramConfig {
    /// Number of distinct tokens.
    pub vocab_size: usize,
    /// Maximum context length (positions).
    pub block_size: usize,
    /// Embedding width.
    pub n_embd: usize,
}

/// Either model, tagged by `"kind"` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// [`Bigram`].
    Bigram(BigramConfig),
    /// [`Gpt`].
    Gpt(GptConfig),
}

fn nonzero(name: &str, value: usize) -> Result<(), ModelError> {
    if value == 0 {
        return Err(ModelError::Config(format!("{name} must be at least 1")));
    }
    Ok(())
}

impl GptConfig {
    /// Checks every constraint, with a message naming the offending value.
    pub fn validate(&self) -> Result<(), ModelError> {
        nonzero("vocab_size", self.vocab_size)?;
        nonzero("block_size", self.block_size)?;
        nonzero("n_layer", self.n_layer)?;
        nonzero("n_head", self.n_head)?;
        nonzero("n_embd", self.n_embd)?;
        nonzero("pad_vocab", self.pad_vocab)?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ModelError::Config(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if self.position == Position::Rotary && !self.head_dim().is_multiple_of(2) {
            return Err(ModelError::Config(format!(
                "rotary positions need an even head size, got n_embd / n_head = {}",
                self.head_dim()
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        // Every tensor's size must be a number: checked, so that absurd settings are an
        // error here instead of a wrapped multiplication later.
        let too_large = |what: &str| {
            ModelError::Config(format!("{what} is too large (the tensor sizes overflow)"))
        };
        let rows = (self.vocab_size)
            .checked_next_multiple_of(self.pad_vocab)
            .ok_or_else(|| too_large("vocab_size padded to pad_vocab"))?;
        let sizes = [
            ("vocab_size × n_embd", rows.checked_mul(self.n_embd)),
            (
                "block_size × n_embd",
                self.block_size.checked_mul(self.n_embd),
            ),
            (
                "block_size × block_size",
                self.block_size.checked_mul(self.block_size),
            ),
            (
                "4 × n_embd × n_embd × n_layer",
                (4usize.checked_mul(self.n_embd))
                    .and_then(|n| n.checked_mul(self.n_embd))
                    .and_then(|n| n.checked_mul(self.n_layer)),
            ),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, size)| size.is_none()) {
            return Err(too_large(what));
        }
        Ok(())
    }

    /// Rows of the token embedding and LM head: `vocab_size` rounded up to a multiple
    /// of `pad_vocab`.
    pub fn padded_vocab_size(&self) -> usize {
        self.vocab_size.next_multiple_of(self.pad_vocab.max(1))
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of distinct parameters (a tied LM head counted once), as `f64` so that
    /// absurd settings give a huge number instead of an overflow.
    pub fn num_params(&self) -> f64 {
        let (v, t, c) = (
            self.padded_vocab_size() as f64,
            self.block_size as f64,
            self.n_embd as f64,
        );
        let biases = if self.bias { 1.0 } else { 0.0 };
        // RMSNorm has no shift β.
        let norm_biases = if self.norm == Norm::Layer {
            biases
        } else {
            0.0
        };
        // ln_1, c_attn, c_proj, ln_2, c_fc, mlp.c_proj: 12C² weights, 2C norm gains,
        // 9C Linear biases (c_attn 3C, c_proj C, c_fc 4C, proj C) and 2C norm shifts.
        let block = 12.0 * c * c + 2.0 * c + biases * 9.0 * c + norm_biases * 2.0 * c;
        let head = if self.tie_weights { 0.0 } else { v * c };
        let positions = if self.position == Position::Learned {
            t * c
        } else {
            0.0
        };
        // wte + wpe + blocks + ln_f + lm_head
        v * c + positions + self.n_layer as f64 * block + (1.0 + norm_biases) * c + head
    }
}

impl BigramConfig {
    /// Checks every constraint.
    pub fn validate(&self) -> Result<(), ModelError> {
        nonzero("vocab_size", self.vocab_size)?;
        nonzero("block_size", self.block_size)?;
        nonzero("n_embd", self.n_embd)
    }
}

impl ModelConfig {
    /// The family.
    pub fn kind(&self) -> ModelKind {
        match self {
            ModelConfig::Bigram(_) => ModelKind::Bigram,
            ModelConfig::Gpt(_) => ModelKind::Gpt,
        }
    }

    /// Replaces every setting that `overrides` sets. A change of family keeps the
    /// vocabulary, `block_size` and `n_embd`; the bigram model has no other settings.
    pub fn apply(&mut self, overrides: &ModelOverrides) {
        let (vocab_size, block_size, n_embd) = match self {
            ModelConfig::Bigram(c) => (c.vocab_size, c.block_size, c.n_embd),
            ModelConfig::Gpt(c) => (c.vocab_size, c.block_size, c.n_embd),
        };
        match overrides.model {
            Some(ModelKind::Bigram) if self.kind() != ModelKind::Bigram => {
                *self = ModelConfig::Bigram(BigramConfig {
                    vocab_size,
                    block_size,
                    n_embd,
                })
            }
            Some(ModelKind::Gpt) if self.kind() != ModelKind::Gpt => {
                *self = ModelConfig::Gpt(GptConfig {
                    vocab_size,
                    block_size,
                    n_embd,
                    ..Default::default()
                })
            }
            _ => {}
        }
        match self {
            ModelConfig::Gpt(c) => c.apply(overrides),
            ModelConfig::Bigram(c) => {
                c.block_size = overrides.block_size.unwrap_or(c.block_size);
                c.n_embd = overrides.n_embd.unwrap_or(c.n_embd);
            }
        }
    }

    /// Every setting, as overrides (see [`GptConfig::overrides`]).
    pub fn overrides(&self) -> ModelOverrides {
        match self {
            ModelConfig::Gpt(c) => c.overrides(),
            ModelConfig::Bigram(c) => ModelOverrides {
                model: Some(ModelKind::Bigram),
                block_size: Some(c.block_size),
                n_embd: Some(c.n_embd),
                ..Default::default()
            },
        }
    }

    /// The same model for a vocabulary of `vocab_size` tokens.
    pub fn with_vocab_size(mut self, vocab_size: usize) -> Self {
        match &mut self {
            ModelConfig::Bigram(c) => c.vocab_size = vocab_size,
            ModelConfig::Gpt(c) => c.vocab_size = vocab_size,
        }
        self
    }

    /// Dropout probability while training (the bigram model has none).
    pub fn dropout(&self) -> f64 {
        match self {
            ModelConfig::Bigram(_) => 0.0,
            ModelConfig::Gpt(c) => c.dropout,
        }
    }

    /// Checks every constraint.
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            ModelConfig::Bigram(c) => c.validate(),
            ModelConfig::Gpt(c) => c.validate(),
        }
    }

    /// Maximum context length.
    pub fn block_size(&self) -> usize {
        match self {
            ModelConfig::Bigram(c) => c.block_size,
            ModelConfig::Gpt(c) => c.block_size,
        }
    }

    /// Number of distinct tokens.
    pub fn vocab_size(&self) -> usize {
        match self {
            ModelConfig::Bigram(c) => c.vocab_size,
            ModelConfig::Gpt(c) => c.vocab_size,
        }
    }

    /// Number of distinct parameters (see [`GptConfig::num_params`]).
    pub fn num_params(&self) -> f64 {
        match self {
            // token and position tables, then the LM head's weight and bias
            ModelConfig::Bigram(c) => {
                let (v, t, e) = (c.vocab_size as f64, c.block_size as f64, c.n_embd as f64);
                v * e + t * e + e * v + v
            }
            ModelConfig::Gpt(c) => c.num_params(),
        }
    }

    /// Builds the model with freshly initialised weights drawn from `seed`. The weights
    /// are drawn on the host, so the same seed gives the same weights on every backend.
    pub fn init<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> Result<LanguageModel<B>, ModelError> {
        self.validate()?;
        let mut rng = quill_data::Rng::new(seed);
        Ok(match self {
            ModelConfig::Bigram(c) => LanguageModel::Bigram(Bigram::new(c, &mut rng, device)),
            ModelConfig::Gpt(c) => LanguageModel::Gpt(Gpt::new(c, &mut rng, device)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GptConfig {
        GptConfig {
            vocab_size: 65,
            block_size: 256,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            dropout: 0.2,
            ..Default::default()
        }
    }

    #[test]
    fn valid_config_passes() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(config().head_dim(), 64);
    }

    #[test]
    fn invalid_configs_say_why() {
        type Change = fn(&mut GptConfig);
        let cases: [(Change, &str); 7] = [
            (
                |c| (c.position, c.n_head) = (Position::Rotary, 128),
                "rotary positions need an even head size, got n_embd / n_head = 3",
            ),
            (
                |c| c.n_head = 5,
                "n_embd (384) must be divisible by n_head (5)",
            ),
            (|c| c.n_layer = 0, "n_layer must be at least 1"),
            (|c| c.vocab_size = 0, "vocab_size must be at least 1"),
            (|c| c.pad_vocab = 0, "pad_vocab must be at least 1"),
            (|c| c.dropout = 1.0, "dropout must be in [0, 1), got 1"),
            (|c| c.dropout = -0.1, "dropout must be in [0, 1), got -0.1"),
        ];
        for (change, message) in cases {
            let mut c = config();
            change(&mut c);
            assert_eq!(
                c.validate().unwrap_err().to_string(),
                format!("invalid model configuration: {message}")
            );
        }
    }

    #[test]
    fn padding_rounds_up_and_old_configs_read_as_before() {
        let mut c = config();
        assert_eq!(c.padded_vocab_size(), 65);
        c.vocab_size = 50_257;
        c.pad_vocab = 64;
        assert_eq!(c.padded_vocab_size(), 50_304);
        // A config.json written before these settings existed.
        let old = r#"{"kind":"gpt","vocab_size":65,"block_size":256,"n_layer":6,"n_head":6,
            "n_embd":384,"dropout":0.2,"bias":true,"tie_weights":true}"#;
        let parsed: ModelConfig = serde_json::from_str(old).unwrap();
        assert_eq!(parsed, ModelConfig::Gpt(config()));
        let json = serde_json::to_string(&GptConfig {
            activation: Activation::GeluTanh,
            ..config()
        })
        .unwrap();
        assert!(
            json.contains(r#""activation":"gelu-tanh","pad_vocab":1"#),
            "{json}"
        );
    }

    #[test]
    fn defaults_are_nanogpts_and_overrides_change_only_what_they_set() {
        let d = GptConfig::default();
        assert_eq!(
            (d.vocab_size, d.block_size, d.n_layer, d.n_head, d.n_embd),
            (50_304, 1024, 12, 12, 768)
        );
        assert_eq!(
            (d.dropout, d.bias, d.tie_weights, d.pad_vocab),
            (0.0, true, true, 1)
        );
        let mut model = ModelConfig::Gpt(config());
        model.apply(&ModelOverrides {
            n_layer: Some(2),
            norm: Some(Norm::Rms),
            ..Default::default()
        });
        let expected = GptConfig {
            n_layer: 2,
            norm: Norm::Rms,
            ..config()
        };
        assert_eq!(model, ModelConfig::Gpt(expected.clone()));
        assert_eq!(model.overrides().n_layer, Some(2));
        // A change of family keeps the shared settings.
        model.apply(&ModelOverrides {
            model: Some(ModelKind::Bigram),
            n_embd: Some(32),
            ..Default::default()
        });
        let bigram = BigramConfig {
            vocab_size: 65,
            block_size: 256,
            n_embd: 32,
        };
        assert_eq!(model, ModelConfig::Bigram(bigram));
        assert_eq!(model.clone().with_vocab_size(3).vocab_size(), 3);
        assert!(ModelOverrides::KEYS.contains(&"zero_init_proj"));
    }

    #[test]
    fn model_config_json_is_tagged() {
        let json = serde_json::to_string(&ModelConfig::Bigram(BigramConfig {
            vocab_size: 3,
            block_size: 8,
            n_embd: 4,
        }))
        .unwrap();
        assert_eq!(
            json,
            r#"{"kind":"bigram","vocab_size":3,"block_size":8,"n_embd":4}"#
        );
    }
}
