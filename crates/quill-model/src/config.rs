//! Model configurations: validated, serialisable, and the only way to build a model.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::{Bigram, Gpt, LanguageModel};

/// Errors from building or running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// An input sequence is longer than the model's context.
    #[error("input has {len} tokens but the model's block_size is {block_size}")]
    TooLong {
        /// The input length.
        len: usize,
        /// The model's maximum context.
        block_size: usize,
    },
    /// An input sequence is empty.
    #[error("input has no tokens")]
    Empty,
    /// Sampling options out of range.
    #[error("invalid sampling options: {0}")]
    Sampling(String),
    /// A parameter file does not fit the model.
    #[error("parameters do not fit the model: {0}")]
    Params(String),
}

/// nanoGPT's model configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// Number of distinct tokens.
    pub vocab_size: usize,
    /// Maximum context length (positions).
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`.
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Dropout probability in `[0, 1)`, used on embeddings, attention weights and
    /// residual branches while training.
    pub dropout: f64,
    /// Whether Linear and LayerNorm layers have biases (the LM head never has one).
    pub bias: bool,
    /// Whether the LM head shares the token embedding's weights.
    pub tie_weights: bool,
}

/// The seed's bigram model: token and position embeddings of width `n_embd`, then a
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
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ModelError::Config(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!(
                "dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
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
            bias: true,
            tie_weights: true,
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
        let cases: [(Change, &str); 5] = [
            (
                |c| c.n_head = 5,
                "n_embd (384) must be divisible by n_head (5)",
            ),
            (|c| c.n_layer = 0, "n_layer must be at least 1"),
            (|c| c.vocab_size = 0, "vocab_size must be at least 1"),
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
