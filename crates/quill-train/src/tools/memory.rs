//! The memory a run needs, estimated from its settings before anything is allocated.
//!
//! A setting such as `block_size = 100000` would otherwise ask the allocator for tens of
//! gigabytes at the first step, and a failed allocation aborts the process. The estimate
//! counts what one step keeps alive at its peak:
//!
//! - **parameters**: the weights, their gradients, a gradient-accumulation buffer, and
//!   AdamW's two moments (always `f32`);
//! - **activations**: per block, the `[B, T, C]`-sized tensors the backward pass reads
//!   (LayerNorm inputs and outputs, q/k/v, attention output, the 4·C-wide MLP), the
//!   embeddings and the final LayerNorm;
//! - **attention scores**: per block, the `[B, n_head, T, T]` scores and probabilities
//!   and their gradient — the term that grows with the square of `block_size`;
//! - **logits**: `[B, T, vocab]` logits, their log-softmax and its gradient.
//!
//! It is an estimate of the tensors of the generic (Burn tensor-op) path, the largest of
//! quill's paths; the fused CPU kernels need less. It leaves out the process itself (the
//! binary, the corpus, thread stacks, memory the allocator keeps for reuse), so it is
//! below a measured peak (BENCHMARKS.md compares the two). Its job is to refuse runs
//! that cannot fit, which it does by orders of magnitude, before anything is allocated.

use std::fmt;

use quill_model::ModelConfig;

use crate::{RunConfig, TrainError};

/// One part of an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// What it holds, e.g. `attention scores`.
    pub name: &'static str,
    /// Bytes (`f64`: absurd settings must give a huge figure, not an overflow).
    pub bytes: f64,
    /// The settings that shrink it, e.g. `block_size or batch_size`.
    pub lower: &'static str,
}

/// The memory one training step (or one sampling batch) needs, by part.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// The parts, each with the settings that shrink it.
    pub components: Vec<Component>,
}

/// Bytes of an f32: quill keeps AdamW moments, 16-bit gradient sums and master copies in
/// f32 whatever the dtype.
const F32_BYTES: f64 = 4.0;

impl MemoryEstimate {
    /// One training step of `config` with a vocabulary of `vocab_size`, parameters and
    /// activations stored in `dtype_bytes`-byte floats.
    pub fn training(config: &RunConfig, vocab_size: usize, dtype_bytes: usize) -> Self {
        let model = config.model_for(vocab_size);
        let f = dtype_bytes as f64;
        let p = model.num_params();
        let (b, t, c, v) = (
            config.train.batch_size as f64,
            config.block_size() as f64,
            match &model {
                ModelConfig::Gpt(g) => g.n_embd,
                ModelConfig::Bigram(b) => b.n_embd,
            } as f64,
            vocab_size as f64,
        );
        let btc = b * t * c;
        let (per_layer, scores_per_layer, layers) = match model {
            ModelConfig::Gpt(g) => {
                // ln_1 in/out 2, q/k/v 3 (+3 as heads), attention out 2, c_proj 1,
                // residual 1, ln_2 out 1, c_fc 4, GELU 4: 21 × [B, T, C].
                let scores = b * g.n_head as f64 * t * t;
                (21.0 * btc, 3.0 * scores, g.n_layer as f64)
            }
            ModelConfig::Bigram(_) => (0.0, 0.0, 0.0),
        };
        // 16-bit parameters: the gradients are also summed in f32, and the optimizer
        // keeps f32 master copies unless told not to (or emulates bf16 beside f32 ones).
        let train = &config.train;
        let sixteen_bits = dtype_bytes < 4;
        let sums = if sixteen_bits { p * F32_BYTES } else { 0.0 };
        let masters = match (sixteen_bits || train.emulate_bf16) && train.master_weights {
            true => p * F32_BYTES,
            false => 0.0,
        };
        MemoryEstimate {
            components: vec![
                Component {
                    name: match masters > 0.0 {
                        true => "parameters, gradients, AdamW moments and f32 master copies",
                        false => "parameters, gradients and AdamW moments",
                    },
                    bytes: 3.0 * p * f + 2.0 * p * F32_BYTES + sums + masters,
                    lower: "n_layer or n_embd",
                },
                Component {
                    name: "activations",
                    // the blocks, plus token/position embeddings, their sum, ln_f in/out
                    bytes: (layers * per_layer + 5.0 * btc) * f,
                    lower: "batch_size, block_size or n_layer",
                },
                Component {
                    name: "attention scores",
                    bytes: layers * scores_per_layer * f,
                    lower: "block_size, batch_size or n_layer",
                },
                Component {
                    name: "logits",
                    bytes: 3.0 * b * t * v * f,
                    lower: "batch_size or block_size",
                },
            ],
        }
    }

    /// Generating `num_samples` sequences at once from `model`: the weights, the key/value
    /// cache of a full context, and one forward pass over a full context (the prompt's,
    /// or a rebuild of the cache when the window moves).
    pub fn sampling(model: &ModelConfig, num_samples: usize, dtype_bytes: usize) -> Self {
        let f = dtype_bytes as f64;
        let (b, t, v) = (
            num_samples as f64,
            model.block_size() as f64,
            model.vocab_size() as f64,
        );
        let (cache, forward) = match model {
            ModelConfig::Gpt(g) => {
                let (c, layers) = (g.n_embd as f64, g.n_layer as f64);
                let scores = b * g.n_head as f64 * t * t;
                // keys and values of every layer; live tensors of one block's forward
                (2.0 * layers * b * t * c, 8.0 * b * t * c + 2.0 * scores)
            }
            ModelConfig::Bigram(c) => (0.0, 2.0 * b * t * c.n_embd as f64),
        };
        MemoryEstimate {
            components: vec![
                Component {
                    name: "parameters",
                    bytes: model.num_params() * f,
                    lower: "nothing (the checkpoint's size)",
                },
                Component {
                    name: "key/value cache and activations",
                    bytes: (cache + forward) * f,
                    lower: "--num-samples",
                },
                Component {
                    name: "logits",
                    bytes: 2.0 * b * t * v * f,
                    lower: "--num-samples",
                },
            ],
        }
    }

    /// All parts together, in bytes.
    pub fn total(&self) -> f64 {
        self.components.iter().map(|c| c.bytes).sum()
    }

    /// The largest part.
    pub fn largest(&self) -> &Component {
        self.components
            .iter()
            .max_by(|a, b| a.bytes.total_cmp(&b.bytes))
            .expect("an estimate has parts")
    }

    /// An error when the estimate exceeds `available` bytes, which `place` has (e.g.
    /// `the machine` or `cuda:0`): one line with the figures and the settings to lower.
    pub fn check(&self, available: f64, place: &str) -> Result<(), TrainError> {
        let total = self.total();
        if total <= available {
            return Ok(());
        }
        let largest = self.largest();
        Err(TrainError::OutOfMemory(format!(
            "this run needs about {} of memory ({} {}) but {place} has {}; lower {}",
            human_bytes(total),
            largest.name,
            human_bytes(largest.bytes),
            human_bytes(available),
            largest.lower
        )))
    }
}

impl fmt::Display for MemoryEstimate {
    /// `about 61.2 MiB (parameters, gradients and AdamW moments 15.6 MiB, activations …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .components
            .iter()
            .filter(|c| c.bytes > 0.0)
            .map(|c| format!("{} {}", c.name, human_bytes(c.bytes)))
            .collect();
        write!(
            f,
            "about {} ({})",
            human_bytes(self.total()),
            parts.join(", ")
        )
    }
}

/// `1536.0` → `1.5 KiB`; binary units up to EiB, then `inf`-safe scientific notation.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if !bytes.is_finite() {
        return "an unbounded amount".into();
    }
    let mut value = bytes;
    for unit in UNITS {
        if value < 1024.0 || unit == "EiB" {
            return if unit == "B" {
                format!("{value:.0} B")
            } else if value < 100_000.0 {
                format!("{value:.1} {unit}")
            } else {
                format!("{value:.3e} {unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the loop returns at the last unit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use quill_model::ModelOverrides;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
        assert_eq!(human_bytes(f64::INFINITY), "an unbounded amount");
    }

    /// The cpu preset with `model` changed.
    fn cpu_with(model: ModelOverrides) -> RunConfig {
        let mut config = RunConfig::preset("cpu").unwrap();
        config.model.apply(&model);
        config
    }

    fn layers(n: usize) -> ModelOverrides {
        ModelOverrides {
            n_layer: Some(n),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_preset_counts_each_part_exactly() {
        let config = RunConfig::preset("cpu").unwrap();
        let e = MemoryEstimate::training(&config, 65, 4);
        // 4 × (12·128² + 2·128) + (65 + 64)·128 + 128 = 787,456 + 16,512 + 128 =
        // 804,096 parameters; 3 copies at 4 bytes and 2 f32 moments: 20 bytes each.
        assert_eq!(e.components[0].bytes, 804_096.0 * 20.0);
        let btc = 12.0 * 64.0 * 128.0;
        assert_eq!(e.components[1].bytes, (4.0 * 21.0 + 5.0) * btc * 4.0);
        assert_eq!(
            e.components[2].bytes,
            4.0 * 3.0 * 12.0 * 4.0 * 64.0 * 64.0 * 4.0
        );
        assert_eq!(e.components[3].bytes, 3.0 * 12.0 * 64.0 * 65.0 * 4.0);
        let mib = e.total() / (1024.0 * 1024.0);
        assert_eq!(format!("{mib:.1}"), "58.3");
        e.check(1e9, "the machine").unwrap();
    }

    #[test]
    fn terabyte_settings_are_refused_naming_the_setting() {
        let refusal = |model: ModelOverrides| {
            MemoryEstimate::training(&cpu_with(model), 65, 4)
                .check(16.0 * 1024f64.powi(3), "the machine")
                .unwrap_err()
                .to_string()
        };
        let err = refusal(ModelOverrides {
            block_size: Some(100_000),
            ..Default::default()
        });
        assert!(
            err.starts_with("this run needs about 21.0 TiB of memory (attention scores 21.0 TiB)"),
            "{err}"
        );
        assert!(
            err.ends_with("but the machine has 16.0 GiB; lower block_size, batch_size or n_layer"),
            "{err}"
        );
        let err = refusal(ModelOverrides {
            n_embd: Some(100_000),
            n_head: Some(1),
            ..Default::default()
        });
        assert!(
            err.contains("(parameters, gradients and AdamW moments 8.7 TiB)"),
            "{err}"
        );
        assert!(err.ends_with("lower n_layer or n_embd"), "{err}");
        for (change, lower) in [
            (
                (|c| c.model.apply(&layers(100_000))) as fn(&mut RunConfig),
                "batch_size, block_size or n_layer",
            ),
            (
                |c| c.train.batch_size = 1_000_000,
                "batch_size, block_size or n_layer",
            ),
            (
                |c| {
                    c.model.apply(&ModelOverrides {
                        block_size: Some(usize::MAX),
                        ..Default::default()
                    })
                },
                "block_size, batch_size or n_layer",
            ),
        ] {
            let mut config = RunConfig::preset("cpu").unwrap();
            change(&mut config);
            let err = MemoryEstimate::training(&config, 65, 4)
                .check(1e12, "the machine")
                .unwrap_err()
                .to_string();
            assert!(err.ends_with(lower), "{err}");
        }
    }

    #[test]
    fn sampling_grows_with_the_number_of_samples() {
        let config = RunConfig::preset("cpu").unwrap().model_for(65);
        let one = MemoryEstimate::sampling(&config, 1, 4);
        one.check(1e9, "the machine").unwrap();
        let err = MemoryEstimate::sampling(&config, 10_000_000, 4)
            .check(1e9, "the machine")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("lower --num-samples"), "{err}");
    }

    #[test]
    fn sixteen_bit_training_counts_f32_gradient_sums_and_master_copies() {
        let mut config = RunConfig::preset("cpu").unwrap();
        let p = config.model_for(65).num_params();
        let first =
            |c: &RunConfig, bytes| MemoryEstimate::training(c, 65, bytes).components[0].bytes;
        // f32: three 4-byte copies (parameters, gradients, the update), two moments.
        assert_eq!(first(&config, 4), 20.0 * p);
        // bf16: the three copies at 2 bytes; the f32 gradient sums, moments and masters.
        assert_eq!(first(&config, 2), 6.0 * p + 16.0 * p);
        config.train.master_weights = false;
        assert_eq!(first(&config, 2), 6.0 * p + 12.0 * p);
        (config.train.master_weights, config.train.emulate_bf16) = (true, true);
        assert_eq!(first(&config, 4), 24.0 * p);
    }
}
