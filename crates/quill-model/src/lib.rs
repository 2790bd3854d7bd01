//! # quill-model
//!
//! Character-level language models, generic over Burn backends, read top-down:
//!
//! - [`config`]: [`GptConfig`], [`BigramConfig`] and the [`ModelConfig`] that picks one.
//! - [`ops`]: linear, GELU, LayerNorm and causal attention, each choosing its fast path
//!   (the fused CPU kernels of `quill-kernels`, feature `fused-cpu`) inside itself, with
//!   a plain reference version beside it.
//! - [`layers`]: the [`Linear`] and [`Normalization`] modules over those operations.
//! - [`gpt`]: nanoGPT's [`Gpt`]: causal self-attention → MLP → block → model.
//! - [`rotary`]: rotary position embeddings of queries and keys.
//! - [`kv_cache`]: the [`KvCache`] generation uses.
//! - [`bigram`]: the [`Bigram`] model of Karpathy's "Let's build GPT" lecture.
//! - [`model`]: [`LanguageModel`], either of the two behind one type, with its loss.
//! - [`sampling`]: penalties, temperature, top-k, top-p and min-p sampling from logits.
//! - [`batching`]: the [`Batcher`] of continuous batching (generations that join and
//!   leave between steps, decoded together), and [`generate`] (with or without the KV
//!   cache, same tokens either way).
//! - [`inference`]: text in, text out over them: prompts, stop strings ([`StopText`])
//!   and streaming ([`sample_texts`]).
//! - [`params`]: parameters by their PyTorch (nanoGPT) names and decay groups, as the
//!   model declares them, for checkpoints and the optimizer.
//! - [`error`]: the one error type, [`ModelError`].
//!
//! ```
//! use burn_ndarray::NdArray;
//! use quill_model::{GptConfig, ModelConfig, SamplingOptions, generate};
//!
//! // The settings that differ from nanoGPT's defaults; the rest are `GptConfig::default()`'s.
//! let config = ModelConfig::Gpt(GptConfig {
//!     vocab_size: 10, block_size: 8, n_layer: 1, n_head: 2, n_embd: 8,
//!     ..Default::default()
//! });
//! let model = config.init::<NdArray>(0, &Default::default()).unwrap();
//! let out = generate(&model, &[vec![1, 2, 3]], 5, &SamplingOptions::greedy(), |_| true).unwrap();
//! assert_eq!(out[0].len(), 3 + 5);
//! ```

#![forbid(unsafe_code)]

pub mod batching;
pub mod bigram;
pub mod config;
pub mod error;
pub mod gpt;
pub mod inference;
mod init;
pub mod kv_cache;
pub mod layers;
pub mod model;
pub mod ops;
pub mod params;
pub mod rotary;
pub mod sampling;
pub mod weights;

pub use batching::{Batcher, GroupId, generate};
pub use bigram::Bigram;
pub use config::{
    Activation, BigramConfig, GptConfig, ModelConfig, ModelKind, ModelOverrides, Norm, Position,
};
pub use error::ModelError;
pub use gpt::Gpt;
pub use inference::{SampleRequest, SampleTimings, Samples, StopText, sample, sample_texts};
pub use kv_cache::KvCache;
pub use layers::{Linear, Normalization};
pub use model::{LanguageModel, cross_entropy};
pub use sampling::{
    Penalties, SamplingOptions, TokenHistory, sample_next, sample_token, window_start,
};
pub use weights::WeightFormat;
