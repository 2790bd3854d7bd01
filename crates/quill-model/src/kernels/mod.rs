//! Fused kernels for the parts of a GPT block: linear layers, GELU, LayerNorm and
//! causal softmax attention.
//!
//! Each function here works on every backend. On Burn's Flex CPU backend in `f32`
//! (plain, or under `Autodiff<Flex>` as the trainer runs it) it calls a hand-written
//! kernel that makes one pass where Burn's generic composition makes several (and
//! under autodiff, one graph node with its own backward pass); on every other backend
//! and dtype it is exactly the generic Burn code. The parity test (`quill parity`,
//! `crates/quill-cli/tests/parity.rs`) trains the same weights on Flex and on NdArray,
//! so it compares these kernels with the generic path step by step.

mod cpu;
mod flex;

use burn::nn::{LayerNorm, Linear};
use burn::tensor::{Tensor, activation, backend::Backend};

use burn_flex::Flex;
use flex::{Route, Tracked};

/// Whether the fused kernels run on backend `B` (for `f32` tensors): Flex, with or
/// without autodiff. Everything else takes Burn's generic operations.
pub fn fused<B: Backend>() -> bool {
    flex::is_flex::<B>()
}

/// Runs `f` on the `f32` values of `tensors` (row-major; borrowed, not copied, when
/// contiguous) when `B` is Flex without autodiff and every tensor holds `f32`, so that
/// other crates can write their own fused CPU kernels (quill-train's AdamW update);
/// `None` on every other backend or dtype.
pub fn with_f32_values<B: Backend, const D: usize, const N: usize, R>(
    tensors: [&Tensor<B, D>; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> Option<R> {
    let flex: Vec<_> = tensors
        .iter()
        .map(|t| flex::plain_f32(t))
        .collect::<Option<_>>()?;
    let values: Vec<_> = flex.iter().map(flex::values).collect();
    let slices: [&[f32]; N] = std::array::from_fn(|i| &*values[i]);
    Some(f(slices))
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (its loops, and the
/// `#[inline]` functions it calls, are then vectorised eight lanes wide), else as built.
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    cpu::simd(f)
}

/// GELU, `x·Φ(x)` (the exact form, as nanoGPT's `nn.GELU()`), element-wise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match flex::route(x) {
        Route::Plain(x) => flex::output::<B, Flex, D>(flex::gelu(&x)),
        Route::Tracked(x) => flex::output::<B, Tracked, D>(flex::gelu_tracked(x)),
        Route::Other(x) => activation::gelu(x),
    }
}

/// `ln.forward(x)` over the last dimension of `[B, T, C]`, with epsilon `eps` (the
/// module keeps its own private, so the caller passes the one it built `ln` with).
pub fn layer_norm<B: Backend>(ln: &LayerNorm<B>, x: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
    let eps = eps as f32;
    let beta = ln.beta.as_ref().map(|beta| beta.val());
    match flex::route(x) {
        Route::Plain(x) => {
            let gamma = flex::primitive::<B, Flex, 1>(ln.gamma.val());
            let beta = beta.map(flex::primitive::<B, Flex, 1>);
            flex::output::<B, Flex, 3>(flex::layer_norm(&x, &gamma, beta.as_ref(), eps))
        }
        Route::Tracked(x) => {
            let gamma = flex::primitive::<B, Tracked, 1>(ln.gamma.val());
            let beta = beta.map(flex::primitive::<B, Tracked, 1>);
            flex::output::<B, Tracked, 3>(flex::layer_norm_tracked(x, gamma, beta, eps))
        }
        Route::Other(x) => ln.forward(x),
    }
}

/// `layer.forward(x)` for `x` `[N, in]`: `x·W + b`, `[N, out]`.
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    let bias = layer.bias.as_ref().map(|bias| bias.val());
    match flex::route(x) {
        Route::Plain(x) => {
            let w = flex::primitive::<B, Flex, 2>(layer.weight.val());
            let b = bias.map(flex::primitive::<B, Flex, 1>);
            flex::output::<B, Flex, 2>(flex::linear(&x, &w, b.as_ref()))
        }
        Route::Tracked(x) => {
            let w = flex::primitive::<B, Tracked, 2>(layer.weight.val());
            let b = bias.map(flex::primitive::<B, Tracked, 1>);
            flex::output::<B, Tracked, 2>(flex::linear_tracked(x, w, b))
        }
        Route::Other(x) => layer.forward(x),
    }
}

/// Causal self-attention of `n_head` heads over `qkv` `[B, T, 3C]` (queries, keys and
/// values side by side, as one `C → 3C` projection writes them): `[B, T, C]`, position
/// `t` attending to positions `≤ t`. Without dropout; `generic` computes the same on
/// backends without a fused kernel.
pub fn causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    generic: impl FnOnce(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Tensor<B, 3> {
    match flex::route(qkv) {
        Route::Plain(qkv) => flex::output::<B, Flex, 3>(flex::attention(&qkv, n_head)),
        Route::Tracked(qkv) => flex::output::<B, Tracked, 3>(flex::attention_tracked(qkv, n_head)),
        Route::Other(qkv) => generic(qkv),
    }
}
