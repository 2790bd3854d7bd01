//! nanoGPT's GPT, top-down: causal self-attention → MLP → block → model.
//!
//! Shapes use `B` batch, `T` time (≤ block_size), `C` = n_embd, `nh` heads of `hs` =
//! head_dim, `V` vocab_size.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use quill_data::Rng;

use crate::GptConfig;
use crate::init::{INIT_STD, embedding, layer_norm, linear};

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

    /// `[B, T, C] → [B, T, C]`; position `t` attends to positions `≤ t` only.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let (nh, hs) = (self.n_head, c / self.n_head);
        let heads = |m: Tensor<B, 3>| m.reshape([b, t, nh, hs]).swap_dims(1, 2);
        let qkv = self.c_attn.forward(x); // [B, T, 3C]
        let q = heads(qkv.clone().narrow(2, 0, c)); // [B, nh, T, hs]
        let k = heads(qkv.clone().narrow(2, c, c));
        let v = heads(qkv.narrow(2, 2 * c, c));

        let att = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, T]
        let future = causal_mask::<B>(t, &att.device()).expand([b, nh, t, t]);
        let att = att.mask_fill(future, f32::NEG_INFINITY);
        let att = self.attn_dropout.forward(softmax(att, 3));

        let y = att.matmul(v); // [B, nh, T, hs]
        let y = y.swap_dims(1, 2).reshape([b, t, c]); // [B, T, C]
        self.resid_dropout.forward(self.c_proj.forward(y))
    }
}

/// `[1, 1, T, T]`, `true` above the diagonal: the future positions to hide.
/// (Burn's `tril_mask` marks the masked part, the strict upper triangle.)
pub fn causal_mask<B: Backend>(t: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    Tensor::<B, 2, Bool>::tril_mask([t, t], 0, device).reshape([1, 1, t, t])
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
        let h = gelu(self.c_fc.forward(x)); // [B, T, 4C]
        self.dropout.forward(self.c_proj.forward(h))
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

    /// `[B, T, C] → [B, T, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(self.ln_1.forward(x));
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
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

    /// `[B, T]` token ids → `[B, T, V]` logits. `T` must not exceed block_size (the
    /// caller checks; see [`crate::LanguageModel::forward`]).
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let x = self.embed(idx); // [B, T, C]
        let x = self.h.iter().fold(x, |x, block| block.forward(x));
        self.head(self.ln_f.forward(x))
    }

    /// Token plus position embeddings, with dropout: `[B, T] → [B, T, C]`.
    fn embed(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = idx.dims();
        let pos = Tensor::<B, 1, Int>::arange(0..t as i64, &idx.device()).reshape([1, t]);
        let x = self.wte.forward(idx) + self.wpe.forward(pos); // [B, T, C] + [1, T, C]
        self.drop.forward(x)
    }

    /// `[B, T, C] → [B, T, V]`, through `lm_head` or the tied `wteᵀ`.
    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(lm_head) => lm_head.forward(x),
            None => {
                let [v, c] = self.wte.weight.dims();
                x.matmul(self.wte.weight.val().transpose().reshape([1, c, v]))
            }
        }
    }
}
