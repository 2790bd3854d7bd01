//! AdamW with decay groups, global-norm gradient clipping and gradient accumulation,
//! matching PyTorch's `torch.optim.AdamW` and `clip_grad_norm_`.
//!
//! Burn's own AdamW has other defaults and clips per tensor; this one follows nanoGPT:
//!
//! - **Decay groups.** Weight decay applies to Linear weights only; never to biases or
//!   LayerNorm parameters. Embedding tables do not decay (minGPT's rule: they are lookup
//!   tables), except a tied `wte`, which is also the LM head's weight and decays like
//!   the other Linear weights.
//! - **Clipping.** One norm over all gradients; every gradient is scaled by
//!   `min(1, clip / (norm + 1e-6))`.
//! - **Accumulation.** Gradients of `grad_accum` micro-batches are summed in
//!   [`GradBuffer`] and divided by their count before the step.
//!
//! - **Muon.** Optionally ([`AdamW::with_muon`]), the hidden matrices (Linear weights
//!   inside blocks) are updated by [`crate::muon`] instead, at their own learning rate
//!   and without weight decay; AdamW keeps the rest.
//!
//! Names and decay groups are the model's own declaration
//! ([`LanguageModel::param_specs`]); state is keyed by parameter name, so it saves and
//! loads with checkpoints.

use std::collections::BTreeMap;
use std::mem::MaybeUninit;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, ElementConversion, FloatDType, Tensor, TensorData};
use quill_model::LanguageModel;
use quill_model::params::{NamedTensor, ParamSpecs};
use rayon::prelude::*;

use crate::TrainError;

/// Runs `f` (vectorised) on the host `f32` values of `tensors` where the fused CPU
/// kernels serve the backend (feature `fused-cpu`, Flex); `None` elsewhere, where the
/// caller uses tensor operations.
fn on_host<B: Backend, const N: usize, R>(
    tensors: [&Tensor<B, 1>; N],
    f: impl FnOnce([&[f32]; N]) -> R,
) -> Option<R> {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::with_f32_values(tensors, |values| {
        quill_kernels::vectorized(
            #[inline(always)]
            || f(values),
        )
    });
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _ = (tensors, f);
        None
    }
}

/// Runs `f` compiled for the CPU's widest vector unit where the fused kernels are
/// built in (see `quill_kernels::vectorized`), else as it is.
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::vectorized(f);
    #[cfg(not(feature = "fused-cpu"))]
    f()
}

/// Summed gradients by parameter name, flattened, on the inner (non-autodiff) backend.
#[derive(Debug, Clone)]
pub struct GradBuffer<B: Backend> {
    grads: BTreeMap<String, Tensor<B, 1>>,
    micro_batches: usize,
}

impl<B: Backend> Default for GradBuffer<B> {
    fn default() -> Self {
        GradBuffer {
            grads: BTreeMap::new(),
            micro_batches: 0,
        }
    }
}

impl<B: Backend> GradBuffer<B> {
    /// Adds the gradients of one micro-batch's backward pass.
    pub fn accumulate<AB>(&mut self, model: &LanguageModel<AB>, grads: &AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        struct Collect<'a, AB: AutodiffBackend> {
            specs: ParamSpecs,
            grads: &'a AB::Gradients,
            out: &'a mut BTreeMap<String, Tensor<AB::InnerBackend, 1>>,
        }
        impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<'_, AB> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                let Some(grad) = param.val().grad(self.grads) else {
                    return;
                };
                let n = grad.shape().num_elements();
                let grad = grad.reshape([n]);
                let name = declared(&self.specs, &param.id).name.clone();
                add_to(self.out, name, grad);
            }
        }
        model.visit(&mut Collect::<AB> {
            specs: model.param_specs(),
            grads,
            out: &mut self.grads,
        });
        self.micro_batches += 1;
    }

    /// Adds one micro-batch whose rows were split into equal shards: `shards` holds one
    /// buffer per shard, each with that shard's gradients; their mean, taken in the
    /// order given, counts as one micro-batch.
    pub fn accumulate_shards(&mut self, shards: Vec<GradBuffer<B>>) {
        let n = shards.len();
        let mut parts: BTreeMap<String, Vec<Tensor<B, 1>>> = BTreeMap::new();
        for shard in shards {
            for (name, grad) in shard.grads {
                parts.entry(name).or_default().push(grad);
            }
        }
        for (name, grads) in parts {
            add_to(&mut self.grads, name, mean(grads, n));
        }
        self.micro_batches += 1;
    }

    /// Replaces the gradients by their sums over the `ranks` processes of a
    /// data-parallel run, as one flat tensor that `sum` all-reduces. `extra` values ride
    /// along and come back summed. The mean gradient then averages every rank's
    /// micro-batches, as one process with all of them would.
    pub fn sum_over_ranks(
        &mut self,
        ranks: usize,
        extra: &[f32],
        sum: impl FnOnce(Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError>,
    ) -> Result<Vec<f32>, TrainError> {
        let device = match self.grads.values().next() {
            Some(g) => g.device(),
            None => Default::default(),
        };
        let lengths: Vec<usize> = self.grads.values().map(|g| g.dims()[0]).collect();
        let mut flat: Vec<Tensor<B, 1>> = self.grads.values().cloned().collect();
        flat.push(Tensor::from_data(
            TensorData::new(extra.to_vec(), [extra.len()]),
            &device,
        ));
        let summed = sum(Tensor::cat(flat, 0))?;
        let mut start = 0;
        for (grad, len) in self.grads.values_mut().zip(lengths) {
            *grad = summed.clone().slice(start..start + len);
            start += len;
        }
        let extra = summed.slice(start..start + extra.len()).into_data();
        self.micro_batches *= ranks;
        extra
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Parallel(format!("{e:?}")))
    }

    /// The mean gradient of the parameter called `name` (flattened, in quill's layout),
    /// if it has one.
    pub fn gradient(&self, name: &str) -> Option<Tensor<B, 1>> {
        let sum = self.grads.get(name)?.clone();
        Some(sum / self.micro_batches.max(1) as f64)
    }

    /// The global L2 norm of the mean gradient.
    pub fn global_norm(&self) -> f64 {
        // One parameter per rayon task; the totals are added in a fixed order.
        let grads: Vec<&Tensor<B, 1>> = self.grads.values().collect();
        let squares_on_host: Option<Vec<f64>> = (grads.par_iter())
            .map(|g| {
                on_host(
                    [g],
                    #[inline(always)]
                    |[g]| sum_of_squares(g),
                )
            })
            .collect();
        if let Some(squares) = squares_on_host {
            return squares.iter().sum::<f64>().sqrt() / self.micro_batches.max(1) as f64;
        }
        let squares: Vec<Tensor<B, 1>> = self
            .grads
            .values()
            .map(|g| g.clone().powi_scalar(2).sum())
            .collect();
        if squares.is_empty() {
            return 0.0;
        }
        let total: f64 = Tensor::cat(squares, 0).sum().into_scalar().elem();
        total.sqrt() / self.micro_batches.max(1) as f64
    }
}

/// `Σ x²` in `f64`, in eight partial sums so that the loop vectorises.
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let x8 = x.chunks_exact(8);
    let tail: f64 = x8.remainder().iter().map(|&v| v as f64 * v as f64).sum();
    for x in x8 {
        for l in 0..8 {
            acc[l] += x[l] as f64 * x[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(g₀ + g₁ + …) / n`, summed in order; on the host in one parallel pass per term
/// where the fused kernels serve the backend (the same values as tensor operations).
fn mean<B: Backend>(grads: Vec<Tensor<B, 1>>, n: usize) -> Tensor<B, 1> {
    let mut grads = grads.into_iter();
    let Some(first) = grads.next() else {
        unreachable!("every shard has each gradient")
    };
    let last = grads.len();
    grads.enumerate().fold(first, |sum, (i, g)| {
        let divisor = (i + 1 == last).then_some(n as f32);
        let device = sum.device();
        let fused = on_host([&sum, &g], |inputs| {
            let fill = |[a, b]: [&[f32]; 2], [out]: [&mut [MaybeUninit<f32>]; 1]| {
                for ((out, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    out.write(match divisor {
                        Some(n) => (a + b) / n,
                        None => a + b,
                    });
                }
            };
            // SAFETY: `fill` writes every value of its chunk (its inputs are as long).
            let [sum] = unsafe { par_fill(inputs, fill) };
            sum
        });
        match (fused, divisor) {
            (Some(sum), _) => {
                let len = sum.len();
                Tensor::from_data(TensorData::new(sum, [len]), &device)
            }
            (None, Some(n)) => (sum + g) / n as f64,
            (None, None) => sum + g,
        }
    })
}

/// `N` vectors as long as the `I` inputs, written in chunks of [`UPDATE_CHUNK`] on
/// rayon's threads by `fill(inputs, outputs)`: the same chunk of each input and output.
/// Each call runs vectorised. No zero fill first: the caller's loop writes every value.
///
/// # Panics
/// If the inputs differ in length.
///
/// # Safety
/// `fill` must write every value of the output chunks it is given.
unsafe fn par_fill<const I: usize, const N: usize>(
    inputs: [&[f32]; I],
    fill: impl Fn([&[f32]; I], [&mut [MaybeUninit<f32>]; N]) + Sync,
) -> [Vec<f32>; N] {
    const {
        assert!(
            I > 0 && N > 0,
            "par_fill splits an input and an output into chunks"
        )
    };
    let len = inputs[0].len();
    assert!(
        inputs.iter().all(|x| x.len() == len),
        "the inputs of an element-wise pass have one length"
    );
    let mut out = [(); N].map(|_| Vec::with_capacity(len));
    let mut outputs = out
        .each_mut()
        .map(|x| x.spare_capacity_mut()[..len].chunks_mut(UPDATE_CHUNK));
    // The chunks side by side (four for the `cpu` preset's largest matrix, some
    // thousands for GPT-2's embedding), gathered first, then written in parallel.
    let chunks: Vec<_> = (0..len.div_ceil(UPDATE_CHUNK))
        .map(|_| {
            outputs
                .each_mut()
                .map(|x| x.next().expect("outputs of `len` values"))
        })
        .collect();
    chunks.into_par_iter().enumerate().for_each(|(i, chunk)| {
        let range = i * UPDATE_CHUNK..i * UPDATE_CHUNK + chunk[0].len();
        let inputs = inputs.map(|x| &x[range.clone()]);
        vectorized(
            #[inline(always)]
            || fill(inputs, chunk),
        )
    });
    for x in &mut out {
        // SAFETY: `fill` wrote each of the first `len` values.
        unsafe { x.set_len(len) };
    }
    out
}

/// Adds `grad` to the sum kept under `name` (or starts it).
fn add_to<B: Backend>(sums: &mut BTreeMap<String, Tensor<B, 1>>, name: String, grad: Tensor<B, 1>) {
    let sum = match sums.remove(&name) {
        Some(previous) => previous + grad,
        None => grad,
    };
    sums.insert(name, sum);
}

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// Learning rate.
    pub lr: f64,
    /// Global-norm clip (0 disables).
    pub grad_clip: f64,
    /// Muon's learning rate for the hidden matrices (unused without Muon).
    pub muon_lr: f64,
}

/// AdamW (decoupled weight decay, bias-corrected moments), as PyTorch computes it; with
/// Muon for the hidden matrices when asked.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    step: u64,
    moments: BTreeMap<String, (Tensor<B, 1>, Tensor<B, 1>)>,
    /// Muon's momentum coefficient, when Muon updates the hidden matrices.
    muon_momentum: Option<f64>,
    /// Muon's momentum buffers, flattened, by parameter name.
    momentum: BTreeMap<String, Tensor<B, 1>>,
}

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const MOMENTUM: &str = "momentum_buffer.";

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer.
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            moments: BTreeMap::new(),
            muon_momentum: None,
            momentum: BTreeMap::new(),
        }
    }

    /// Updates the hidden matrices with Muon (momentum `momentum`) instead of AdamW.
    pub fn with_muon(mut self, momentum: f64) -> Self {
        self.muon_momentum = Some(momentum);
        self
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Updates every parameter of `model` that has a gradient in `grads`; returns the
    /// model and the gradient norm before clipping.
    pub fn step<AB>(
        &mut self,
        model: LanguageModel<AB>,
        grads: GradBuffer<B>,
        options: StepOptions,
    ) -> (LanguageModel<AB>, f64)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let norm = grads.global_norm();
        let mut scale = 1.0 / grads.micro_batches.max(1) as f64;
        if options.grad_clip > 0.0 {
            scale *= (options.grad_clip / (norm + 1e-6)).min(1.0);
        }
        self.step += 1;
        let specs = model.param_specs();
        let mut grads = grads.grads;
        let muon = match self.muon_momentum {
            Some(momentum) => {
                self.muon_updates(&model, &specs, &mut grads, scale, momentum, options.muon_lr)
            }
            None => BTreeMap::new(),
        };
        let mut update = Update {
            optim: self,
            specs,
            grads,
            muon,
            scale,
            lr: options.lr,
        };
        (model.map(&mut update), norm)
    }

    /// Muon's updates of the hidden matrices of `model`, by name, flattened: each
    /// gradient (times `scale`) taken out of `grads` into its momentum buffer, the
    /// Nesterov directions orthogonalised together ([`crate::muon::orthogonalize_all`]),
    /// times `lr·√max(1, out/in)`.
    fn muon_updates<AB>(
        &mut self,
        model: &LanguageModel<AB>,
        specs: &ParamSpecs,
        grads: &mut BTreeMap<String, Tensor<B, 1>>,
        scale: f64,
        momentum: f64,
        lr: f64,
    ) -> BTreeMap<String, Tensor<B, 1>>
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let mut names = Vec::new();
        let mut directions = Vec::new();
        for (name, dims) in hidden_matrices(model, specs) {
            let Some(g) = grads.remove(&name) else {
                continue;
            };
            let g = to_f32(g) * scale;
            let buf = (self.momentum.remove(&name)).unwrap_or_else(|| g.zeros_like());
            let (direction, buf) = crate::muon::nesterov(g, buf, momentum);
            self.momentum.insert(name.clone(), buf);
            directions.push(direction.reshape(dims));
            names.push((name, dims));
        }
        let orthogonal = crate::muon::orthogonalize_all(directions);
        (names.into_iter().zip(orthogonal))
            .map(|((name, [d_in, d_out]), o)| {
                let step = o * (lr * crate::muon::shape_factor(d_in, d_out));
                (name, step.reshape([d_in * d_out]))
            })
            .collect()
    }

    /// The moments as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`, and
    /// Muon's `momentum_buffer.<param>`).
    pub fn state(&self) -> Vec<NamedTensor> {
        let host = |name: String, t: &Tensor<B, 1>| NamedTensor {
            name,
            shape: t.dims().to_vec(),
            values: t.to_data().convert::<f32>().to_vec().expect("f32 data"),
        };
        self.moments
            .iter()
            .flat_map(|(name, (m, v))| {
                [
                    host(format!("{EXP_AVG}{name}"), m),
                    host(format!("{EXP_AVG_SQ}{name}"), v),
                ]
            })
            .chain((self.momentum.iter()).map(|(name, buf)| host(format!("{MOMENTUM}{name}"), buf)))
            .collect()
    }

    /// Restores moments saved by [`AdamW::state`] and the step count. `lengths` are
    /// the model's parameters' sizes by name ([`param_lengths`]): every saved moment
    /// must belong to one of them and have its size.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, NamedTensor>,
        step: u64,
        lengths: &BTreeMap<String, usize>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let bad = |reason: String| TrainError::OptimizerState(reason);
        for (key, t) in tensors {
            let name = [MOMENTUM, EXP_AVG, EXP_AVG_SQ]
                .iter()
                .find_map(|prefix| key.strip_prefix(prefix))
                .unwrap_or(key);
            match lengths.get(name) {
                Some(&n) if n == t.values.len() => {}
                Some(&n) => {
                    return Err(bad(format!(
                        "{key} has {} values, but the parameter {name} has {n}",
                        t.values.len()
                    )));
                }
                None => return Err(bad(format!("{key} belongs to no parameter of the model"))),
            }
        }
        let upload = |t: &NamedTensor| {
            Tensor::<B, 1>::from_data(TensorData::new(t.values.clone(), [t.values.len()]), device)
        };
        let upload = |t: &NamedTensor| to_f32(upload(t));
        self.moments.clear();
        self.momentum.clear();
        for (key, m) in tensors {
            if let Some(name) = key.strip_prefix(MOMENTUM) {
                if self.muon_momentum.is_none() {
                    return Err(bad(format!(
                        "{key} is Muon's, and this run does not use Muon"
                    )));
                }
                self.momentum.insert(name.to_string(), upload(m));
                continue;
            }
            let Some(name) = key.strip_prefix(EXP_AVG) else {
                if !key.starts_with(EXP_AVG_SQ) {
                    return Err(bad(format!("unexpected tensor {key}")));
                }
                continue;
            };
            let v = tensors
                .get(&format!("{EXP_AVG_SQ}{name}"))
                .ok_or_else(|| bad(format!("missing tensor {EXP_AVG_SQ}{name}")))?;
            self.moments
                .insert(name.to_string(), (upload(m), upload(v)));
        }
        self.step = step;
        Ok(())
    }
}

/// The model's declaration of a parameter it holds.
fn declared<'a>(
    specs: &'a ParamSpecs,
    id: &burn::module::ParamId,
) -> &'a quill_model::params::ParamSpec {
    specs.get(id).expect("the model declares every parameter")
}

/// `t` in f32 (no work when it already is).
fn to_f32<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

/// Values per rayon task in the fused AdamW update: small enough that a 128-wide
/// model's matrices are shared by the cores, large enough that a task outweighs its
/// cost.
const UPDATE_CHUNK: usize = 1 << 14;

/// One AdamW step's constants for one parameter, as `f32` (the precision of the
/// update).
#[derive(Debug, Clone, Copy)]
struct Hyper {
    /// Gradient scale: 1 / micro-batches, times the clipping coefficient.
    scale: f32,
    beta1: f32,
    beta2: f32,
    /// `1 − lr·weight_decay` for decaying parameters, else 1.
    decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    sqrt_bias_correction2: f32,
    eps: f32,
}

impl Hyper {
    /// The update in Burn tensor operations: `(p, m, v)` after the step.
    fn update_tensors<B: Backend>(
        &self,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        m: Tensor<B, 1>,
        v: Tensor<B, 1>,
    ) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
        let g = g * self.scale;
        let m = m * self.beta1 + g.clone() * (1.0 - self.beta1);
        let v = v * self.beta2 + g.powi_scalar(2) * (1.0 - self.beta2);
        let denom = v.clone().sqrt() / self.sqrt_bias_correction2 + self.eps;
        let p = p * self.decay - m.clone() / denom * self.step_size;
        (p, m, v)
    }

    /// The same update in one pass over `f32` values (Flex's fast path): `[p, m, v]`.
    /// Chunks of [`UPDATE_CHUNK`] values run on rayon's threads, each vectorised.
    fn update(&self, p: &[f32], g: &[f32], m: &[f32], v: &[f32]) -> [Vec<f32>; 3] {
        // SAFETY: `update_chunk` writes every value of its chunks (the inputs are as long).
        unsafe {
            par_fill([p, g, m, v], |inputs, outputs| {
                self.update_chunk(outputs, inputs)
            })
        }
    }

    /// [`Hyper::update`] on one chunk: `[p, m, v]` after the step, from `[p, g, m, v]`,
    /// writing every value of the outputs.
    #[inline(always)]
    fn update_chunk(&self, [p2, m2, v2]: [&mut [MaybeUninit<f32>]; 3], [p, g, m, v]: [&[f32]; 4]) {
        let outputs = p2.iter_mut().zip(m2.iter_mut()).zip(v2.iter_mut());
        let inputs = p.iter().zip(g).zip(m.iter().zip(v));
        for (((p2, m2), v2), ((&p, &g), (&m, &v))) in outputs.zip(inputs) {
            let g = g * self.scale;
            let m = m * self.beta1 + g * (1.0 - self.beta1);
            let v = v * self.beta2 + g * g * (1.0 - self.beta2);
            let denom = v.sqrt() / self.sqrt_bias_correction2 + self.eps;
            p2.write(p * self.decay - m / denom * self.step_size);
            m2.write(m);
            v2.write(v);
        }
    }
}

/// The hidden matrices of `model` (see [`quill_model::params::ParamSpec::hidden`]): name
/// and `[in, out]` shape.
/// The size of each of `model`'s parameters, by name.
pub fn param_lengths<B: Backend>(model: &LanguageModel<B>) -> BTreeMap<String, usize> {
    struct Lengths {
        specs: ParamSpecs,
        out: BTreeMap<String, usize>,
    }
    impl<B: Backend> ModuleVisitor<B> for Lengths {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let name = declared(&self.specs, &param.id).name.clone();
            self.out.insert(name, param.val().shape().num_elements());
        }
    }
    let mut lengths = Lengths {
        specs: model.param_specs(),
        out: BTreeMap::new(),
    };
    model.visit(&mut lengths);
    lengths.out
}

fn hidden_matrices<AB: AutodiffBackend>(
    model: &LanguageModel<AB>,
    specs: &ParamSpecs,
) -> Vec<(String, [usize; 2])> {
    struct Hidden<'a> {
        specs: &'a ParamSpecs,
        out: Vec<(String, [usize; 2])>,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Hidden<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let spec = declared(self.specs, &param.id);
            if spec.hidden && D == 2 {
                let dims = param.val().dims();
                self.out.push((spec.name.clone(), [dims[0], dims[1]]));
            }
        }
    }
    let mut hidden = Hidden {
        specs,
        out: Vec::new(),
    };
    model.visit(&mut hidden);
    hidden.out
}

struct Update<'a, B: Backend> {
    optim: &'a mut AdamW<B>,
    specs: ParamSpecs,
    grads: BTreeMap<String, Tensor<B, 1>>,
    /// Muon's updates of the hidden matrices, subtracted as they are.
    muon: BTreeMap<String, Tensor<B, 1>>,
    scale: f64,
    lr: f64,
}

impl<B: Backend, AB: AutodiffBackend<InnerBackend = B>> ModuleMapper<AB> for Update<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let spec = declared(&self.specs, &id);
        let (name, decay) = (spec.name.clone(), spec.decays);
        let (shape, dtype) = (tensor.shape(), tensor.dtype());
        let flat = |t: Tensor<AB, D>| to_f32(t.inner().reshape([shape.num_elements()])); // [n]
        if let Some(step) = self.muon.remove(&name) {
            let p = flat(tensor) - step;
            let p = if dtype == DType::F32 {
                p
            } else {
                p.cast(dtype)
            };
            let updated = Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad();
            return Param::from_mapped_value(id, updated, mapper);
        }
        let Some(grad) = self.grads.remove(&name) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        // The update and the moments are f32 whatever the parameters' dtype: in f16,
        // eps (1e-8) is 0 and a parameter without gradient would get 0/0.
        let p = flat(tensor);
        let g = to_f32(grad);
        let o = &mut *self.optim;
        let (m, v) = o
            .moments
            .remove(&name)
            .unwrap_or_else(|| (p.zeros_like(), p.zeros_like()));
        let t = o.step as i32;
        let hyper = Hyper {
            scale: self.scale as f32,
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            decay: match decay && o.weight_decay > 0.0 {
                true => (1.0 - self.lr * o.weight_decay) as f32,
                false => 1.0,
            },
            step_size: (self.lr / (1.0 - o.beta1.powi(t))) as f32,
            sqrt_bias_correction2: (1.0 - o.beta2.powi(t)).sqrt() as f32,
            eps: o.eps as f32,
        };
        let fused = on_host(
            [&p, &g, &m, &v],
            #[inline(always)]
            |[p, g, m, v]| hyper.update(p, g, m, v),
        );
        let (p, m, v) = match fused {
            Some(new) => {
                let device = p.device();
                let [p, m, v] = new.map(|x| {
                    let n = x.len();
                    Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &device)
                });
                (p, m, v)
            }
            None => hyper.update_tensors(p, g, m, v),
        };
        o.moments.insert(name, (m, v));
        let p = if dtype == DType::F32 {
            p
        } else {
            p.cast(dtype)
        };
        let updated = Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad();
        Param::from_mapped_value(id, updated, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    /// Values of a vector that spans several update chunks and ends in a partial one.
    fn ramp(len: usize, offset: f32, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| offset + scale * ((i * 7919) % 1000) as f32 / 1000.0)
            .collect()
    }

    #[test]
    fn par_fill_writes_every_chunk_of_every_output_at_its_place() {
        let len = 2 * UPDATE_CHUNK + 7;
        let index: Vec<f32> = (0..len).map(|i| i as f32).collect();
        // SAFETY: each output gets every value of its chunk written.
        let out = unsafe {
            par_fill([&index], |[index], chunks: [&mut [MaybeUninit<f32>]; 2]| {
                for (k, chunk) in chunks.into_iter().enumerate() {
                    for (x, &i) in chunk.iter_mut().zip(index) {
                        x.write(i * 2.0 + k as f32);
                    }
                }
            })
        };
        for (k, x) in out.iter().enumerate() {
            let want: Vec<f32> = (0..len).map(|i| (i * 2 + k) as f32).collect();
            assert_eq!(x, &want);
        }
    }

    #[test]
    #[should_panic(expected = "have one length")]
    fn par_fill_refuses_inputs_of_different_lengths() {
        let (a, b) = (vec![1.0; UPDATE_CHUNK + 1], vec![1.0; UPDATE_CHUNK]);
        // SAFETY: the output chunk is written in full (were the call to go ahead).
        let _ = unsafe {
            par_fill([&a, &b], |[a, _], [out]: [&mut [MaybeUninit<f32>]; 1]| {
                for (x, &a) in out.iter_mut().zip(a) {
                    x.write(a);
                }
            })
        };
    }

    #[test]
    fn chunked_update_is_the_tensor_operations_update_bit_for_bit() {
        let len = 2 * UPDATE_CHUNK + 7;
        let (p, g, m) = (
            ramp(len, -0.5, 1.0),
            ramp(len, -0.1, 0.2),
            ramp(len, -0.01, 0.02),
        );
        let v = ramp(len, 1e-6, 1e-3);
        let hyper = Hyper {
            scale: 0.7,
            beta1: 0.9,
            beta2: 0.99,
            decay: 1.0 - 1e-3 * 0.1,
            step_size: 1e-3 / (1.0 - 0.9f32.powi(3)),
            sqrt_bias_correction2: (1.0 - 0.99f32.powi(3)).sqrt(),
            eps: 1e-8,
        };
        let fused = hyper.update(&p, &g, &m, &v);
        let device = Default::default();
        let tensor = |x: &[f32]| Tensor::<NdArray, 1>::from_floats(x, &device);
        let (p2, m2, v2) = hyper.update_tensors(tensor(&p), tensor(&g), tensor(&m), tensor(&v));
        for (fused, tensor) in fused.iter().zip([p2, m2, v2]) {
            assert_eq!(fused, &tensor.into_data().to_vec::<f32>().unwrap());
        }
    }
}
