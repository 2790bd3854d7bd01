//! # quill-model
//!
//! Character-level language models, generic over Burn backends, read top-down:
//!
//! - [`config`]: [`GptConfig`], [`BigramConfig`] and the [`ModelConfig`] that picks one.
//! - [`bigram`]: the seed's [`Bigram`] model (token + position embedding → LM head).
//! - [`gpt`]: nanoGPT's [`Gpt`]: causal self-attention → MLP → block → model, and the
//!   [`KvCache`] generation uses.
//! - [`model`]: [`LanguageModel`], either of the two behind one type, with its loss.
//! - [`sampling`]: temperature, top-k and top-p sampling from logits, and [`generate`]
//!   (with or without the KV cache, same tokens either way).
//! - [`kernels`]: fused Linear, GELU, LayerNorm and causal attention, hand-written for
//!   the Flex CPU backend, Burn's generic operations everywhere else.
//! - [`params`]: parameters by their PyTorch (nanoGPT) names, for checkpoints.
//!
//! ```
//! use burn_ndarray::NdArray;
//! use quill_model::{GptConfig, ModelConfig, SamplingOptions, generate};
//!
//! let config = ModelConfig::Gpt(GptConfig {
//!     vocab_size: 10, block_size: 8, n_layer: 1, n_head: 2, n_embd: 8,
//!     dropout: 0.0, bias: true, tie_weights: true,
//! });
//! let model = config.init::<NdArray>(0, &Default::default()).unwrap();
//! let out = generate(&model, &[vec![1, 2, 3]], 5, &SamplingOptions::greedy(), |_| true).unwrap();
//! assert_eq!(out[0].len(), 3 + 5);
//! ```

pub mod bigram;
pub mod config;
pub mod gpt;
mod init;
pub mod kernels;
pub mod model;
pub mod params;
pub mod sampling;

pub use bigram::Bigram;
pub use config::{BigramConfig, GptConfig, ModelConfig, ModelError};
pub use gpt::{Gpt, KvCache};
pub use model::{LanguageModel, cross_entropy};
pub use sampling::{SamplingOptions, generate, sample_token, window_start};
