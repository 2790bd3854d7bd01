//! The bigram model of Karpathy's "Let's build GPT" lecture, grown by a position embedding: every position
//! predicts the next token from its own token and position only.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{Int, Tensor, backend::Backend};
use quill_data::Rng;

use crate::BigramConfig;
use crate::gpt::position_embedding;
use crate::init::{INIT_STD, embedding};
use crate::layers::Linear;
use crate::params::ParamSpecs;

/// Token embedding + position embedding → linear LM head.
#[derive(Module, Debug)]
pub struct Bigram<B: Backend> {
    /// `[V, n_embd]`.
    pub token_embedding_table: Embedding<B>,
    /// `[block_size, n_embd]`.
    pub position_embedding_table: Embedding<B>,
    /// `n_embd → V`, with bias.
    pub lm_head: Linear<B>,
    block_size: usize,
}

impl<B: Backend> Bigram<B> {
    /// A freshly initialised model (`N(0, 0.02²)` weights, zero bias).
    pub fn new(config: &BigramConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (v, c) = (config.vocab_size, config.n_embd);
        Self {
            token_embedding_table: embedding(v, c, rng, device),
            position_embedding_table: embedding(config.block_size, c, rng, device),
            lm_head: Linear::new(c, v, true, INIT_STD, rng, device),
            block_size: config.block_size,
        }
    }

    /// Maximum context length.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// `[B, T]` token ids at positions `past..past + T` → `[B, T, V]` logits. (Each
    /// position sees only its own token, so generation needs no cache, only `past`.)
    pub fn forward(&self, idx: Tensor<B, 2, Int>, past: usize) -> Tensor<B, 3> {
        let pos = position_embedding(&self.position_embedding_table, &idx, past); // [1, T, C]
        let x = self.token_embedding_table.forward(idx) + pos; // [B, T, C]
        self.lm_head.forward(x) // [B, T, V]
    }

    /// Declares every parameter under the lecture notebook's names; only the head's
    /// weight decays.
    pub fn param_specs(&self, specs: &mut ParamSpecs) {
        specs.embedding(
            "token_embedding_table.weight",
            &self.token_embedding_table,
            false,
        );
        specs.embedding(
            "position_embedding_table.weight",
            &self.position_embedding_table,
            false,
        );
        specs.head("lm_head", &self.lm_head);
    }
}
