//! Helpers shared by the model tests.

use quill_data::Rng;
use quill_model::{Activation, GptConfig};

/// A 2-layer, 2-head, 16-wide GPT with block 8.
pub fn gpt_config(vocab_size: usize, tie_weights: bool) -> GptConfig {
    GptConfig {
        vocab_size,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout: 0.0,
        bias: true,
        tie_weights,
        activation: Activation::Gelu,
        pad_vocab: 1,
        position: quill_model::Position::Learned,
        norm: quill_model::Norm::Layer,
        zero_init_proj: false,
    }
}

/// `n` token ids below `vocab`.
pub fn random_ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab as u64) as u32).collect()
}
