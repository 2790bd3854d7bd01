//! nanoGPT's GPT, top-down: causal self-attention → MLP → block → model.
//!
//! Shapes use `B` batch, `T` time (≤ block_size), `C` = n_embd, `V` vocab_size, `P`
//! positions already in a [`KvCache`].
//!
//! Every forward pass takes an optional cache: training passes none; generation passes
//! one, so each new token attends to the cached keys and values of the tokens before it
//! instead of recomputing them.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding};
use burn::tensor::{Int, Tensor, backend::Backend};
use quill_data::Rng;

use crate::init::{INIT_STD, embedding};
use crate::kv_cache::{KvCache, LayerKv};
use crate::layers::{Linear, Normalization};
use crate::ops::causal_attention;
use crate::params::ParamSpecs;
use crate::{Activation, GptConfig, ModelError, Position, WeightFormat};

/// Multi-head masked self-attention with one fused QKV projection.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// `C → 3C`: queries, keys and values of every head at once.
    pub c_attn: Linear<B>,
    /// `C → C`: the output projection (a residual projection).
    pub c_proj: Linear<B>,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_head: usize,
    #[module(skip)]
    position: Position,
}

impl<B: Backend> CausalSelfAttention<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (c, bias) = (config.n_embd, config.bias);
        Self {
            c_attn: Linear::new(c, 3 * c, bias, INIT_STD, rng, device),
            c_proj: Linear::new(c, c, bias, residual_std(config), rng, device),
            attn_dropout: DropoutConfig::new(config.dropout).init(),
            resid_dropout: DropoutConfig::new(config.dropout).init(),
            n_head: config.n_head,
            position: config.position,
        }
    }

    /// `[B, T, C] → [B, T, C]`; position `t` attends to positions `≤ t` (and to the `P`
    /// positions in `cache`, to which it adds its own).
    pub fn forward(&self, x: Tensor<B, 3>, cache: Option<&mut LayerKv<B>>) -> Tensor<B, 3> {
        let qkv = self.c_attn.forward(x); // [B, T, 3C]
        let qkv = match self.position {
            Position::Learned => qkv,
            Position::Rotary => {
                let past = cache.as_ref().map_or(0, |layer| layer.len());
                crate::ops::rotary(qkv, self.n_head, past) // [B, T, 3C]
            }
        };
        let y = causal_attention(qkv, self.n_head, &self.attn_dropout, cache); // [B, T, C]
        self.resid_dropout.forward(self.c_proj.forward(y))
    }

    /// [`CausalSelfAttention::forward`] of one new position for several groups of
    /// sequences at once: `x` `[N, 1, C]` holds the groups' rows one after another,
    /// `groups` each group's row count and cache (whose positions may differ from one
    /// group to the next). The projections run on all `N` rows together; attention
    /// reads each group's own cache ([`crate::ops::grouped_attention`]).
    pub fn forward_groups(
        &self,
        x: Tensor<B, 3>,
        groups: &mut [(usize, &mut LayerKv<B>)],
    ) -> Tensor<B, 3> {
        let qkv = self.c_attn.forward(x); // [N, 1, 3C]
        let qkv = match self.position {
            Position::Learned => qkv,
            Position::Rotary => {
                let mut offset = 0;
                let parts = groups.iter().map(|(rows, layer)| {
                    let part = qkv.clone().narrow(0, offset, *rows); // [rows, 1, 3C]
                    offset += *rows;
                    crate::ops::rotary(part, self.n_head, layer.len())
                });
                Tensor::cat(parts.collect(), 0)
            }
        };
        let y = crate::ops::grouped_attention(qkv, self.n_head, &self.attn_dropout, groups); // [N, 1, C]
        self.resid_dropout.forward(self.c_proj.forward(y))
    }
}

/// Residual projections are scaled down by `√(2·n_layer)` (GPT-2), or start at zero
/// (`zero_init_proj`; the generator still draws them, so the other weights stay the
/// same as without the option).
fn residual_std(config: &GptConfig) -> f64 {
    match config.zero_init_proj {
        true => 0.0,
        false => INIT_STD / (2.0 * config.n_layer as f64).sqrt(),
    }
}

/// The position-wise feed-forward network `C → 4C → GELU (or ReLU²) → C`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `C → 4C`.
    pub c_fc: Linear<B>,
    /// `4C → C` (a residual projection).
    pub c_proj: Linear<B>,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> Mlp<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (c, bias) = (config.n_embd, config.bias);
        Self {
            c_fc: Linear::new(c, 4 * c, bias, INIT_STD, rng, device),
            c_proj: Linear::new(4 * c, c, bias, residual_std(config), rng, device),
            dropout: DropoutConfig::new(config.dropout).init(),
            activation: config.activation,
        }
    }

    /// `[B, T, C] → [B, T, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.c_fc.forward(x); // [B, T, 4C]
        let h = match self.activation {
            Activation::Gelu => crate::ops::gelu(h),
            Activation::GeluTanh => crate::ops::gelu_tanh(h),
            Activation::Relu2 => crate::ops::relu2(h),
        };
        self.dropout.forward(self.c_proj.forward(h))
    }
}

/// A pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: Normalization<B>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<B>,
    /// LayerNorm before the MLP.
    pub ln_2: Normalization<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let norm = || Normalization::new(config.norm, config.n_embd, config.bias, device);
        Self {
            ln_1: norm(),
            attn: CausalSelfAttention::new(config, rng, device),
            ln_2: norm(),
            mlp: Mlp::new(config, rng, device),
        }
    }

    /// `[B, T, C] → [B, T, C]`, with this block's cache when generating.
    pub fn forward(&self, x: Tensor<B, 3>, cache: Option<&mut LayerKv<B>>) -> Tensor<B, 3> {
        // The branch's fresh output on the left: Flex then adds in place.
        let x = self.attn.forward(self.ln_1.forward(x.clone()), cache) + x;
        self.mlp.forward(self.ln_2.forward(x.clone())) + x
    }

    /// [`Block::forward`] of one new position for groups of sequences (see
    /// [`CausalSelfAttention::forward_groups`]).
    pub fn forward_groups(
        &self,
        x: Tensor<B, 3>,
        groups: &mut [(usize, &mut LayerKv<B>)],
    ) -> Tensor<B, 3> {
        let x = self
            .attn
            .forward_groups(self.ln_1.forward(x.clone()), groups)
            + x;
        self.mlp.forward(self.ln_2.forward(x.clone())) + x
    }
}

/// The GPT language model.
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    /// Token embedding `[V', C]` (`V'` = V rounded up to a multiple of `pad_vocab`).
    pub wte: Embedding<B>,
    /// Position embedding `[block_size, C]`; `None` with rotary positions.
    pub wpe: Option<Embedding<B>>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: Normalization<B>,
    /// LM head `C → V'` (no bias); `None` when tied to `wte`.
    pub lm_head: Option<Linear<B>>,
    drop: Dropout,
    block_size: usize,
    vocab_size: usize,
    /// How the matrices are stored: f32 as trained, or narrower for inference.
    #[module(skip)]
    weights: WeightFormat,
}

impl<B: Backend> Gpt<B> {
    /// A freshly initialised model (GPT-2 init drawn from `rng`).
    pub fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (v, c) = (config.padded_vocab_size(), config.n_embd);
        let wte = embedding(v, c, rng, device);
        // Drawn either way, so the other weights do not depend on the position encoding.
        let wpe = embedding(config.block_size, c, rng, device);
        Self {
            wte,
            wpe: (config.position == Position::Learned).then_some(wpe),
            h: (0..config.n_layer)
                .map(|_| Block::new(config, rng, device))
                .collect(),
            ln_f: Normalization::new(config.norm, c, config.bias, device),
            lm_head: (!config.tie_weights).then(|| Linear::new(c, v, false, INIT_STD, rng, device)),
            drop: DropoutConfig::new(config.dropout).init(),
            block_size: config.block_size,
            vocab_size: config.vocab_size,
            weights: WeightFormat::F32,
        }
    }

    /// How the weight matrices are stored (see [`crate::weights`]).
    pub fn weight_format(&self) -> WeightFormat {
        self.weights
    }

    /// The model with its matrices — every Linear weight, the LM head and the token
    /// table — stored in `format` for inference; embeddings of positions, norms and
    /// biases stay as they are. Once only: a model converted before is returned as it
    /// is unless `format` is the one it has.
    pub fn with_weights(mut self, format: WeightFormat) -> Result<Self, ModelError> {
        if self.weights == format {
            return Ok(self);
        }
        if self.weights != WeightFormat::F32 {
            return Err(ModelError::Config(format!(
                "the weights were converted to {} already",
                self.weights
            )));
        }
        let convert = |p: &mut Param<Tensor<B, 2>>| *p = p.clone().map(|w| format.convert(w));
        convert(&mut self.wte.weight);
        for block in &mut self.h {
            convert(&mut block.attn.c_attn.weight);
            convert(&mut block.attn.c_proj.weight);
            convert(&mut block.mlp.c_fc.weight);
            convert(&mut block.mlp.c_proj.weight);
        }
        if let Some(head) = &mut self.lm_head {
            convert(&mut head.weight);
        }
        self.weights = format;
        Ok(self)
    }

    /// Maximum context length.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The dropout probability of embeddings, attention weights and residual branches.
    pub fn dropout(&self) -> f64 {
        self.drop.prob
    }

    /// `[B, T]` token ids → `[B, T, V]` logits. Without a cache the tokens are
    /// positions `0..T`; with one, they follow the `P` cached positions and are added to
    /// it. `P + T` must not exceed block_size (the caller checks; see
    /// [`crate::LanguageModel::forward`]).
    pub fn forward(&self, idx: Tensor<B, 2, Int>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [b, t] = idx.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        // Activations have the norms' dtype (f32 when the matrices are narrower).
        let dtype = self.ln_f.weight.val().dtype();
        let tokens = crate::ops::embedding(self.wte.weight.val(), idx.clone(), dtype); // [B, T, C]
        let x = match &self.wpe {
            // Repeated, not broadcast: Flex adds two [B, T, C] tensors in one vectorised
            // pass, a broadcast one element at a time (2% of a cpu-preset step).
            Some(wpe) => tokens + position_embedding(wpe, &idx, past).repeat_dim(0, b), // + [B, T, C]
            None => tokens, // rotary: positions enter in attention
        };
        let mut x = self.drop.forward(x);
        match cache {
            None => {
                for block in &self.h {
                    x = block.forward(x, None);
                }
            }
            Some(cache) => {
                for (block, layer) in self.h.iter().zip(cache.extend(self.h.len(), t)) {
                    x = block.forward(x, Some(layer));
                }
            }
        }
        self.head(self.ln_f.forward(x)) // [B, T, V]
    }

    /// One decoding step for groups of sequences at different positions: `idx` `[N, 1]`
    /// holds the newest token of every row, the groups' rows one after another;
    /// `groups` gives each group's row count and cache, to which the step's keys and
    /// values are added. Returns `[N, 1, V]`, each row what [`Gpt::forward`] gives for
    /// that group alone (continuous batching: requests join and leave between steps).
    /// Every cache must have room for one more position (the caller checks; see
    /// [`crate::LanguageModel::forward_groups`]).
    pub fn forward_groups(
        &self,
        idx: Tensor<B, 2, Int>,
        groups: &mut [(usize, &mut KvCache<B>)],
    ) -> Tensor<B, 3> {
        let device = idx.device();
        let dtype = self.ln_f.weight.val().dtype();
        let tokens = crate::ops::embedding(self.wte.weight.val(), idx.clone(), dtype); // [N, 1, C]
        let x = match &self.wpe {
            Some(wpe) => {
                let positions: Vec<u32> = groups
                    .iter()
                    .flat_map(|(rows, cache)| std::iter::repeat_n(cache.len() as u32, *rows))
                    .collect();
                let n = positions.len();
                tokens
                    + wpe.forward(quill_data::batch::ids_to_tensor(
                        &positions,
                        [n, 1],
                        &device,
                    )) // + [N, 1, C]
            }
            None => tokens,
        };
        let mut x = self.drop.forward(x);
        let n_layer = self.h.len();
        let mut layers: Vec<(usize, &mut [LayerKv<B>])> = groups
            .iter_mut()
            .map(|(rows, cache)| (*rows, cache.extend(n_layer, 1)))
            .collect();
        for (i, block) in self.h.iter().enumerate() {
            let mut group_layers: Vec<(usize, &mut LayerKv<B>)> = layers
                .iter_mut()
                .map(|(rows, layer)| (*rows, &mut layer[i]))
                .collect();
            x = block.forward_groups(x, &mut group_layers);
        }
        self.head(self.ln_f.forward(x)) // [N, 1, V]
    }

    /// `[B, T, C] → [B, T, V]`, through `lm_head` or the tied `wteᵀ`; the logits of
    /// padding rows are dropped.
    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let logits = match &self.lm_head {
            Some(lm_head) => lm_head.forward(x),
            None => {
                let [b, t, c] = x.dims();
                let table = self.wte.weight.val(); // [V', C]: the head is its transpose
                let logits = crate::ops::linear_transposed(x.reshape([b * t, c]), table, None); // [B·T, V']
                let padded = logits.dims()[1];
                logits.reshape([b, t, padded])
            }
        }; // [B, T, V']
        match logits.dims()[2] > self.vocab_size {
            true => logits.narrow(2, 0, self.vocab_size), // [B, T, V]
            false => logits,
        }
    }

    /// Declares every parameter under its nanoGPT name, with its decay group: Linear
    /// weights decay; biases, LayerNorms and embedding tables do not, except a tied
    /// `wte`, which is also the LM head's weight.
    pub fn param_specs(&self, specs: &mut ParamSpecs) {
        let tied = self.lm_head.is_none();
        specs.embedding("transformer.wte.weight", &self.wte, tied);
        if let Some(wpe) = &self.wpe {
            specs.embedding("transformer.wpe.weight", wpe, false);
        }
        for (i, block) in self.h.iter().enumerate() {
            let name = |part: &str| format!("transformer.h.{i}.{part}");
            specs.norm(&name("ln_1"), &block.ln_1);
            specs.linear(&name("attn.c_attn"), &block.attn.c_attn);
            specs.linear(&name("attn.c_proj"), &block.attn.c_proj);
            specs.norm(&name("ln_2"), &block.ln_2);
            specs.linear(&name("mlp.c_fc"), &block.mlp.c_fc);
            specs.linear(&name("mlp.c_proj"), &block.mlp.c_proj);
        }
        specs.norm("transformer.ln_f", &self.ln_f);
        if let Some(lm_head) = &self.lm_head {
            specs.head("lm_head", lm_head);
        }
    }
}

/// Position embeddings `[1, T, C]` of positions `past..past + T`, for the tokens `idx`
/// `[B, T]`.
pub fn position_embedding<B: Backend>(
    wpe: &Embedding<B>,
    idx: &Tensor<B, 2, Int>,
    past: usize,
) -> Tensor<B, 3> {
    let [_, t] = idx.dims();
    let range = past as i64..(past + t) as i64;
    let pos = Tensor::<B, 1, Int>::arange(range, &idx.device()).reshape([1, t]);
    wpe.forward(pos)
}
