//! # quill-kernels
//!
//! Fused CPU kernels for the parts of a GPT block: linear layers, GELU, LayerNorm,
//! rotary positions and causal softmax attention, and the cross-entropy loss, for Burn's
//! Flex backend in `f32`; and the Newton–Schulz orthogonalisation of the Muon optimizer.
//!
//! - `cpu` (private): the kernels themselves, on plain `f32` slices, with no Burn types:
//!   each one pass over its data where Burn's generic composition makes several.
//! - `flex` (private): the glue: Flex tensors recognised by type at run time, their
//!   storage handed to the slice kernels, and under `Autodiff<Flex>` each kernel one node
//!   of the graph with its own backward pass.
//!
//! Each public function takes Burn tensors of any backend and returns `Ok(output)` when
//! it ran, or `Err(input)`, the input handed back untouched, when the backend or dtype
//! is not one it serves ([`serves`] says which); the caller then computes the same with
//! Burn's generic operations. `quill-model`'s `ops` module does exactly that, and the
//! parity check (`quill parity`) trains the same weights both ways step by step.
//!
//! ```
//! use burn::tensor::Tensor;
//! use burn_flex::Flex;
//!
//! let x = Tensor::<Flex, 1>::from_floats([-1.0, 0.0, 2.0], &Default::default());
//! let y = quill_kernels::gelu(x).expect("Flex f32 is served");
//! assert!((y.into_data().to_vec::<f32>().unwrap()[2] - 1.9545).abs() < 1e-4);
//! ```

mod cpu;
mod flex;

/// Decoding's few-row products over weights stored in `f32`, `bf16`, `f16` or 8-bit
/// blocks, on plain slices, and the read bandwidth that bounds them.
///
/// ```
/// use quill_kernels::decode::{Orientation, Packed, product};
///
/// // x [1, 2] · W [2, 3], W stored [in, out] in bf16.
/// let w: Vec<half::bf16> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0].map(half::bf16::from_f32).to_vec();
/// let mut y = [0.0; 3];
/// product(&mut y, &[1.0, 10.0], 2, Packed::Bf16(&w), 3, Orientation::InOut);
/// assert_eq!(y, [41.0, 52.0, 63.0]);
/// ```
pub mod decode {
    pub use crate::cpu::decode::{
        KvBuffer, Orientation, Packed, cached_attention, cached_attention_groups, product,
        read_bandwidth, rows,
    };
}

use burn::tensor::{DType, Int, Tensor, backend::Backend};
use burn_flex::Flex;
use cpu::decode::Orientation;
use flex::{Route, Tracked};

/// A kernel's result: `Ok(output)` (a `U`, by default of the input's type `T`), or
/// `Err(input)` when it does not serve the input's backend or dtype.
pub type Fused<T, U = T> = Result<U, T>;

/// Whether the kernels serve backend `B` (for `f32` tensors): Flex, with or without
/// autodiff.
pub fn serves<B: Backend>() -> bool {
    flex::is_flex::<B>()
}

/// Up to this many rows, the Linear products compute each row on its own, the same
/// way whatever the number of rows: a row's result does not depend on the rows beside
/// it. Beyond, `gemm` blocks rows together and a row's sums may round differently.
/// Continuous batching splits a decoding step into passes of at most this many rows,
/// so that a request's text does not depend on the others in the batch.
pub const INDEPENDENT_ROWS: usize = cpu::FEW_ROWS;

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

/// Runs `f` compiled for AVX-512 when the CPU has it, else for AVX2 and FMA, else as
/// built (its loops, and the `#[inline]` functions it calls, are then vectorised 16 or
/// 8 lanes wide). `QUILL_SIMD=avx2` or `QUILL_SIMD=baseline` in the environment caps
/// the choice, to test or measure the narrower paths.
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    cpu::simd(f)
}

/// One AdamW update of one parameter, as PyTorch's `torch.optim.AdamW` computes it, with
/// its constants in `f32` (the precision of the update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWUpdate {
    /// Gradient scale: 1 / micro-batches, times the clipping coefficient.
    pub scale: f32,
    /// β₁.
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// `1 − lr·weight_decay` for decaying parameters, else 1.
    pub decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub sqrt_bias_correction2: f32,
    /// ε.
    pub eps: f32,
}

impl AdamWUpdate {
    /// `[p, m, v]` after the step, from `[p, g, m, v]`: one value.
    #[inline(always)]
    pub fn value(&self, [p, g, m, v]: [f32; 4]) -> [f32; 3] {
        let g = g * self.scale;
        let m = m * self.beta1 + g * (1.0 - self.beta1);
        let v = v * self.beta2 + g * g * (1.0 - self.beta2);
        let denom = v.sqrt() / self.sqrt_bias_correction2 + self.eps;
        [p * self.decay - m / denom * self.step_size, m, v]
    }

    /// [`AdamWUpdate::value`] for every value of a parameter, its gradient and its
    /// moments, in one pass: chunks on rayon's threads, each [`vectorized`], the
    /// outputs written once without a zero fill first.
    ///
    /// # Panics
    /// If the four differ in length.
    pub fn apply(&self, p: &[f32], g: &[f32], m: &[f32], v: &[f32]) -> [Vec<f32>; 3] {
        cpu::adamw(self, p, g, m, v)
    }
}

/// `(a + b) / divisor`, or `a + b` without one, element by element, in one pass as
/// [`AdamWUpdate::apply`] runs (the gradient mean of a sharded step).
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn add_then_divide(a: &[f32], b: &[f32], divisor: Option<f32>) -> Vec<f32> {
    cpu::add_then_divide(a, b, divisor)
}

/// GELU, `x·Φ(x)` (the exact form, as nanoGPT's `nn.GELU()`), element-wise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Fused<Tensor<B, D>> {
    match flex::route(x) {
        Route::Plain(x) => Ok(flex::output::<B, Flex, D>(flex::gelu(&x))),
        Route::Tracked(x) => Ok(flex::output::<B, Tracked, D>(flex::gelu_tracked(x))),
        Route::Other(x) => Err(x),
    }
}

/// LayerNorm over the last dimension of `x` `[B, T, C]`, with `gamma` (γ) and `beta` (β)
/// `[C]`: `(x − mean) / √(var + eps) · γ + β`.
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Fused<Tensor<B, 3>> {
    // The kernels write every output value through raw pointers: shapes that disagree
    // stop here, before any of them runs.
    let c = x.dims()[2];
    assert_eq!(
        gamma.dims()[0],
        c,
        "layer_norm: γ has {} values for rows of {c}",
        gamma.dims()[0]
    );
    if let Some(beta) = &beta {
        assert_eq!(
            beta.dims()[0],
            c,
            "layer_norm: β has {} values for rows of {c}",
            beta.dims()[0]
        );
    }
    let eps = eps as f32;
    match flex::route(x) {
        Route::Plain(x) => {
            let gamma = flex::primitive::<B, Flex, 1>(gamma);
            let beta = beta.map(flex::primitive::<B, Flex, 1>);
            Ok(flex::output::<B, Flex, 3>(flex::layer_norm(
                &x,
                &gamma,
                beta.as_ref(),
                eps,
            )))
        }
        Route::Tracked(x) => {
            let gamma = flex::primitive::<B, Tracked, 1>(gamma);
            let beta = beta.map(flex::primitive::<B, Tracked, 1>);
            Ok(flex::output::<B, Tracked, 3>(flex::layer_norm_tracked(
                x, gamma, beta, eps,
            )))
        }
        Route::Other(x) => Err(x),
    }
}

/// `x·W + b` for `x` `[N, in]`, `weight` `[in, out]`, `bias` `[out]`: `[N, out]`.
///
/// On plain Flex, `x` in `f32` may meet a weight stored narrower for inference —
/// `bf16`, `f16`, or 8-bit values with per-block scales (a quantized tensor): a few rows
/// then read it as stored ([`decode::product`]), more widen it to `f32` first.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Fused<Tensor<B, 2>> {
    // Shapes that disagree stop here, before a kernel writes anything.
    let ([_, d_in], [w_in, d_out]) = (x.dims(), weight.dims());
    assert_eq!(
        w_in, d_in,
        "linear: x has {d_in} columns but the weight {w_in} rows"
    );
    if let Some(bias) = &bias {
        assert_eq!(
            bias.dims()[0],
            d_out,
            "linear: the bias has {} values for {d_out} outputs",
            bias.dims()[0]
        );
    }
    match flex::route(x) {
        Route::Plain(x) => {
            let b = bias.map(flex::primitive::<B, Flex, 1>);
            let y = match flex::narrow(weight) {
                Ok(w) => match flex::linear_narrow(&x, &w, Orientation::InOut, b.as_ref()) {
                    Some(y) => y,
                    None => return Err(flex::output::<B, Flex, 2>(x)),
                },
                Err(w) => flex::linear(&x, &flex::primitive::<B, Flex, 2>(w), b.as_ref()),
            };
            Ok(flex::output::<B, Flex, 2>(y))
        }
        Route::Tracked(x) => {
            let w = flex::primitive::<B, Tracked, 2>(weight);
            let b = bias.map(flex::primitive::<B, Tracked, 1>);
            Ok(flex::output::<B, Tracked, 2>(flex::linear_tracked(x, w, b)))
        }
        Route::Other(x) => Err(x),
    }
}

/// `x·Wᵀ + b` for `x` `[N, in]` and `weight_t` `[out, in]`, the stored transpose of the
/// weight (the `[V, C]` token table as a tied LM head): `[N, out]`, as
/// [`linear`]`(x, weight_t.transpose(), bias)` computes it, without transposing a
/// weight stored narrower for inference (a quantized tensor's blocks run along its
/// rows).
pub fn linear_transposed<B: Backend>(
    x: Tensor<B, 2>,
    weight_t: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Fused<Tensor<B, 2>> {
    let ([_, d_in], [d_out, w_in]) = (x.dims(), weight_t.dims());
    assert_eq!(
        w_in, d_in,
        "linear_transposed: x has {d_in} columns but the weight {w_in}"
    );
    if let Some(bias) = &bias {
        assert_eq!(bias.dims()[0], d_out, "linear_transposed: bias length");
    }
    let (x, weight_t) = match flex::narrow(weight_t) {
        Ok(w) => match flex::route(x) {
            Route::Plain(x) => {
                let b = bias.map(flex::primitive::<B, Flex, 1>);
                return match flex::linear_narrow(&x, &w, Orientation::OutIn, b.as_ref()) {
                    Some(y) => Ok(flex::output::<B, Flex, 2>(y)),
                    None => Err(flex::output::<B, Flex, 2>(x)),
                };
            }
            Route::Tracked(x) => return Err(flex::output::<B, Tracked, 2>(x)),
            Route::Other(x) => return Err(x),
        },
        Err(w) => (x, w),
    };
    linear(x, weight_t.transpose(), bias)
}

/// The rows `ids` `[B, T]` of a `[V, C]` table stored narrower for inference (`bf16`,
/// `f16`, or a quantized tensor), widened to `f32`: `[B, T, C]`, reading only those
/// rows. `Err(table)` for every other table, backend or dtype, and for ids that are not
/// rows of the table.
pub fn embedding<B: Backend>(
    table: Tensor<B, 2>,
    ids: &Tensor<B, 2, Int>,
) -> Fused<Tensor<B, 2>, Tensor<B, 3>> {
    let ([b, t], [_, c]) = (ids.dims(), table.dims());
    let table = flex::narrow(table)?;
    let rows = ids.clone().into_data().convert::<i64>().into_vec::<i64>();
    let rows: Option<Vec<usize>> = rows
        .ok()
        .and_then(|r| r.into_iter().map(|id| usize::try_from(id).ok()).collect());
    match rows.and_then(|rows| flex::rows_narrow(&table, &rows)) {
        Some(y) => Ok(flex::output::<B, Flex, 2>(y).reshape([b, t, c])),
        None => Err(flex::from_narrow::<B>(table)),
    }
}

/// Causal self-attention of `n_head` heads for new positions `qkv` `[B, T, 3C]` that
/// follow the positions in `cache` (to which their keys and values are added): `[B, T,
/// C]`, without dropout. The decoding step of sampling, on plain Flex in `f32`.
pub fn attention_with_cache<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    cache: &mut decode::KvBuffer,
) -> Fused<Tensor<B, 3>> {
    let [b, t, width] = qkv.dims();
    assert!(
        n_head > 0 && width.is_multiple_of(3) && (width / 3).is_multiple_of(n_head),
        "attention_with_cache: {width} columns are not q, k and v of {n_head} equal heads"
    );
    match flex::route(qkv) {
        Route::Plain(qkv) => {
            let c = width / 3;
            let mut y = vec![0f32; b * t * c];
            decode::cached_attention(&flex::values(&qkv), b, c, n_head, cache, &mut y);
            Ok(flex::output::<B, Flex, 3>(flex::tensor(
                y,
                [b, t, c].into(),
            )))
        }
        Route::Tracked(qkv) => Err(flex::output::<B, Tracked, 3>(qkv)),
        Route::Other(qkv) => Err(qkv),
    }
}

/// [`attention_with_cache`] of one new position for several groups of sequences, each
/// with its own cache (a step of continuous batching): `qkv` `[N, 1, 3C]` holds the
/// groups' rows one after another, `caches` each group's row count and cache. `[N, 1,
/// C]`, each row what [`attention_with_cache`] gives its group alone, in one parallel
/// pass over every head of every row.
pub fn attention_with_caches<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    caches: &mut [(usize, &mut decode::KvBuffer)],
) -> Fused<Tensor<B, 3>> {
    let [n, t, width] = qkv.dims();
    assert!(
        t == 1 && n_head > 0 && width.is_multiple_of(3) && (width / 3).is_multiple_of(n_head),
        "attention_with_caches: {width} columns are not q, k and v of {n_head} equal heads of one position"
    );
    match flex::route(qkv) {
        Route::Plain(qkv) => {
            let c = width / 3;
            let mut y = vec![0f32; n * c];
            decode::cached_attention_groups(&flex::values(&qkv), c, n_head, caches, &mut y);
            Ok(flex::output::<B, Flex, 3>(flex::tensor(
                y,
                [n, 1, c].into(),
            )))
        }
        Route::Tracked(qkv) => Err(flex::output::<B, Tracked, 3>(qkv)),
        Route::Other(qkv) => Err(qkv),
    }
}

/// Causal self-attention of `n_head` heads over `qkv` `[B, T, 3C]` (queries, keys and
/// values side by side, as one `C → 3C` projection writes them): `[B, T, C]`, position
/// `t` attending to positions `≤ t`, without dropout.
pub fn causal_attention<B: Backend>(qkv: Tensor<B, 3>, n_head: usize) -> Fused<Tensor<B, 3>> {
    // Shapes that disagree stop here, before a kernel writes anything.
    let width = qkv.dims()[2];
    assert!(
        n_head > 0 && width.is_multiple_of(3) && (width / 3).is_multiple_of(n_head),
        "causal_attention: {width} columns are not q, k and v of {n_head} equal heads"
    );
    match flex::route(qkv) {
        Route::Plain(qkv) => Ok(flex::output::<B, Flex, 3>(flex::attention(&qkv, n_head))),
        Route::Tracked(qkv) => Ok(flex::output::<B, Tracked, 3>(flex::attention_tracked(
            qkv, n_head,
        ))),
        Route::Other(qkv) => Err(qkv),
    }
}

/// Mean cross-entropy of `logits` `[N, V]` against the classes `targets` `[N]`:
/// `−(1/N)·Σ_i log softmax(logits_i)[t_i]`, shape `[1]`, as `log_softmax`, `gather`
/// and `mean` compute it, in one pass over the logits, and one more for the gradient
/// (`softmax − one-hot`), without `[N, V]` log-probabilities in between. Targets out of
/// range hand the logits back, for the generic path to report.
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Fused<Tensor<B, 2>, Tensor<B, 1>> {
    let [n, v] = logits.dims();
    if !serves::<B>() || logits.dtype() != DType::F32 || targets.dims()[0] != n {
        return Err(logits);
    }
    let classes = targets.into_data().convert::<i64>().into_vec::<i64>();
    let Some(targets) = classes.ok().and_then(|classes| {
        (classes.iter())
            .map(|&t| usize::try_from(t).ok().filter(|&t| t < v))
            .collect::<Option<Vec<usize>>>()
    }) else {
        return Err(logits);
    };
    let targets = std::sync::Arc::new(targets);
    match flex::route(logits) {
        Route::Plain(x) => Ok(flex::output::<B, Flex, 1>(flex::cross_entropy(&x, targets))),
        Route::Tracked(x) => Ok(flex::output::<B, Tracked, 1>(flex::cross_entropy_tracked(
            x, targets,
        ))),
        Route::Other(x) => Err(x),
    }
}

/// Rotary position embeddings of the queries and keys in `qkv` `[B, T, 3C]` (`n_head`
/// heads; the rows are positions `past..past + T`; frequencies `base^(−2i/hs)`): each
/// head's pairs `(i, i + hs/2)` turned by their angle, the values unchanged.
pub fn rotary<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    past: usize,
    base: f64,
) -> Fused<Tensor<B, 3>> {
    match flex::route(qkv) {
        Route::Plain(x) => Ok(flex::output::<B, Flex, 3>(flex::rotary(
            &x, n_head, past, base,
        ))),
        Route::Tracked(x) => Ok(flex::output::<B, Tracked, 3>(flex::rotary_tracked(
            x, n_head, past, base,
        ))),
        Route::Other(x) => Err(x),
    }
}

/// Muon's orthogonalisation of each `[rows, cols]` matrix of `gs` (no autodiff: an
/// optimizer's step): `X = g / ‖g‖_F`, then `steps` times `X ← a·X + (b·A + c·A²)·X`,
/// `A = X·Xᵀ`, on the orientation whose `A` is the smaller; the matrices spread over
/// the cores. Handed back, in order, unless every one is a Flex `f32` tensor.
pub fn newton_schulz<B: Backend>(
    gs: Vec<Tensor<B, 2>>,
    coeffs: (f32, f32, f32),
    steps: usize,
) -> Fused<Vec<Tensor<B, 2>>> {
    let routed: Vec<Route<B, 2>> = gs.into_iter().map(flex::route).collect();
    if !routed.iter().all(|r| matches!(r, Route::Plain(_))) {
        let back = routed.into_iter().map(|r| match r {
            Route::Plain(x) => flex::output::<B, Flex, 2>(x),
            Route::Tracked(x) => flex::output::<B, Tracked, 2>(x),
            Route::Other(x) => x,
        });
        return Err(back.collect());
    }
    let plain: Vec<_> = (routed.into_iter())
        .filter_map(|r| match r {
            Route::Plain(x) => Some(x),
            _ => None,
        })
        .collect();
    let outs = flex::newton_schulz_all(&plain, coeffs, steps);
    Ok(outs.into_iter().map(flex::output::<B, Flex, 2>).collect())
}
