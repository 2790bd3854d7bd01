//! The built-in presets, each a difference from the defaults: nanoGPT's `train.py`
//! ([`TrainConfig::default`]) and its model ([`GptConfig::default`], GPT-2 124M).

use quill_data::TokenizerSpec;
use quill_model::{Activation, BigramConfig, GptConfig, ModelConfig, ModelOverrides, Position};

use super::{OptimizerKind, RunConfig, Schedule, TrainConfig};
use crate::TrainError;

/// The preset a run without `--preset` (or a checkpoint) starts from.
pub const DEFAULT_PRESET: &str = "cpu";

/// A built-in starting point for a run: its settings and its tokenizer.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The name `--preset` takes.
    pub name: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// The tokenizer the preset trains with (on tiny Shakespeare by default).
    pub tokenizer: TokenizerSpec,
    settings: fn() -> RunConfig,
}

impl Preset {
    /// The preset's settings.
    pub fn config(&self) -> RunConfig {
        (self.settings)()
    }

    /// The preset called `name`, or an error listing the presets.
    pub fn named(name: &str) -> Result<&'static Preset, TrainError> {
        PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
            let names: Vec<_> = PRESETS.iter().map(|p| p.name).collect();
            TrainError::Config(format!(
                "unknown preset {name:?}; the presets are {}",
                names.join(", ")
            ))
        })
    }
}

/// The built-in presets, in the order `--help` lists them.
pub const PRESETS: [Preset; 7] = [
    Preset {
        name: "bigram",
        description: "the lecture's bigram model (32-wide embeddings, 8 characters of context)",
        tokenizer: TokenizerSpec::Char,
        settings: bigram,
    },
    Preset {
        name: "lecture",
        description: "the lecture's final GPT: 6 layers × 384, PyTorch's AdamW defaults, constant lr",
        tokenizer: TokenizerSpec::Char,
        settings: lecture,
    },
    Preset {
        name: "shakespeare-char",
        description: "nanoGPT's config/train_shakespeare_char.py: 6 layers × 384, 256 characters",
        tokenizer: TokenizerSpec::Char,
        settings: shakespeare_char,
    },
    Preset {
        name: "cpu",
        description: "a 0.8 M-parameter GPT that trains on a laptop CPU in minutes (the default)",
        tokenizer: TokenizerSpec::Char,
        settings: cpu,
    },
    Preset {
        name: "shakespeare-gpt2",
        description: "the cpu model on GPT-2 tokens of tiny Shakespeare (nanoGPT's data/shakespeare)",
        tokenizer: TokenizerSpec::Gpt2,
        settings: shakespeare_gpt2,
    },
    Preset {
        name: "cpu-fast",
        description: "the fast recipe (Muon, rotary, ReLU², wsd) on a 3-layer cpu model",
        tokenizer: TokenizerSpec::Char,
        settings: cpu_fast,
    },
    Preset {
        name: "shakespeare-char-fast",
        description: "the fast recipe on the shakespeare-char model",
        tokenizer: TokenizerSpec::Char,
        settings: shakespeare_char_fast,
    },
];

/// A GPT of `n_layer` blocks of width `n_embd` in `n_head` heads, over `block_size`
/// tokens, without biases (nanoGPT's `train.py` sets `bias = False`).
fn gpt(n_layer: usize, n_head: usize, n_embd: usize, block_size: usize) -> GptConfig {
    GptConfig {
        n_layer,
        n_head,
        n_embd,
        block_size,
        bias: false,
        ..Default::default()
    }
}

/// nanoGPT's `config/train_shakespeare_char.py`, line for line.
fn shakespeare_char() -> RunConfig {
    RunConfig {
        model: ModelConfig::Gpt(GptConfig {
            dropout: 0.2,
            ..gpt(6, 6, 384, 256)
        }),
        train: TrainConfig {
            eval_interval: 250,
            batch_size: 64,
            grad_accum: 1,
            lr: 1e-3,
            max_iters: 5000,
            min_lr: 1e-4,
            beta2: 0.99,
            warmup_iters: 100,
            ..Default::default()
        },
    }
}

/// The lecture's PyTorch defaults: AdamW(lr) with β2 0.999, weight decay 0.01, no
/// clipping, a constant learning rate; an untied head and biases.
fn lecture() -> RunConfig {
    let base = shakespeare_char();
    RunConfig {
        model: with(
            base.model,
            ModelOverrides {
                tie_weights: Some(false),
                bias: Some(true),
                ..Default::default()
            },
        ),
        train: TrainConfig {
            eval_interval: 500,
            lr: 3e-4,
            min_lr: 3e-4,
            schedule: Schedule::Constant,
            warmup_iters: 0,
            weight_decay: 0.01,
            beta2: 0.999,
            grad_clip: 0.0,
            ..base.train
        },
    }
}

/// The lecture's bigram model, trained as the lecture's GPT is.
fn bigram() -> RunConfig {
    RunConfig {
        model: ModelConfig::Bigram(BigramConfig {
            vocab_size: 65,
            block_size: 8,
            n_embd: 32,
        }),
        train: TrainConfig {
            batch_size: 32,
            max_iters: 10_000,
            lr: 1e-3,
            min_lr: 1e-3,
            ..lecture().train
        },
    }
}

/// shakespeare-char's training on a 4 × 128 model over 64 characters.
fn cpu() -> RunConfig {
    RunConfig {
        model: ModelConfig::Gpt(gpt(4, 4, 128, 64)),
        train: TrainConfig {
            batch_size: 12,
            max_iters: 2000,
            eval_iters: 20,
            ..shakespeare_char().train
        },
    }
}

/// The cpu model on GPT-2 tokens of tiny Shakespeare (nanoGPT's data/shakespeare):
/// 302k training tokens overfit within a few hundred steps of this model, hence dropout
/// and a short run.
fn shakespeare_gpt2() -> RunConfig {
    let base = cpu();
    RunConfig {
        model: with(
            base.model,
            ModelOverrides {
                dropout: Some(0.1),
                ..Default::default()
            },
        ),
        train: TrainConfig {
            max_iters: 500,
            eval_interval: 100,
            warmup_iters: 50,
            sample_tokens: 100,
            ..base.train
        },
    }
}

/// One layer fewer than cpu: it reached val 1.95 in the same steps, each 25% cheaper
/// (BENCHMARKS.md).
fn cpu_fast() -> RunConfig {
    let mut config = fast_recipe(cpu(), 450, 30);
    config.model = with(
        config.model,
        ModelOverrides {
            n_layer: Some(3),
            ..Default::default()
        },
    );
    config.train.eval_interval = 100;
    config
}

/// The fast recipe at the shakespeare-char model's size; its step count is cpu-fast's
/// scaled, not measured (BENCHMARKS.md).
fn shakespeare_char_fast() -> RunConfig {
    fast_recipe(shakespeare_char(), 2500, 100)
}

/// The fast recipe on `base`'s model: the modded-nanogpt choices that shortened the
/// time to val ≤ 1.95 on the cpu model, each alone over 3 seeds (BENCHMARKS.md): Muon,
/// rotary positions, ReLU², and a warmup–stable–decay schedule of `max_iters` steps
/// with a short warmup and the last 40% decaying. (RMSNorm and zero-initialised
/// projections did not win there and stay off.)
fn fast_recipe(base: RunConfig, max_iters: usize, warmup_iters: usize) -> RunConfig {
    RunConfig {
        model: with(
            base.model,
            ModelOverrides {
                position: Some(Position::Rotary),
                activation: Some(Activation::Relu2),
                ..Default::default()
            },
        ),
        train: TrainConfig {
            optimizer: OptimizerKind::Muon,
            schedule: Schedule::Wsd,
            max_iters,
            warmup_iters,
            cooldown_iters: max_iters * 2 / 5,
            ..base.train
        },
    }
}

/// `model` with `changes` applied.
fn with(mut model: ModelConfig, changes: ModelOverrides) -> ModelConfig {
    model.apply(&changes);
    model
}
