//! The operations of a GPT block, each with a fast path chosen inside it and its plain
//! reference version, same signature, beside it (`gelu` / `gelu_slow`, …).
//!
//! The fast paths are the fused CPU kernels of `quill-kernels` (feature `fused-cpu`, on
//! by default): they run on Burn's Flex backend in `f32`, plain or under autodiff, and
//! hand every other tensor back to the reference version, which is Burn's generic
//! operations. Without the feature, each operation is its reference version.
//!
//! With 16-bit parameters, the reductions that lose most in 16 bits run in f32, as
//! PyTorch's autocast runs them: the loss (its log-softmax), the attention softmax and
//! the normalisation statistics ([`in_f32`]). Products and element-wise operations stay
//! in the parameters' dtype.

use burn::nn::Dropout;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, TensorPrimitive, backend::Backend};

use crate::kv_cache::LayerKv;
use crate::weights::widened;

/// Returns the fused kernel's output when `$fused` (a `quill_kernels` call) served the
/// input; otherwise rebinds `$input` to the input it handed back.
macro_rules! fast_path {
    ($input:ident = $fused:expr) => {
        #[cfg(feature = "fused-cpu")]
        let $input = match $fused {
            Ok(output) => return output,
            Err(input) => input,
        };
    };
}

/// The most rows one pass may hold for each row's logits to be bit for bit those of the
/// row alone: the fused CPU kernels' few-row products
/// (`quill_kernels::INDEPENDENT_ROWS`). `None` on other backends, whose batches are
/// not split (their rows agree to rounding).
pub fn independent_rows<B: Backend>() -> Option<usize> {
    #[cfg(feature = "fused-cpu")]
    if quill_kernels::serves::<B>() {
        return Some(quill_kernels::INDEPENDENT_ROWS);
    }
    None
}

/// `f(x)` computed in f32 and returned in `x`'s 16-bit dtype; `f(x)` itself when `x`
/// is f32 or wider.
pub fn in_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    match x.dtype() {
        dtype @ (DType::F16 | DType::BF16) => f(to_f32(x)).cast(dtype),
        _ => f(x),
    }
}

/// `x` widened to f32 if it is a 16-bit float; as it is otherwise (f32, or f64, which
/// stays f64).
pub fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x.cast(FloatDType::F32),
        _ => x,
    }
}

/// The one value of `t` as `f64`, read in `t`'s own dtype: `into_scalar` reads in the
/// backend's default float type, which rounds an f32 loss on an f16 backend to f16 (and
/// a gradient's sum of squares past 65,504 to infinity).
pub fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    let values = t.into_data().convert::<f64>();
    values.as_slice::<f64>().expect("f64 data")[0]
}

/// `x·W + b`: `x` `[N, in]`, `weight` `[in, out]`, `bias` `[out]` → `[N, out]`.
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    fast_path!(x = quill_kernels::linear(x, weight.clone(), bias.clone()));
    linear_slow(x, weight, bias)
}

/// [`linear`] in Burn's operations (a weight stored narrower for inference widened to
/// `x`'s dtype first).
pub fn linear_slow<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let weight = widened(weight, x.dtype());
    burn::tensor::module::linear(x, weight, bias)
}

/// `x·Wᵀ + b` for `weight_t` `[out, in]` stored as is: a tied LM head's `[V, C]` token
/// table. [`linear`] of the transpose, without transposing a weight stored narrower for
/// inference.
pub fn linear_transposed<B: Backend>(
    x: Tensor<B, 2>,
    weight_t: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    fast_path!(x = quill_kernels::linear_transposed(x, weight_t.clone(), bias.clone()));
    linear_transposed_slow(x, weight_t, bias)
}

/// [`linear_transposed`] in Burn's operations.
pub fn linear_transposed_slow<B: Backend>(
    x: Tensor<B, 2>,
    weight_t: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    let weight = widened(weight_t, x.dtype()).transpose();
    linear_slow(x, weight, bias)
}

/// Rows `idx` `[B, T]` of the `[V, C]` table `[B, T, C]`, in `dtype` (the activations'
/// dtype, which a table stored narrower for inference is widened to).
pub fn embedding<B: Backend>(
    table: Tensor<B, 2>,
    idx: Tensor<B, 2, Int>,
    dtype: DType,
) -> Tensor<B, 3> {
    #[cfg(feature = "fused-cpu")]
    let table = match quill_kernels::embedding(table, &idx) {
        Ok(rows) if rows.dtype() == dtype => return rows,
        Ok(rows) => return widened(rows, dtype),
        Err(table) => table,
    };
    embedding_slow(table, idx, dtype)
}

/// [`embedding`] in Burn's operations: the rows of the table, then widened (a quantized
/// table is dequantized whole first).
pub fn embedding_slow<B: Backend>(
    table: Tensor<B, 2>,
    idx: Tensor<B, 2, Int>,
    dtype: DType,
) -> Tensor<B, 3> {
    let table = match table.dtype() {
        DType::QFloat(_) => table.dequantize(),
        _ => table,
    };
    widened(burn::tensor::module::embedding(table, idx), dtype)
}

/// Mean cross-entropy of `logits` `[N, V]` against the classes `targets` `[N]`:
/// shape `[1]`, in f32 for 16-bit logits (f64 logits stay f64).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    fast_path!(logits = quill_kernels::cross_entropy(logits, targets.clone()));
    cross_entropy_slow(logits, targets)
}

/// [`cross_entropy`] in Burn's operations: `log_softmax`, `gather`, `mean`.
pub fn cross_entropy_slow<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let n = targets.dims()[0];
    let log_probs = log_softmax(to_f32(logits), 1); // [N, V]
    let picked = log_probs.gather(1, targets.reshape([n, 1])); // [N, 1]
    picked.mean().neg()
}

/// GELU, `x·Φ(x)` (the exact form, as nanoGPT's `nn.GELU()`), element-wise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fast_path!(x = quill_kernels::gelu(x));
    gelu_slow(x)
}

/// [`gelu`] in Burn's operations.
pub fn gelu_slow<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::gelu(x)
}

/// GELU's tanh approximation, `x/2·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: GPT-2's
/// `gelu_new`, element-wise. No fused kernel yet: Burn's operations on every backend.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::gelu_approximate(x)
}

/// LayerNorm over the last dimension of `x` `[B, T, C]`, with `gamma` (γ) and `beta` (β)
/// `[C]`: `(x − mean) / √(var + eps) · γ + β`.
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, 3> {
    fast_path!(x = quill_kernels::layer_norm(x, gamma.clone(), beta.clone(), eps));
    layer_norm_slow(x, gamma, beta, eps)
}

/// [`layer_norm`] as Burn's `LayerNorm` module computes it (the backend's own op).
pub fn layer_norm_slow<B: Backend>(
    x: Tensor<B, 3>,
    gamma: Tensor<B, 1>,
    beta: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, 3> {
    in_f32(x, |x| {
        let beta = beta.map(|beta| to_f32(beta).into_primitive().tensor());
        let (x, gamma) = (
            x.into_primitive().tensor(),
            to_f32(gamma).into_primitive().tensor(),
        );
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(x, gamma, beta, eps)))
    })
}

/// RMSNorm over the last dimension of `x` `[B, T, C]` with gain `gamma` `[C]`:
/// `x / √(mean(x²) + eps) · γ`. No fused kernel: Burn's operations on every backend.
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, gamma: Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
    let c = gamma.dims()[0];
    in_f32(x, |x| {
        let mean_square = x.clone().powi_scalar(2).mean_dim(2); // [B, T, 1]
        x * (mean_square + eps).sqrt().recip() * to_f32(gamma).reshape([1, 1, c])
    })
}

/// ReLU squared, `max(0, x)²`, element-wise. Burn's operations on every backend.
pub fn relu2<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    burn::tensor::activation::relu(x).powi_scalar(2)
}

/// Rotary position embeddings of the queries and keys in `qkv` `[B, T, 3C]`, whose rows
/// are positions `past..past + T` (see [`crate::rotary`]); the values pass unchanged.
pub fn rotary<B: Backend>(qkv: Tensor<B, 3>, n_head: usize, past: usize) -> Tensor<B, 3> {
    fast_path!(qkv = quill_kernels::rotary(qkv, n_head, past, crate::rotary::BASE));
    rotary_slow(qkv, n_head, past)
}

/// [`rotary`] in Burn's operations.
pub fn rotary_slow<B: Backend>(qkv: Tensor<B, 3>, n_head: usize, past: usize) -> Tensor<B, 3> {
    crate::rotary::rotate_qk(qkv, n_head, past)
}

/// Causal self-attention of `n_head` heads over `qkv` `[B, T, 3C]` (queries, keys and
/// values side by side, as one `C → 3C` projection writes them) → `[B, T, C]`: new
/// position `t` attends to positions `≤ t`, and to the `P` positions already in `cache`
/// (to which its keys and values are added). `dropout` applies to the attention weights.
///
/// The fused kernels serve the training and evaluation passes (no cache, dropout off)
/// and sampling's steps (a cache, dropout off), whose keys and values then stay in the
/// kernels' own buffer.
pub fn causal_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    dropout: &Dropout,
    cache: Option<&mut LayerKv<B>>,
) -> Tensor<B, 3> {
    let dropout_off = dropout.prob == 0.0 || !B::ad_enabled(&qkv.device());
    match cache {
        None if dropout_off => {
            fast_path!(qkv = quill_kernels::causal_attention(qkv, n_head));
            causal_attention_slow(qkv, n_head, dropout, None)
        }
        #[cfg(feature = "fused-cpu")]
        Some(layer) if dropout_off && !layer.holds_tensors() => {
            match quill_kernels::attention_with_cache(qkv, n_head, &mut layer.buffer) {
                Ok(y) => y,
                Err(qkv) => causal_attention_slow(qkv, n_head, dropout, Some(layer)),
            }
        }
        cache => causal_attention_slow(qkv, n_head, dropout, cache),
    }
}

/// [`causal_attention`] of one new position for groups of sequences, each with its
/// own cache: `qkv` `[N, 1, 3C]` holds the groups' rows one after another. On the fused
/// kernels one pass serves every group (each row's values are those of its group
/// alone); elsewhere each group runs [`causal_attention`] on its rows.
pub fn grouped_attention<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    dropout: &Dropout,
    groups: &mut [(usize, &mut LayerKv<B>)],
) -> Tensor<B, 3> {
    #[cfg(feature = "fused-cpu")]
    let qkv = {
        let dropout_off = dropout.prob == 0.0 || !B::ad_enabled(&qkv.device());
        if dropout_off && groups.iter().all(|(_, layer)| !layer.holds_tensors()) {
            let mut buffers: Vec<(usize, &mut quill_kernels::decode::KvBuffer)> = groups
                .iter_mut()
                .map(|(rows, layer)| (*rows, &mut layer.buffer))
                .collect();
            match quill_kernels::attention_with_caches(qkv, n_head, &mut buffers) {
                Ok(y) => return y,
                Err(qkv) => qkv,
            }
        } else {
            qkv
        }
    };
    let mut offset = 0;
    let ys: Vec<Tensor<B, 3>> = groups
        .iter_mut()
        .map(|(rows, layer)| {
            let part = qkv.clone().narrow(0, offset, *rows); // [rows, 1, 3C]
            offset += *rows;
            causal_attention(part, n_head, dropout, Some(&mut **layer))
        })
        .collect();
    Tensor::cat(ys, 0) // [N, 1, C]
}

/// [`causal_attention`] in Burn's operations: softmax of masked `q·kᵀ/√hs`, times `v`.
pub fn causal_attention_slow<B: Backend>(
    qkv: Tensor<B, 3>,
    n_head: usize,
    dropout: &Dropout,
    cache: Option<&mut LayerKv<B>>,
) -> Tensor<B, 3> {
    let [b, t, c3] = qkv.dims();
    let (c, hs) = (c3 / 3, c3 / 3 / n_head);
    let heads = |i: usize| {
        let x = qkv.clone().narrow(2, i * c, c); // [B, T, C]
        x.reshape([b, t, n_head, hs]).swap_dims(1, 2) // [B, nh, T, hs]
    };
    let (q, k, v) = (heads(0), heads(1), heads(2));
    let (k, v, past) = match cache {
        Some(layer) => layer.append(k, v), // [B, nh, P + T, hs]
        None => (k, v, 0),
    };

    let att = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hs as f64).sqrt()); // [B, nh, T, P + T]
    let att = if t > 1 {
        let future = causal_mask::<B>(t, past, &att.device()).expand([b, n_head, t, past + t]);
        att.mask_fill(future, f32::NEG_INFINITY)
    } else {
        att // one new position sees every earlier one
    };
    let att = dropout.forward(in_f32(att, |att| softmax(att, 3)));

    let y = att.matmul(v); // [B, nh, T, hs]
    y.swap_dims(1, 2).reshape([b, t, c]) // [B, T, C]
}

/// `[1, 1, T, P + T]`, `true` where new position `i` (absolute `P + i`) would see a
/// later position: the future to hide. (Burn's `tril_mask` marks the masked part: the
/// entries above the diagonal shifted right by `P`.)
pub fn causal_mask<B: Backend>(t: usize, past: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
    let total = past + t;
    Tensor::<B, 2, Bool>::tril_mask([t, total], past as i64, device).reshape([1, 1, t, total])
}
