//! nanoGPT's GPT, top-down: causal self-attention → MLP → block → model.
//!
//! Shapes use `B` batch, `T` time (≤ block_size), `C` = n_embd, `nh` heads of `hs` =
//! head_dim, `V` vocab_size, `P` positions already in a [`KvCache`].
//!
//! Every forward pass takes an optional [`KvCache`]: training passes none; generation
//! passes one, so each new token attends to the cached keys and values of the tokens
//! before it instead of recomputing them.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use quill_data::Rng;

use crate::GptConfig;
use crate::init::{INIT_STD, LN_EPS, embedding, layer_norm, linear};
use crate::kernels;

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
}

impl<B: Backend> CausalSelfAttention<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (c, bias) = (config.n_embd, config.bias);
        Self {
            c_attn: linear(c, 3 * c, bias, INIT_STD, rng, device),
            c_proj: linear(c, c, bias, residual_std(config), rng, device),
            attn_dropout: DropoutConfig::new(config.dropout).init(),
            resid_dropout: DropoutConfig::new(config.dropout).init(),
            n_head: config.n_head,
        }
    }

    /// `[B, T, C] → [B, T, C]`; position `t` attends to positions `≤ t` only. With a
    /// cache `layer` holding `P` earlier positions, the `T` new positions also attend to
    /// those, and their keys and values are appended to it.
    pub fn forward(&self, x: Tensor<B, 3>, layer: Option<&mut LayerKv<B>>) -> Tensor<B, 3> {
        let dropout_off = self.attn_dropout.prob == 0.0 || !B::ad_enabled(&x.device());
        let y = match layer {
            None if dropout_off && kernels::fused::<B>() => {
                let qkv = linear_3d(&self.c_attn, x); // [B, T, 3C]
                kernels::causal_attention(qkv, self.n_head, |qkv| {
                    let [b, t, c3] = qkv.dims();
                    let c = c3 / 3;
                    let head = |i: usize| self.split_heads(qkv.clone().narrow(2, i * c, c), b, t);
                    self.attend([head(0), head(1), head(2)], None)
                })
            }
            layer => self.attend(self.project_heads(x), layer),
        }; // [B, T, C]
        self.resid_dropout.forward(linear_3d(&self.c_proj, y))
    }

    /// q, k and v, each `[B, nh, T, hs]`, each from its third of c_attn's weight:
    /// slicing the `[C, 3C]` weight (not the `[B, T, 3C]` activations) keeps the backward
    /// pass from scattering three activation-sized gradients back into one.
    fn project_heads(&self, x: Tensor<B, 3>) -> [Tensor<B, 4>; 3] {
        let [b, t, c] = x.dims();
        let x = x.reshape([b * t, c]);
        [0, 1, 2].map(|i| {
            let w = self.c_attn.weight.val().narrow(1, i * c, c); // [C, C]
            let y = x.clone().matmul(w); // [B·T, C]
            let y = match &self.c_attn.bias {
                Some(bias) => y + bias.val().narrow(0, i * c, c).unsqueeze(),
                None => y,
            };
            self.split_heads(y, b, t)
        })
    }

    /// `[B, T, C]` (or `[B·T, C]`) → `[B, nh, T, hs]`.
    fn split_heads<const D: usize>(&self, x: Tensor<B, D>, b: usize, t: usize) -> Tensor<B, 4> {
        let hs = x.dims()[D - 1] / self.n_head;
        x.reshape([b, t, self.n_head, hs]).swap_dims(1, 2)
    }

    /// The attention itself in Burn's tensor operations: q, k, v `[B, nh, T, hs]` →
    /// `[B, T, C]`.
    fn attend(&self, [q, k, v]: [Tensor<B, 4>; 3], layer: Option<&mut LayerKv<B>>) -> Tensor<B, 3> {
        let [b, nh, t, hs] = q.dims();
        let c = nh * hs;
        let (k, v, past) = match layer {
            Some(layer) => layer.append(k, v), // [B, nh, P + T, hs]
            None => (k, v, 0),
        };

        let total = past + t;
        let att = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, P + T]
        let att = if t > 1 {
            let future = causal_mask::<B>(t, past, &att.device()).expand([b, nh, t, total]);
            att.mask_fill(future, f32::NEG_INFINITY)
        } else {
            att // one new position sees every earlier one
        };
        let att = self.attn_dropout.forward(softmax(att, 3));

        let y = att.matmul(v); // [B, nh, T, hs]
        y.swap_dims(1, 2).reshape([b, t, c]) // [B, T, C]
    }
}

/// `[B, T, in] → [B, T, out]` as one `[B·T, in] × [in, out]` product. (Burn's
/// `Linear::forward` on a 3-D input multiplies `B` separate `[T, in]` blocks by the
/// broadcast weight and sums `B` weight gradients afterwards; one 2-D product is one
/// large matrix multiplication each way, which the CPU backends spread over all cores.)
pub fn linear_3d<B: Backend>(layer: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, c] = x.dims();
    let y = kernels::linear(layer, x.reshape([b * t, c])); // [B·T, out]
    let out = y.dims()[1];
    y.reshape([b, t, out])
}

/// `[1, 1, T, P + T]`, `true` where new position `i` (absolute `P + i`) would see a
/// later position: the future to hide. (Burn's `tril_mask` marks the masked part: the
/// entries above the diagonal shifted right by `P`.)
pub fn causal_mask<B: Backend>(t: usize, past: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let total = past + t;
    Tensor::<B, 2, Bool>::tril_mask([t, total], past as i64, device).reshape([1, 1, t, total])
}

/// The cached keys and values of one attention layer, `[B, nh, P, hs]` each.
#[derive(Debug, Clone, Default)]
pub struct LayerKv<B: Backend> {
    kv: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
}

impl<B: Backend> LayerKv<B> {
    /// Appends the new positions' keys and values; returns all of them and the number
    /// of positions cached before.
    fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>, usize) {
        let (k, v, past) = match self.kv.take() {
            Some((pk, pv)) => {
                let past = pk.dims()[2];
                (
                    Tensor::cat(vec![pk, k], 2),
                    Tensor::cat(vec![pv, v], 2),
                    past,
                )
            }
            None => (k, v, 0),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v, past)
    }
}

/// A key/value cache for a whole model: one [`LayerKv`] per block and the number of
/// positions it holds.
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        KvCache {
            layers: Vec::new(),
            len: 0,
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counts `t` more positions without storing anything (models without attention).
    pub(crate) fn skip(&mut self, t: usize) {
        self.len += t;
    }

    /// Forgets everything (e.g. when the context window shifts).
    pub fn clear(&mut self) {
        *self = KvCache::new();
    }
}

/// Residual projections are scaled down by `√(2·n_layer)` (GPT-2).
fn residual_std(config: &GptConfig) -> f64 {
    INIT_STD / (2.0 * config.n_layer as f64).sqrt()
}

/// The position-wise feed-forward network `C → 4C → GELU → C`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `C → 4C`.
    pub c_fc: Linear<B>,
    /// `4C → C` (a residual projection).
    pub c_proj: Linear<B>,
    dropout: Dropout,
}

impl<B: Backend> Mlp<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (c, bias) = (config.n_embd, config.bias);
        Self {
            c_fc: linear(c, 4 * c, bias, INIT_STD, rng, device),
            c_proj: linear(4 * c, c, bias, residual_std(config), rng, device),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// `[B, T, C] → [B, T, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = kernels::gelu(linear_3d(&self.c_fc, x)); // [B, T, 4C]
        self.dropout.forward(linear_3d(&self.c_proj, h))
    }
}

/// A pre-LayerNorm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<B>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<B>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
}

impl<B: Backend> Block<B> {
    fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        Self {
            ln_1: layer_norm(config.n_embd, config.bias, device),
            attn: CausalSelfAttention::new(config, rng, device),
            ln_2: layer_norm(config.n_embd, config.bias, device),
            mlp: Mlp::new(config, rng, device),
        }
    }

    /// `[B, T, C] → [B, T, C]`, with this block's cache when generating.
    pub fn forward(&self, x: Tensor<B, 3>, layer: Option<&mut LayerKv<B>>) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attn
                .forward(kernels::layer_norm(&self.ln_1, x, LN_EPS), layer);
        x.clone() + self.mlp.forward(kernels::layer_norm(&self.ln_2, x, LN_EPS))
    }
}

/// The GPT language model.
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    /// Token embedding `[V, C]`.
    pub wte: Embedding<B>,
    /// Position embedding `[block_size, C]`.
    pub wpe: Embedding<B>,
    /// The transformer blocks.
    pub h: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// LM head `C → V` (no bias); `None` when tied to `wte`.
    pub lm_head: Option<Linear<B>>,
    drop: Dropout,
    block_size: usize,
}

impl<B: Backend> Gpt<B> {
    /// A freshly initialised model (GPT-2 init drawn from `rng`).
    pub fn new(config: &GptConfig, rng: &mut Rng, device: &B::Device) -> Self {
        let (v, c) = (config.vocab_size, config.n_embd);
        Self {
            wte: embedding(v, c, rng, device),
            wpe: embedding(config.block_size, c, rng, device),
            h: (0..config.n_layer)
                .map(|_| Block::new(config, rng, device))
                .collect(),
            ln_f: layer_norm(c, config.bias, device),
            lm_head: (!config.tie_weights).then(|| linear(c, v, false, INIT_STD, rng, device)),
            drop: DropoutConfig::new(config.dropout).init(),
            block_size: config.block_size,
        }
    }

    /// Maximum context length.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// `[B, T]` token ids → `[B, T, V]` logits. Without a cache the tokens are
    /// positions `0..T`; with one, they follow the `P` cached positions and are added to
    /// it. `P + T` must not exceed block_size (the caller checks; see
    /// [`crate::LanguageModel::forward`]).
    pub fn forward(&self, idx: Tensor<B, 2, Int>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let [_, t] = idx.dims();
        let x = match cache {
            None => {
                let x = self.embed(idx, 0); // [B, T, C]
                self.h.iter().fold(x, |x, block| block.forward(x, None))
            }
            Some(cache) => {
                let x = self.embed(idx, cache.len);
                cache.layers.resize_with(self.h.len(), LayerKv::default);
                let x = self
                    .h
                    .iter()
                    .zip(&mut cache.layers)
                    .fold(x, |x, (block, layer)| block.forward(x, Some(layer)));
                cache.len += t;
                x
            }
        };
        self.head(kernels::layer_norm(&self.ln_f, x, LN_EPS))
    }

    /// Token plus position embeddings for positions `past..past + T`, with dropout:
    /// `[B, T] → [B, T, C]`.
    fn embed(&self, idx: Tensor<B, 2, Int>, past: usize) -> Tensor<B, 3> {
        let pos = position_embedding(&self.wpe, &idx, past); // [1, T, C]
        self.drop.forward(self.wte.forward(idx) + pos) // [B, T, C]
    }

    /// `[B, T, C] → [B, T, V]`, through `lm_head` or the tied `wteᵀ`.
    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(lm_head) => linear_3d(lm_head, x),
            None => {
                let [b, t, c] = x.dims();
                let v = self.wte.weight.dims()[0];
                let logits = x
                    .reshape([b * t, c])
                    .matmul(self.wte.weight.val().transpose());
                logits.reshape([b, t, v])
            }
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
