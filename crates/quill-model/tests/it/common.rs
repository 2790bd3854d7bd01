//! Helpers shared by the model tests.

#![allow(dead_code)] // each test file uses its own subset

use burn::tensor::backend::Backend;
use quill_data::Rng;
use quill_model::{Activation, GptConfig, LanguageModel, ModelConfig, Norm, Position};

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

/// `config` with nanoGPT's recipe (learned positions, LayerNorm, GELU), or with the
/// fast one's (`fast`: rotary positions, RMSNorm, ReLU²).
pub fn recipe(config: GptConfig, fast: bool) -> GptConfig {
    match fast {
        false => config,
        true => GptConfig {
            activation: Activation::Relu2,
            position: Position::Rotary,
            norm: Norm::Rms,
            ..config
        },
    }
}

/// The GPT of `config` (seed `seed`) with every weight multiplied by `factor`: weights
/// far from init make the logits, and so the tokens, depend on the context.
pub fn scaled_model<B: Backend>(config: GptConfig, seed: u64, factor: f32) -> LanguageModel<B> {
    use quill_model::params::{export, import};
    let model = ModelConfig::Gpt(config)
        .init::<B>(seed, &Default::default())
        .unwrap();
    let tensors = export(&model)
        .into_iter()
        .map(|mut t| {
            t.values.iter_mut().for_each(|v| *v *= factor);
            (t.name.clone(), t)
        })
        .collect();
    import(model, &tensors).unwrap()
}
