//! Weights stored narrower for inference: a model loaded to sample or evaluate can keep
//! its matrices in `bf16`, `f16` or 8-bit blocks, which halves or quarters the bytes a
//! decoded token reads, while activations and sums stay in `f32`.
//!
//! The conversion happens once, after the model is loaded ([`crate::LanguageModel::with_weights`]),
//! and is never written back: a converted model carries its [`WeightFormat`], and
//! checkpoints refuse it.
//!
//! ```
//! use burn_flex::Flex;
//! use quill_model::{GptConfig, ModelConfig, WeightFormat};
//!
//! let config = ModelConfig::Gpt(GptConfig { n_layer: 1, n_head: 2, n_embd: 32, block_size: 8, vocab_size: 40, ..GptConfig::default() });
//! let model = config.init::<Flex>(0, &Default::default()).unwrap();
//! let model = model.with_weights(WeightFormat::Bf16).unwrap();
//! assert_eq!(model.weight_format(), WeightFormat::Bf16);
//! ```

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::quantization::{QuantLevel, QuantScheme, QuantStore, QuantValue};
use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};
use serde::{Deserialize, Serialize};

/// How a model's weight matrices are stored for inference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// As trained: 4 bytes a weight.
    #[default]
    F32,
    /// bfloat16: 2 bytes, f32's range with 8 bits of precision.
    Bf16,
    /// IEEE half: 2 bytes, 11 bits of precision, range ±65,504.
    F16,
    /// 8-bit integers with one f32 scale per block of 32 weights along a row
    /// (max |w| / 127, rounded to nearest): 1.125 bytes a weight. llama.cpp's Q8_0 is
    /// the same with an f16 scale.
    Q8,
}

/// Weights per scale in [`WeightFormat::Q8`].
pub const Q8_BLOCK: usize = 32;

impl WeightFormat {
    /// The formats, narrowest last.
    pub const ALL: [WeightFormat; 4] = [Self::F32, Self::Bf16, Self::F16, Self::Q8];

    /// Its name on the command line and in reports: `f32`, `bf16`, `f16` or `q8`.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8 => "q8",
        }
    }

    /// The scheme of [`WeightFormat::Q8`]: symmetric 8-bit values, blocks of
    /// [`Q8_BLOCK`], stored as plain `i8`.
    pub fn q8_scheme() -> QuantScheme {
        QuantScheme::default()
            .with_level(QuantLevel::block([Q8_BLOCK as u8]))
            .with_value(QuantValue::Q8S)
            .with_store(QuantStore::Native)
    }

    /// `w` (an f32 matrix `[rows, cols]`) stored in this format. Q8 needs `cols` to be
    /// a multiple of [`Q8_BLOCK`] so that no block spans two rows; other matrices stay
    /// as they are.
    pub fn convert<B: Backend>(self, w: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            WeightFormat::F32 => w,
            WeightFormat::Bf16 => w.cast(FloatDType::BF16),
            WeightFormat::F16 => w.cast(FloatDType::F16),
            WeightFormat::Q8 if w.dims()[1].is_multiple_of(Q8_BLOCK) => {
                w.quantize_dynamic(&Self::q8_scheme())
            }
            WeightFormat::Q8 => w,
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `w` as values of `dtype` that Burn's generic operations can multiply with
/// activations of that dtype: a quantized matrix dequantized, a narrower one cast.
pub(crate) fn widened<B: Backend, const D: usize>(w: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    let w = match w.dtype() {
        DType::QFloat(_) => w.dequantize(),
        _ => w,
    };
    match (w.dtype() == dtype, dtype) {
        (false, DType::F32 | DType::Flex32) => w.cast(FloatDType::F32),
        (false, DType::F64) => w.cast(FloatDType::F64),
        (false, DType::F16) => w.cast(FloatDType::F16),
        (false, DType::BF16) => w.cast(FloatDType::BF16),
        _ => w,
    }
}

/// Bytes of every parameter of `model` as stored: what decoding one token reads (each
/// weight once; of the position table only a row, which this counts whole). An 8-bit
/// matrix counts its values and its f32 scales.
pub fn stored_bytes<B: Backend>(model: &crate::LanguageModel<B>) -> usize {
    struct Bytes(usize);
    impl<B: Backend> ModuleVisitor<B> for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let n = param.shape().num_elements();
            self.0 += match param.val().dtype() {
                DType::QFloat(scheme) => {
                    let block = match scheme.level {
                        QuantLevel::Block(size) => size.num_elements(),
                        QuantLevel::Tensor => n.max(1),
                    };
                    n + 4 * n.div_ceil(block)
                }
                dtype => n * dtype.size(),
            };
        }
    }
    let mut bytes = Bytes(0);
    model.visit(&mut bytes);
    bytes.0
}
