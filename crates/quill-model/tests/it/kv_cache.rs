//! The KV cache computes what full recompute computes: the same logits (to rounding)
//! and exactly the same tokens, greedy and sampled, inside and beyond the block. On
//! NdArray both paths are Burn's generic attention; on Flex the full recompute takes the
//! fused kernel and the cache the fused decoding kernel, with its own key/value buffer. Both recipes: nanoGPT's (learned
//! positions, LayerNorm, GELU) and the fast one (rotary positions, which the cache must
//! continue at the right offset, RMSNorm, ReLU²).

use crate::common;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use burn_flex::Flex;
use burn_ndarray::NdArray;
use quill_data::Rng;
use quill_data::batch::ids_to_tensor;
use quill_model::{KvCache, LanguageModel, ModelError, SamplingOptions, generate, window_start};

const BLOCK: usize = 8;
const VOCAB: usize = 13;

/// nanoGPT's recipe, or (`fast`) rotary positions, RMSNorm and ReLU².
fn model<B: Backend>(fast: bool) -> LanguageModel<B> {
    let config = common::recipe(common::gpt_config(VOCAB, true), fast);
    common::scaled_model(config, 21, 6.0)
}

fn ids<B: Backend>(tokens: &[u32], rows: usize) -> Tensor<B, 2, Int> {
    ids_to_tensor(tokens, [rows, tokens.len() / rows], &Default::default())
}

fn host<B: Backend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

#[test]
fn cached_logits_equal_full_forward() {
    for fast in [false, true] {
        cached_logits_equal_full_forward_on::<NdArray>(fast);
        cached_logits_equal_full_forward_on::<Flex>(fast);
    }
}

fn cached_logits_equal_full_forward_on<B: Backend>(fast: bool) {
    let model = model::<B>(fast);
    let tokens: Vec<u32> = (0..BLOCK as u32)
        .map(|i| (i * 5 + 1) % VOCAB as u32)
        .collect();
    let full = host(model.forward(ids(&tokens, 1)).unwrap()); // [1, 8, V]

    // A prefill of 3, a chunk of 2 (masked with the cache's offset), then one at a time.
    let mut cache = KvCache::new();
    let mut cached = Vec::new();
    for range in [0..3, 3..5, 5..6, 6..7, 7..8] {
        let logits = model
            .forward_cached(ids(&tokens[range], 1), Some(&mut cache))
            .unwrap();
        cached.extend(host(logits));
    }
    assert_eq!(cache.len(), BLOCK);
    assert_eq!(cached.len(), full.len());
    for (i, (a, b)) in cached.iter().zip(&full).enumerate() {
        assert!(
            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
            "logit {i}: cached {a} vs full {b}"
        );
    }
    // The cache is full: one more position is an error, not a panic.
    assert_eq!(
        model
            .forward_cached(ids(&[1], 1), Some(&mut cache))
            .unwrap_err(),
        ModelError::TooLong {
            len: BLOCK + 1,
            block_size: BLOCK
        }
    );
}

#[test]
fn the_window_grows_to_block_size_then_shifts_by_half() {
    let starts: Vec<usize> = (1..=20)
        .scan(0, |start, len| {
            *start = window_start(*start, len, BLOCK);
            Some(*start)
        })
        .collect();
    // Lengths 1..=8 fit; at 9 the window keeps the last 4 (start 5) and grows back to
    // 8 by length 13; at 14 it shifts again (start 10), at 19 again (start 15).
    let expected = [
        0, 0, 0, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5, 10, 10, 10, 10, 10, 15, 15,
    ];
    assert_eq!(starts, expected);
    assert!(starts.iter().zip(1..).all(|(s, len)| len - s <= BLOCK));
}

fn both(
    fast: bool,
    prompts: &[Vec<u32>],
    max_new: usize,
    options: SamplingOptions,
) -> Vec<Vec<u32>> {
    let a = both_on::<NdArray>(fast, prompts, max_new, options.clone());
    assert_eq!(
        a,
        both_on::<Flex>(fast, prompts, max_new, options),
        "NdArray and Flex differ"
    );
    a
}

fn both_on<B: Backend>(
    fast: bool,
    prompts: &[Vec<u32>],
    max_new: usize,
    options: SamplingOptions,
) -> Vec<Vec<u32>> {
    let model = model::<B>(fast);
    let cached = SamplingOptions {
        kv_cache: true,
        ..options.clone()
    };
    let uncached = SamplingOptions {
        kv_cache: false,
        ..options
    };
    let a = generate(&model, prompts, max_new, &cached, |_| true).unwrap();
    let b = generate(&model, prompts, max_new, &uncached, |_| true).unwrap();
    assert_eq!(a, b, "cached and recomputed generations differ");
    a
}

#[test]
fn cached_generation_equals_recompute() {
    cached_generation_equals_recompute_with(false);
}

#[test]
fn cached_generation_equals_recompute_with_rotary_positions() {
    cached_generation_equals_recompute_with(true);
}

fn cached_generation_equals_recompute_with(fast: bool) {
    let mut rng = Rng::new(5);
    let mut prompt =
        |len: usize| -> Vec<u32> { (0..len).map(|_| rng.below(VOCAB as u64) as u32).collect() };
    let short = vec![prompt(3)];
    let long = vec![prompt(BLOCK + 4)];
    let batch = vec![prompt(5), prompt(5), prompt(5)];
    let sampled = |seed| SamplingOptions {
        seed,
        ..Default::default()
    };
    let cases = [
        (
            "greedy, within the block",
            short.clone(),
            4,
            SamplingOptions::greedy(),
        ),
        (
            "greedy, beyond the block",
            short.clone(),
            5 * BLOCK,
            SamplingOptions::greedy(),
        ),
        (
            "greedy, long prompt",
            long.clone(),
            3 * BLOCK,
            SamplingOptions::greedy(),
        ),
        ("sampled, within the block", short.clone(), 4, sampled(1)),
        (
            "sampled, beyond the block",
            short.clone(),
            5 * BLOCK,
            sampled(2),
        ),
        ("sampled, long prompt", long, 3 * BLOCK, sampled(3)),
        (
            "top-k",
            short.clone(),
            3 * BLOCK,
            SamplingOptions {
                top_k: Some(3),
                ..sampled(4)
            },
        ),
        (
            "top-p",
            short.clone(),
            3 * BLOCK,
            SamplingOptions {
                top_p: Some(0.8),
                ..sampled(5)
            },
        ),
        ("batch", batch, 3 * BLOCK, sampled(6)),
    ];
    let mut outputs = Vec::new();
    for (name, prompts, max_new, options) in cases {
        let out = both(fast, &prompts, max_new, options);
        assert!(
            out.iter().all(|r| r.len() == prompts[0].len() + max_new),
            "{name}"
        );
        outputs.push(out);
    }
    // The cases are not degenerate: sampling differs from greedy, rows of a batch differ.
    assert_ne!(outputs[1], outputs[4]);
    assert_ne!(outputs[8][0], outputs[8][1]);
    let distinct: std::collections::BTreeSet<u32> = outputs[4][0].iter().copied().collect();
    assert!(distinct.len() > 4, "{distinct:?}");
}
