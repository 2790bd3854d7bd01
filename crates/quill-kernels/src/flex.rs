//! The fused kernels on Burn's Flex CPU backend, with and without autodiff: tensors are
//! recognised by type at run time, their `f32` storage handed to [`super::cpu`], and
//! under `Autodiff<Flex>` each kernel is one node of the graph with its own backward
//! pass.

use std::any::{Any, TypeId};
use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive, backend::Backend, ops::FloatTensor};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn_flex::{Flex, FlexTensor, Layout};

use super::cpu::decode::{self, Orientation, Packed};
use super::cpu::{self, AttentionDims};

/// The autodiff backend the trainer uses on Flex.
pub(super) type Tracked = Autodiff<Flex>;

/// `x` as a `U` when `T` is `U`, else `x` back.
fn cast<T: 'static, U: 'static>(x: T) -> Result<U, T> {
    if TypeId::of::<T>() != TypeId::of::<U>() {
        return Err(x);
    }
    let mut slot = Some(x);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => u.take().ok_or_else(|| unreachable!("the slot was filled")),
        None => unreachable!("T is U"),
    }
}

/// Whether `B` is Flex or `Autodiff<Flex>`.
pub(super) fn is_flex<B: Backend>() -> bool {
    [TypeId::of::<Flex>(), TypeId::of::<Tracked>()].contains(&TypeId::of::<B>())
}

/// A tensor of any backend, sorted by whether the fused kernels can take it.
pub(super) enum Route<B: Backend, const D: usize> {
    /// A Flex `f32` tensor, no autodiff.
    Plain(FlexTensor),
    /// A Flex `f32` tensor under `Autodiff<Flex>`.
    Tracked(FloatTensor<Tracked>),
    /// Anything else: the generic path.
    Other(Tensor<B, D>),
}

/// Sorts `x` (see [`Route`]).
pub(super) fn route<B: Backend, const D: usize>(x: Tensor<B, D>) -> Route<B, D> {
    if x.dtype() != DType::F32 {
        return Route::Other(x);
    }
    let x = match cast::<_, Tensor<Flex, D>>(x) {
        Ok(x) => return Route::Plain(x.into_primitive().tensor()),
        Err(x) => x,
    };
    match cast::<_, Tensor<Tracked, D>>(x) {
        Ok(x) => Route::Tracked(x.into_primitive().tensor()),
        Err(x) => Route::Other(x),
    }
}

/// Wraps a primitive of backend `F` (which the caller routed from `B`, so `F` is `B`).
pub(super) fn output<B: Backend, F: Backend, const D: usize>(
    primitive: F::FloatTensorPrimitive,
) -> Tensor<B, D> {
    let tensor = Tensor::<F, D>::from_primitive(TensorPrimitive::Float(primitive));
    cast(tensor).unwrap_or_else(|_| unreachable!("routed from this backend"))
}

/// The primitive of `x`, a tensor of backend `F` (the caller knows `B` is `F`: it
/// routed another tensor of `B` to `F`).
pub(super) fn primitive<B: Backend, F: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> F::FloatTensorPrimitive {
    let x: Tensor<F, D> = cast(x).unwrap_or_else(|_| unreachable!("routed from this backend"));
    x.into_primitive().tensor()
}

/// The Flex tensor behind `x` when `B` is plain Flex and `x` holds `f32`.
pub(super) fn plain_f32<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<FlexTensor> {
    let x = (x as &dyn Any).downcast_ref::<Tensor<Flex, D>>()?;
    (x.dtype() == DType::F32).then(|| x.clone().into_primitive().tensor())
}

/// The values of `x` as `f32` in row-major order (copied only when `x` is a strided
/// view or holds another dtype).
pub(super) fn values(x: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match x.as_slice::<f32>() {
        Some(values) => values.into(),
        None => x
            .to_contiguous()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("data converted to f32 reads back as f32")
            .into(),
    }
}

/// `len` values written by `write`, in a buffer that is not zero-filled first (the
/// kernels write each value of their outputs; see [`cpu::Output`]).
///
/// # Safety
/// `write` must write every value of the slice it is given.
unsafe fn written(len: usize, write: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    write(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `write` wrote every value (the caller's promise).
    unsafe { values.set_len(len) };
    values
}

/// A contiguous `f32` Flex tensor of `shape` holding `values`.
pub(super) fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// The shape of a Flex tensor.
fn shape(x: &FlexTensor) -> Shape {
    x.layout().shape().clone()
}

// ---------------------------------------------------------------- GELU

/// GELU forward on a Flex tensor.
pub(super) fn gelu(x: &FlexTensor) -> FlexTensor {
    let x_values = values(x);
    // SAFETY: `gelu_forward` writes every value of `y`.
    let y = unsafe { written(x_values.len(), |y| cpu::gelu_forward(&x_values, y)) };
    tensor(y, shape(x))
}

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor; // the input

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let (x_values, dy) = (values(&x), values(&dy));
            // SAFETY: `gelu_backward` writes every value of `dx`.
            let dx =
                unsafe { written(x_values.len(), |dx| cpu::gelu_backward(&x_values, &dy, dx)) };
            tensor(dx, shape(&x))
        });
    }
}

/// GELU under autodiff: one graph node.
pub(super) fn gelu_tracked(x: FloatTensor<Tracked>) -> FloatTensor<Tracked> {
    let y = gelu(&x.primitive);
    finish(GeluBackward, [&x], x.primitive.clone(), y)
}

// ---------------------------------------------------------------- LayerNorm

/// What LayerNorm's backward pass needs.
#[derive(Debug, Clone)]
struct LayerNormState {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: Arc<Vec<f32>>,
    rstd: Arc<Vec<f32>>,
}

/// LayerNorm forward over the last dimension; returns `y` and the backward state.
fn layer_norm_with_state(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    eps: f32,
) -> (FlexTensor, LayerNormState) {
    let rows = x.layout().num_elements() / gamma.layout().num_elements();
    let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
    let (x_values, gamma_values, beta) = (values(x), values(gamma), beta.map(values));
    let forward = |y: &mut [MaybeUninit<f32>]| {
        let beta = beta.as_deref();
        cpu::layer_norm_forward(&x_values, &gamma_values, beta, eps, y, &mut mean, &mut rstd)
    };
    // SAFETY: `layer_norm_forward` writes every value of `y`.
    let y = unsafe { written(x_values.len(), forward) };
    let state = LayerNormState {
        x: x.clone(),
        gamma: gamma.clone(),
        mean: Arc::new(mean),
        rstd: Arc::new(rstd),
    };
    (tensor(y, shape(x)), state)
}

/// LayerNorm forward on Flex tensors.
pub(super) fn layer_norm(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    eps: f32,
) -> FlexTensor {
    layer_norm_with_state(x, gamma, beta, eps).0
}

/// Parents: `x`, `γ` and, when `N` is 3, `β`.
#[derive(Debug)]
struct LayerNormBackward;

impl<const N: usize> Backward<Flex, N> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<LayerNormState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        to_parents(ops, grads, |s, dy| {
            let (x, gamma, dy) = (values(&s.x), values(&s.gamma), values(&dy));
            let mut params = (Vec::new(), Vec::new());
            let backward = |dx: &mut [MaybeUninit<f32>]| {
                params = cpu::layer_norm_backward(&x, &gamma, &s.mean, &s.rstd, &dy, dx);
            };
            // SAFETY: `layer_norm_backward` writes every value of `dx`.
            let dx = unsafe { written(x.len(), backward) };
            let (dgamma, dbeta) = params;
            let c = Shape::new([dgamma.len()]);
            [
                tensor(dx, shape(&s.x)),
                tensor(dgamma, c.clone()),
                tensor(dbeta, c),
            ]
        });
    }
}

/// The backward pass of a node with up to three parents: `f` maps the node's state
/// and output gradient to its parents' gradients, in order.
fn to_parents<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    f: impl FnOnce(S, FlexTensor) -> [FlexTensor; 3],
) {
    let dy = grads.consume::<Flex>(&ops.node);
    for (parent, grad) in ops.parents.into_iter().zip(f(ops.state, dy)) {
        if let Some(parent) = parent {
            grads.register::<Flex>(parent.id, grad);
        }
    }
}

/// LayerNorm under autodiff, one graph node whose parents are `x`, `γ` and `β`.
pub(super) fn layer_norm_tracked(
    x: FloatTensor<Tracked>,
    gamma: FloatTensor<Tracked>,
    beta: Option<FloatTensor<Tracked>>,
    eps: f32,
) -> FloatTensor<Tracked> {
    let (y, state) = layer_norm_with_state(
        &x.primitive,
        &gamma.primitive,
        beta.as_ref().map(|b| &b.primitive),
        eps,
    );
    match beta {
        Some(beta) => finish(LayerNormBackward, [&x, &gamma, &beta], state, y),
        None => finish(LayerNormBackward, [&x, &gamma], state, y),
    }
}

/// Registers `y` as the output of a node with `parents`, keeping `state` for its
/// backward pass when any parent needs a gradient.
fn finish<O: Backward<Flex, N>, const N: usize>(
    op: O,
    parents: [&FloatTensor<Tracked>; N],
    state: O::State,
    y: FlexTensor,
) -> FloatTensor<Tracked> {
    match op
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

// ---------------------------------------------------------------- cross-entropy

/// What cross-entropy's backward pass needs: the logits, each row's log-sum-exp and
/// the targets.
#[derive(Debug, Clone)]
struct CrossEntropyState {
    logits: FlexTensor,
    lse: Arc<Vec<f32>>,
    targets: Arc<Vec<usize>>,
}

/// Mean cross-entropy of `logits` `[N, V]` against `targets` (`N` classes, each `< V`):
/// the loss `[1]` and the state.
fn cross_entropy_with_state(
    logits: &FlexTensor,
    targets: Arc<Vec<usize>>,
) -> (FlexTensor, CrossEntropyState) {
    let mut lse = vec![0f32; targets.len()];
    let loss = cpu::cross_entropy_forward(&values(logits), &targets, &mut lse);
    let state = CrossEntropyState {
        logits: logits.clone(),
        lse: Arc::new(lse),
        targets,
    };
    (tensor(vec![loss], Shape::new([1])), state)
}

/// Mean cross-entropy on Flex tensors.
pub(super) fn cross_entropy(logits: &FlexTensor, targets: Arc<Vec<usize>>) -> FlexTensor {
    cross_entropy_with_state(logits, targets).0
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = CrossEntropyState;

    fn backward(self, ops: Ops<CrossEntropyState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dloss| {
            let (logits, dloss) = (values(&s.logits), values(&dloss)[0]);
            let backward = |d: &mut [MaybeUninit<f32>]| {
                cpu::cross_entropy_backward(&logits, &s.targets, &s.lse, dloss, d)
            };
            // SAFETY: `cross_entropy_backward` writes every value of `d`.
            let dlogits = unsafe { written(logits.len(), backward) };
            tensor(dlogits, shape(&s.logits))
        });
    }
}

/// Mean cross-entropy under autodiff: one graph node whose parent is the logits.
pub(super) fn cross_entropy_tracked(
    logits: FloatTensor<Tracked>,
    targets: Arc<Vec<usize>>,
) -> FloatTensor<Tracked> {
    let (loss, state) = cross_entropy_with_state(&logits.primitive, targets);
    finish(CrossEntropyBackward, [&logits], state, loss)
}

// ---------------------------------------------------------------- Linear

/// What a linear layer's backward pass needs: its input and weight.
#[derive(Debug, Clone)]
struct LinearState {
    x: FlexTensor,
    w: FlexTensor,
}

/// `x·W + b` for `x` `[n, in]`, `W` `[in, out]`: `[n, out]`. A `W` that is a strided
/// view of `f32` values (a transposed table: the tied LM head) is read in place.
pub(super) fn linear(x: &FlexTensor, w: &FlexTensor, b: Option<&FlexTensor>) -> FlexTensor {
    let [d_in, d_out] = shape(w).dims::<2>();
    let rows = x.layout().num_elements() / d_in;
    let b = b.map(values);
    let x = values(x);
    let forward = |y: &mut [MaybeUninit<f32>]| match strided_f32(w) {
        Some(w) => cpu::linear_forward_strided(&x, w, b.as_deref(), y),
        None => cpu::linear_forward(&x, &values(w), b.as_deref(), d_in, y),
    };
    // SAFETY: the Linear kernels write every value of `y`.
    let y = unsafe { written(rows * d_out, forward) };
    tensor(y, Shape::new([rows, d_out]))
}

/// A 2-D `f32` tensor with non-negative strides, as a weight read in place.
fn strided_f32(w: &FlexTensor) -> Option<cpu::StridedWeight<'_>> {
    let layout = w.layout();
    let [d_in, d_out] = layout.shape().dims::<2>();
    let (rs, cs) = match layout.strides() {
        &[rs, cs] if rs >= 0 && cs >= 0 && w.dtype() == DType::F32 => (rs as usize, cs as usize),
        _ => return None,
    };
    let data = w.storage::<f32>().get(layout.start_offset()..)?;
    Some(cpu::StridedWeight {
        data,
        d_in,
        d_out,
        rs,
        cs,
    })
}

/// Parents: `x`, `W` and, when `N` is 3, `b`.
#[derive(Debug)]
struct LinearBackward;

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<LinearState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        to_parents(ops, grads, |s, dy| {
            let [d_in, d_out] = shape(&s.w).dims::<2>();
            let (x, w, dy) = (values(&s.x), values(&s.w), values(&dy));
            let mut db = Vec::new();
            // SAFETY: `linear_backward` writes every value of `dx` and `dw`.
            let (dx, dw) = unsafe {
                let mut dw = Vec::new();
                let dx = written(x.len(), |dx| {
                    dw = written(d_in * d_out, |dw| {
                        db = cpu::linear_backward(&x, &w, &dy, d_in, dx, dw);
                    });
                });
                (dx, dw)
            };
            [
                tensor(dx, shape(&s.x)),
                tensor(dw, shape(&s.w)),
                tensor(db, Shape::new([d_out])),
            ]
        });
    }
}

/// A linear layer under autodiff, one graph node whose parents are `x`, `W` and `b`.
pub(super) fn linear_tracked(
    x: FloatTensor<Tracked>,
    w: FloatTensor<Tracked>,
    b: Option<FloatTensor<Tracked>>,
) -> FloatTensor<Tracked> {
    let y = linear(&x.primitive, &w.primitive, b.as_ref().map(|b| &b.primitive));
    let state = LinearState {
        x: x.primitive.clone(),
        w: w.primitive.clone(),
    };
    match b {
        Some(b) => finish(LinearBackward, [&x, &w, &b], state, y),
        None => finish(LinearBackward, [&x, &w], state, y),
    }
}

// ---------------------------------------------------------------- causal attention

/// What attention's backward pass needs: the input and each row's log-sum-exp.
#[derive(Debug, Clone)]
struct AttentionState {
    qkv: FlexTensor,
    lse: Arc<Vec<f32>>,
    dims: AttentionDims,
}

/// Causal attention forward on a `[B, T, 3C]` Flex tensor: `[B, T, C]` and the state.
fn attention_with_state(qkv: &FlexTensor, n_head: usize) -> (FlexTensor, AttentionState) {
    let [b, t, c3] = shape(qkv).dims::<3>();
    let dims = AttentionDims {
        t,
        c: c3 / 3,
        n_head,
    };
    let (qkv_values, mut lse) = (values(qkv), vec![0f32; b * n_head * t]);
    let forward =
        |y: &mut [MaybeUninit<f32>]| cpu::attention_forward(&qkv_values, dims, y, &mut lse);
    // SAFETY: `attention_forward` writes every value of `y` (each head its columns).
    let y = unsafe { written(b * t * dims.c, forward) };
    let state = AttentionState {
        qkv: qkv.clone(),
        lse: Arc::new(lse),
        dims,
    };
    (tensor(y, Shape::new([b, t, dims.c])), state)
}

/// Causal attention forward on Flex tensors.
pub(super) fn attention(qkv: &FlexTensor, n_head: usize) -> FlexTensor {
    attention_with_state(qkv, n_head).0
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<AttentionState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let (qkv, dy) = (values(&s.qkv), values(&dy));
            let backward = |dqkv: &mut [MaybeUninit<f32>]| {
                cpu::attention_backward(&qkv, &s.lse, &dy, s.dims, dqkv)
            };
            // SAFETY: `attention_backward` writes every value of `dqkv` (each head its
            // columns of q, k and v).
            let dqkv = unsafe { written(qkv.len(), backward) };
            tensor(dqkv, shape(&s.qkv))
        });
    }
}

/// Causal attention under autodiff: one graph node.
pub(super) fn attention_tracked(qkv: FloatTensor<Tracked>, n_head: usize) -> FloatTensor<Tracked> {
    let (y, state) = attention_with_state(&qkv.primitive, n_head);
    finish(AttentionBackward, [&qkv], state, y)
}

// ---------------------------------------------------------------- rotary positions

/// Where the rows of a rotary call sit: the attention shape and the first position.
#[derive(Debug, Clone, Copy)]
struct RotaryDims {
    dims: AttentionDims,
    past: usize,
    base: f64,
}

/// Rotary forward (or, `inverse`, its transpose) on a `[B, T, 3C]` Flex tensor.
fn rotary_pass(qkv: &FlexTensor, r: RotaryDims, inverse: bool) -> FlexTensor {
    let tables = cpu::rotary_tables(r.dims.t, r.past, r.dims.c / r.dims.n_head, r.base);
    let mut out = vec![0f32; qkv.layout().num_elements()];
    cpu::rotary(
        &values(qkv),
        r.dims,
        (&tables.0, &tables.1),
        inverse,
        &mut out,
    );
    tensor(out, shape(qkv))
}

fn rotary_dims(qkv: &FlexTensor, n_head: usize, past: usize, base: f64) -> RotaryDims {
    let [_, t, c3] = shape(qkv).dims::<3>();
    let dims = AttentionDims {
        t,
        c: c3 / 3,
        n_head,
    };
    RotaryDims { dims, past, base }
}

/// Rotary positions of the queries and keys on Flex tensors.
pub(super) fn rotary(qkv: &FlexTensor, n_head: usize, past: usize, base: f64) -> FlexTensor {
    rotary_pass(qkv, rotary_dims(qkv, n_head, past, base), false)
}

#[derive(Debug)]
struct RotaryBackward;

impl Backward<Flex, 1> for RotaryBackward {
    type State = RotaryDims;

    fn backward(self, ops: Ops<RotaryDims, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let r = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| rotary_pass(&dy, r, true));
    }
}

/// Rotary positions under autodiff: one graph node, whose backward pass rotates the
/// gradient back.
pub(super) fn rotary_tracked(
    qkv: FloatTensor<Tracked>,
    n_head: usize,
    past: usize,
    base: f64,
) -> FloatTensor<Tracked> {
    let r = rotary_dims(&qkv.primitive, n_head, past, base);
    let y = rotary_pass(&qkv.primitive, r, false);
    finish(RotaryBackward, [&qkv], r, y)
}

// ---------------------------------------------------------------- Newton–Schulz

/// Muon's orthogonalisation of `[rows, cols]` Flex tensors, spread over the cores.
pub(super) fn newton_schulz_all(
    gs: &[FlexTensor],
    coeffs: (f32, f32, f32),
    steps: usize,
) -> Vec<FlexTensor> {
    let values: Vec<_> = gs.iter().map(values).collect();
    let matrices: Vec<(&[f32], usize, usize)> = (gs.iter().zip(&values))
        .map(|(g, v)| {
            let [rows, cols] = shape(g).dims::<2>();
            (&**v, rows, cols)
        })
        .collect();
    let outs = cpu::newton_schulz_all(&matrices, coeffs, steps);
    (outs.into_iter().zip(gs))
        .map(|(out, g)| tensor(out, shape(g)))
        .collect()
}

// ---------------------------------------------------------------- narrow weights

/// A plain Flex weight stored narrower than `f32` for inference: `bf16` or `f16`
/// values, or 8-bit values with per-block scales (Burn's quantized tensors).
pub(super) enum Narrow {
    /// `bf16` or `f16`.
    Float(FlexTensor),
    /// 8-bit values (`Q8S` or `Q8F`, stored natively) with their scales.
    Quantized(burn_flex::FlexQTensor),
}

/// `w` as a [`Narrow`] weight when `B` is plain Flex and `w` holds `bf16`, `f16` or
/// 8-bit values; `w` back otherwise.
pub(super) fn narrow<B: Backend, const D: usize>(w: Tensor<B, D>) -> Result<Narrow, Tensor<B, D>> {
    if !matches!(w.dtype(), DType::BF16 | DType::F16 | DType::QFloat(_)) {
        return Err(w);
    }
    let w: Tensor<Flex, D> = cast(w)?;
    Ok(match w.into_primitive() {
        TensorPrimitive::Float(t) => Narrow::Float(t),
        TensorPrimitive::QFloat(q) => Narrow::Quantized(q),
    })
}

impl Narrow {
    /// The weight's `[rows, cols]`.
    fn dims(&self) -> [usize; 2] {
        match self {
            Narrow::Float(t) => shape(t).dims::<2>(),
            Narrow::Quantized(q) => shape(q.tensor()).dims::<2>(),
        }
    }

    /// The row-major values the decoding kernels read, when the storage is contiguous
    /// and of a kind they know.
    fn packed(&self) -> Option<Packed<'_>> {
        use burn::tensor::quantization::{QuantLevel, QuantStore, QuantValue};
        match self {
            Narrow::Float(t) => match t.dtype() {
                DType::BF16 => t.as_slice::<half::bf16>().map(Packed::Bf16),
                DType::F16 => t.as_slice::<half::f16>().map(Packed::F16),
                _ => None,
            },
            Narrow::Quantized(q) => {
                let scheme = burn::tensor::quantization::QTensorPrimitive::scheme(q);
                let values = q.tensor().as_slice::<i8>()?;
                let block = match scheme.level {
                    QuantLevel::Block(size) => size.num_elements(),
                    QuantLevel::Tensor => values.len().max(1),
                };
                let known = matches!(scheme.value, QuantValue::Q8S | QuantValue::Q8F)
                    && scheme.store == QuantStore::Native;
                known.then_some(Packed::Q8 {
                    values,
                    scales: q.scales(),
                    block,
                })
            }
        }
    }
}

/// `x·W + b` for `x` `[n, in]` and a narrow `W`, stored `[in, out]` or (`OutIn`) `[out,
/// in]`: `[n, out]`, or `None` when the kernels cannot read `W`'s storage. A few rows
/// stream `W` once ([`decode::product`]); more are a matrix product on `W` widened to
/// `f32` first.
pub(super) fn linear_narrow(
    x: &FlexTensor,
    w: &Narrow,
    orientation: Orientation,
    b: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    let packed = w.packed()?;
    let [d_in, d_out] = match orientation {
        Orientation::InOut => w.dims(),
        Orientation::OutIn => {
            let [out, d_in] = w.dims();
            [d_in, out]
        }
    };
    let rows = x.layout().num_elements() / d_in;
    let x = values(x);
    let mut y = vec![0f32; rows * d_out];
    if rows <= cpu::FEW_ROWS {
        decode::product(&mut y, &x, d_in, packed, d_out, orientation);
    } else {
        let mut wide = vec![0f32; packed.len()];
        decode::widen_all(packed, &mut wide);
        let weight = match orientation {
            Orientation::InOut => cpu::StridedWeight::rows(&wide, d_in, d_out),
            Orientation::OutIn => cpu::StridedWeight {
                data: &wide,
                d_in,
                d_out,
                rs: 1,
                cs: d_in,
            },
        };
        cpu::linear_forward_strided(&x, weight, None, &mut y);
    }
    if let Some(b) = b {
        let b = values(b);
        for row in y.chunks_mut(d_out) {
            row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b);
        }
    }
    Some(tensor(y, Shape::new([rows, d_out])))
}

/// Rows `ids` of a narrow `[rows, c]` table, widened to `f32`: `[ids.len(), c]`, or
/// `None` when the kernels cannot read its storage or an id is not a row.
pub(super) fn rows_narrow(table: &Narrow, ids: &[usize]) -> Option<FlexTensor> {
    let packed = table.packed()?;
    let [n, c] = table.dims();
    if ids.iter().any(|&id| id >= n) {
        return None;
    }
    Some(tensor(
        decode::rows(packed, c, ids),
        Shape::new([ids.len(), c]),
    ))
}

/// A narrow weight back as the tensor it came from (of backend `B`, which the caller
/// routed to plain Flex).
pub(super) fn from_narrow<B: Backend>(w: Narrow) -> Tensor<B, 2> {
    let primitive = match w {
        Narrow::Float(t) => TensorPrimitive::Float(t),
        Narrow::Quantized(q) => TensorPrimitive::QFloat(q),
    };
    cast(Tensor::<Flex, 2>::from_primitive(primitive))
        .unwrap_or_else(|_| unreachable!("routed from this backend"))
}
