//! Weights stored narrower for inference (`LanguageModel::with_weights`): each format's
//! logits against f32's, the fused Flex path against Burn's generic one on the same
//! stored weights, the bytes each format stores, and the conversions that are refused.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use burn_flex::Flex;
use quill_model::weights::stored_bytes;
use quill_model::{
    BigramConfig, GptConfig, LanguageModel, ModelConfig, SamplingOptions, WeightFormat, generate,
};

/// A GPT whose every matrix has rows of a multiple of 32 values (so q8 blocks never
/// span two rows): C = 64, a tied `[96, 64]` table, and an untied variant.
fn config(tied: bool) -> ModelConfig {
    ModelConfig::Gpt(GptConfig {
        vocab_size: 96,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        dropout: 0.0,
        tie_weights: tied,
        pad_vocab: 1,
        ..GptConfig::default()
    })
}

fn logits<B: Backend>(model: &LanguageModel<B>) -> Vec<f32> {
    let ids: Vec<i64> = (0..2 * 12).map(|i| (i * 37 % 96) as i64).collect();
    let idx = Tensor::<B, 1, Int>::from_ints(ids.as_slice(), &Default::default()).reshape([2, 12]);
    let out = model.forward(idx).unwrap();
    out.into_data().convert::<f32>().to_vec().unwrap()
}

/// The largest `|got − want|` over the largest `|want|`.
fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = (got.iter().zip(want)).fold(0f32, |m, (g, w)| m.max((g - w).abs()));
    diff / scale
}

/// Each format's logits stay within its rounding of f32's (bf16 keeps 8 bits, f16 11,
/// q8 about 7 per block); f32 itself changes nothing.
#[test]
fn each_format_computes_close_to_f32() {
    for tied in [true, false] {
        let f32_flex = config(tied).init::<Flex>(3, &Default::default()).unwrap();
        let want = logits(&f32_flex);
        let same = config(tied).init::<Flex>(3, &Default::default()).unwrap();
        let same = same.with_weights(WeightFormat::F32).unwrap();
        assert_eq!(logits(&same), want, "f32 is the model as it was");
        for (format, bound) in [
            (WeightFormat::Bf16, 2e-2),
            (WeightFormat::F16, 3e-3),
            (WeightFormat::Q8, 2e-2),
        ] {
            let flex = config(tied).init::<Flex>(3, &Default::default()).unwrap();
            let flex = flex.with_weights(format).unwrap();
            assert_eq!(flex.weight_format(), format);
            let got = logits(&flex);
            let error = relative_error(&got, &want);
            assert!(error < bound, "{format} tied={tied}: {error}");
            assert!(error > 0.0, "{format} tied={tied} changed nothing");
        }
    }
}

/// The fused products and lookups on narrow weights equal Burn's generic operations on
/// the same weights widened (to f32 rounding: the sums run in another order).
#[test]
fn fused_and_generic_paths_agree_on_narrow_weights() {
    use quill_model::ops::{
        embedding, embedding_slow, linear, linear_slow, linear_transposed, linear_transposed_slow,
    };
    let device = Default::default();
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    };
    let matrix = |rows: usize, cols: usize, seed: usize| {
        Tensor::<Flex, 1>::from_floats(values(rows * cols, seed).as_slice(), &device)
            .reshape([rows, cols])
    };
    let bias = Tensor::<Flex, 1>::from_floats(values(96, 9).as_slice(), &device);
    for format in [WeightFormat::Bf16, WeightFormat::F16, WeightFormat::Q8] {
        let w = format.convert(matrix(64, 96, 1)); // [in, out]
        let table = format.convert(matrix(96, 64, 2)); // [out, in]
        // One row (decoding) and twelve (a prompt, an evaluation batch).
        for rows in [1, 12] {
            let x = matrix(rows, 64, 3 + rows);
            let read = |t: Tensor<Flex, 2>| t.into_data().to_vec::<f32>().unwrap();
            // The kernels serve these (else both sides below would be the generic path).
            #[cfg(feature = "fused-cpu")]
            {
                assert!(quill_kernels::linear(x.clone(), w.clone(), None).is_ok());
                assert!(quill_kernels::linear_transposed(x.clone(), table.clone(), None).is_ok());
            }
            let pairs = [
                (
                    linear(x.clone(), w.clone(), Some(bias.clone())),
                    linear_slow(x.clone(), w.clone(), Some(bias.clone())),
                ),
                (
                    linear_transposed(x.clone(), table.clone(), None),
                    linear_transposed_slow(x.clone(), table.clone(), None),
                ),
            ];
            for (fused, generic) in pairs {
                let error = relative_error(&read(fused), &read(generic));
                assert!(error < 1e-5, "{format}, {rows} rows: {error}");
            }
        }
        let ids = Tensor::<Flex, 1, Int>::from_ints([5, 0, 95, 5], &device).reshape([2, 2]);
        #[cfg(feature = "fused-cpu")]
        assert!(quill_kernels::embedding(table.clone(), &ids).is_ok());
        let dtype = burn::tensor::DType::F32;
        let fused = embedding(table.clone(), ids.clone(), dtype).into_data();
        let generic = embedding_slow(table.clone(), ids, dtype).into_data();
        assert_eq!(fused.dtype, dtype);
        assert_eq!(
            fused.to_vec::<f32>().unwrap(),
            generic.to_vec::<f32>().unwrap()
        );
    }
}

/// Greedy decoding with the KV cache and narrow weights produces the tokens that
/// recomputing the whole context with the same weights produces.
#[test]
fn cached_decoding_with_narrow_weights_equals_recompute() {
    for format in WeightFormat::ALL {
        let model = config(true).init::<Flex>(5, &Default::default()).unwrap();
        let model = model.with_weights(format).unwrap();
        let run = |kv_cache: bool| {
            let options = SamplingOptions {
                kv_cache,
                ..SamplingOptions::greedy()
            };
            generate(
                &model,
                &[vec![1, 2, 3], vec![4, 5, 6]],
                10,
                &options,
                |_| true,
            )
            .unwrap()
        };
        assert_eq!(run(true), run(false), "{format}");
    }
}

/// The bytes a decoded token reads: 4 per f32 parameter; the matrices 2 per weight in
/// bf16 and f16, and 1 plus a 4-byte scale per 32 in q8; norms, biases and the position
/// table stay f32.
#[test]
fn stored_bytes_count_each_format() {
    let model = config(true).init::<Flex>(0, &Default::default()).unwrap();
    let params = burn::module::Module::num_params(&model);
    assert_eq!(stored_bytes(&model), 4 * params);
    // The matrices: the [96, 64] table and, per layer, 64×192, 64×64, 64×256, 256×64.
    let matrices = 96 * 64 + 2 * (64 * 192 + 64 * 64 + 64 * 256 + 256 * 64);
    let rest = 4 * (params - matrices);
    let narrow = |format| {
        let model = config(true).init::<Flex>(0, &Default::default()).unwrap();
        stored_bytes(&model.with_weights(format).unwrap())
    };
    assert_eq!(narrow(WeightFormat::Bf16), rest + 2 * matrices);
    assert_eq!(narrow(WeightFormat::F16), rest + 2 * matrices);
    assert_eq!(
        narrow(WeightFormat::Q8),
        rest + matrices + 4 * matrices / 32
    );
}

/// A model converted once is not converted again, and the bigram model (its tables are
/// its whole computation) keeps f32.
#[test]
fn conversions_that_are_refused() {
    let model = config(true).init::<Flex>(0, &Default::default()).unwrap();
    let model = model.with_weights(WeightFormat::Q8).unwrap();
    let model = model.with_weights(WeightFormat::Q8).unwrap();
    let err = model.with_weights(WeightFormat::Bf16).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid model configuration: the weights were converted to q8 already"
    );
    let bigram = ModelConfig::Bigram(BigramConfig {
        vocab_size: 5,
        block_size: 4,
        n_embd: 3,
    });
    let bigram = bigram.init::<Flex>(0, &Default::default()).unwrap();
    let err = bigram.with_weights(WeightFormat::Bf16).unwrap_err();
    assert!(err.to_string().contains("GPT models"), "{err}");
}
