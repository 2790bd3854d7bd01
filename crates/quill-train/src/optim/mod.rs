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
//! - **Muon.** Optionally ([`MuonAdamW::with_muon`]), the hidden matrices (Linear weights
//!   inside blocks) are updated by [`crate::optim::muon`] instead, at their own learning rate
//!   and without weight decay; AdamW keeps the rest.
//!
//! - **Precision.** The update, the moments and the gradient sums are f32 whatever the
//!   parameters' dtype. In 16-bit training the optimizer keeps an f32 master copy of
//!   each parameter ([`MuonAdamW::with_master_weights`]): each step updates the copy and
//!   the model holds its rounding, so updates smaller than a 16-bit parameter's last bit
//!   accumulate instead of vanishing. [`MuonAdamW::with_bf16_rounding`] rounds f32
//!   parameters to bf16 after each update: bf16 storage, emulated on any backend.
//!   With f16, the loss is scaled ([`LossScaler`]) and the gradients unscaled here.
//!
//! Names and decay groups are the model's own declaration
//! ([`LanguageModel::param_specs`]); state is keyed by parameter name, so it saves and
//! loads with checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use quill_model::LanguageModel;
use quill_model::params::{NamedTensor, ParamSpec, ParamSpecs};

use crate::TrainError;
use adamw::Hyper;
use host::adamw_on_host;

mod adamw;
mod grads;
mod host;
mod loss_scale;
pub mod muon;

pub use grads::GradBuffer;
pub use loss_scale::LossScaler;

/// Hyper-parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOptions {
    /// Learning rate.
    pub lr: f64,
    /// Global-norm clip (0 disables).
    pub grad_clip: f64,
    /// Muon's learning rate for the hidden matrices (unused without Muon).
    pub muon_lr: f64,
    /// The loss scale the gradients were computed with (f16 training, see
    /// [`LossScaler`]): they are divided by it, and a step whose gradients are not
    /// finite is skipped. `None`: unscaled gradients, always applied.
    pub loss_scale: Option<f64>,
}

/// AdamW (decoupled weight decay, bias-corrected moments), as PyTorch computes it; with
/// Muon for the hidden matrices when asked.
#[derive(Debug, Clone)]
pub struct MuonAdamW<B: Backend> {
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
    /// Whether to keep an f32 master copy of each parameter it updates.
    keep_masters: bool,
    /// The f32 master copies, flattened, by parameter name (filled at the first update
    /// of each parameter, or by [`MuonAdamW::load_masters`]).
    masters: BTreeMap<String, Tensor<B, 1>>,
    /// Whether each updated parameter is rounded to bf16 (emulated bf16 storage).
    round_to_bf16: bool,
}

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const MOMENTUM: &str = "momentum_buffer.";

impl<B: Backend> MuonAdamW<B> {
    /// A fresh optimizer.
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        MuonAdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            step: 0,
            moments: BTreeMap::new(),
            muon_momentum: None,
            momentum: BTreeMap::new(),
            keep_masters: false,
            masters: BTreeMap::new(),
            round_to_bf16: false,
        }
    }

    /// Keeps an f32 master copy of every parameter it updates (for 16-bit parameters):
    /// each step updates the copy, and the model holds the copy rounded to its dtype.
    pub fn with_master_weights(mut self, keep: bool) -> Self {
        self.keep_masters = keep;
        self
    }

    /// Rounds every parameter it updates to bf16 (round to nearest, ties to even) and
    /// back to f32: what bf16 storage does to the weights, on a backend that computes
    /// in f32. With master weights, the master copies stay unrounded.
    pub fn with_bf16_rounding(mut self, round: bool) -> Self {
        self.round_to_bf16 = round;
        self
    }

    /// `model` with every parameter that has a master copy replaced by the copy, in f32:
    /// the weights a checkpoint saves. `model` itself when no copies are kept.
    pub fn with_masters_of(&self, model: LanguageModel<B>) -> LanguageModel<B> {
        if self.masters.is_empty() {
            return model;
        }
        struct Masters<'a, B: Backend> {
            specs: ParamSpecs,
            masters: &'a BTreeMap<String, Tensor<B, 1>>,
        }
        impl<B: Backend> ModuleMapper<B> for Masters<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let (id, tensor, mapper) = param.consume();
                let name = &declared(&self.specs, &id).name;
                let value = match self.masters.get(name) {
                    Some(master) => master.clone().reshape(tensor.shape()),
                    None => tensor,
                };
                Param::from_mapped_value(id, value, mapper)
            }
        }
        let specs = model.param_specs();
        model.map(&mut Masters {
            specs,
            masters: &self.masters,
        })
    }

    /// Takes the master copies from `weights` (a checkpoint's, in f32, PyTorch names and
    /// layout) for every parameter of `model`, when it keeps copies; the model's
    /// parameters are set to their rounding, as they were when the checkpoint was saved.
    /// A checkpoint saved without copies gives the copies its own (rounded) values.
    pub fn load_masters<AB>(
        &mut self,
        model: LanguageModel<AB>,
        weights: &BTreeMap<String, NamedTensor>,
    ) -> LanguageModel<AB>
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        if !self.keep_masters {
            return model;
        }
        struct Load<'a, B: Backend> {
            optim: &'a mut MuonAdamW<B>,
            specs: ParamSpecs,
            weights: &'a BTreeMap<String, NamedTensor>,
        }
        impl<B: Backend, AB: AutodiffBackend<InnerBackend = B>> ModuleMapper<AB> for Load<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<AB, D>>,
            ) -> Param<Tensor<AB, D>> {
                let (id, tensor, mapper) = param.consume();
                let spec = declared(&self.specs, &id);
                let Some(saved) = self.weights.get(&spec.name) else {
                    return Param::from_mapped_value(id, tensor, mapper);
                };
                let (shape, dtype) = (tensor.shape(), tensor.dtype());
                let master = upload_f32::<B>(quill_layout(spec, saved), &tensor.inner().device());
                let value = self.optim.store(spec.name.clone(), master, dtype, shape);
                Param::from_mapped_value(id, value, mapper)
            }
        }
        let specs = model.param_specs();
        model.map(&mut Load {
            optim: self,
            specs,
            weights,
        })
    }

    /// `p` (f32, flat) as the model holds the parameter `name`: kept as its master copy
    /// if copies are kept; rounded to bf16 if asked; cast to `dtype`; in `shape`, a
    /// leaf of the next step's graph.
    fn store<AB: AutodiffBackend<InnerBackend = B>, const D: usize>(
        &mut self,
        name: String,
        p: Tensor<B, 1>,
        dtype: DType,
        shape: burn::tensor::Shape,
    ) -> Tensor<AB, D> {
        if self.keep_masters {
            self.masters.insert(name, p.clone());
        }
        let p = match self.round_to_bf16 {
            true => p.cast(FloatDType::BF16).cast(FloatDType::F32),
            false => p,
        };
        let p = if dtype == DType::F32 {
            p
        } else {
            p.cast(dtype)
        };
        Tensor::<AB, D>::from_inner(p.reshape(shape)).require_grad()
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
    /// model and the gradient norm before clipping. With a loss scale, a norm that is
    /// not finite leaves the model and the optimizer as they were (a skipped step).
    pub fn step<AB>(
        &mut self,
        model: LanguageModel<AB>,
        grads: GradBuffer<B>,
        options: StepOptions,
    ) -> (LanguageModel<AB>, f64)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        let loss_scale = options.loss_scale.unwrap_or(1.0);
        let norm = grads.global_norm() / loss_scale;
        if options.loss_scale.is_some() && !norm.is_finite() {
            return (model, norm);
        }
        let mut scale = 1.0 / (grads.micro_batches.max(1) as f64 * loss_scale);
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
    /// Nesterov directions orthogonalised together ([`crate::optim::muon::orthogonalize_all`]),
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
            let (direction, buf) = crate::optim::muon::nesterov(g, buf, momentum);
            self.momentum.insert(name.clone(), buf);
            directions.push(direction.reshape(dims));
            names.push((name, dims));
        }
        let orthogonal = crate::optim::muon::orthogonalize_all(directions);
        (names.into_iter().zip(orthogonal))
            .map(|((name, [d_in, d_out]), o)| {
                let step = o * (lr * crate::optim::muon::shape_factor(d_in, d_out));
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

    /// Restores moments saved by [`MuonAdamW::state`] and the step count. `lengths` are
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
        let upload = |t: &NamedTensor| upload_f32(t.values.clone(), device);
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

/// `values` as a flat f32 tensor on `device`, whatever the backend's default float type
/// (an f16 backend would round them on the way in).
pub(crate) fn upload_f32<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), (device, DType::F32))
}

/// A saved parameter's values (PyTorch layout) in quill's layout, flat: a Linear
/// weight `[out, in]` becomes `[in, out]`.
fn quill_layout(spec: &ParamSpec, saved: &NamedTensor) -> Vec<f32> {
    match (spec.transposed, saved.shape.len()) {
        (true, 2) => crate::interop::hf::transposed(&saved.shape, &saved.values),
        _ => saved.values.clone(),
    }
}

/// The float type of `model`'s parameters (f32 for a model without any).
pub(crate) fn param_dtype<B: Backend>(model: &LanguageModel<B>) -> DType {
    struct First(Option<DType>);
    impl<B: Backend> ModuleVisitor<B> for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.get_or_insert(param.val().dtype());
        }
    }
    let mut first = First(None);
    model.visit(&mut first);
    first.0.unwrap_or(DType::F32)
}

/// `t` in f32 (no work when it already is).
fn to_f32<B: Backend>(t: Tensor<B, 1>) -> Tensor<B, 1> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

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

/// The hidden matrices of `model` (see [`quill_model::params::ParamSpec::hidden`]), which
/// Muon updates: name and `[in, out]` shape.
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
    optim: &'a mut MuonAdamW<B>,
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
        let (muon, grad) = (self.muon.remove(&name), self.grads.remove(&name));
        if muon.is_none() && grad.is_none() {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let (shape, dtype) = (tensor.shape(), tensor.dtype());
        let o = &mut *self.optim;
        // The update starts from the f32 master copy where one is kept, else from the
        // parameter itself; it and the moments are f32 whatever the parameters' dtype:
        // in f16, eps (1e-8) is 0 and a parameter without gradient would get 0/0.
        let p = match o.masters.remove(&name) {
            Some(master) => master,
            None => to_f32(tensor.inner().reshape([shape.num_elements()])), // [n]
        };
        let p = match (muon, grad) {
            (Some(step), _) => p - step,
            (None, Some(grad)) => o.adamw(&name, decay, self.scale, self.lr, p, to_f32(grad)),
            (None, None) => unreachable!("returned above"),
        };
        Param::from_mapped_value(id, o.store(name, p, dtype, shape), mapper)
    }
}

impl<B: Backend> MuonAdamW<B> {
    /// AdamW's update of the parameter `name`, `p` (f32, flat), by its gradient `g`
    /// times `scale`, at learning rate `lr`: the new `p`; the moments are kept.
    fn adamw(
        &mut self,
        name: &str,
        decay: bool,
        scale: f64,
        lr: f64,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
    ) -> Tensor<B, 1> {
        let (m, v) = self
            .moments
            .remove(name)
            .unwrap_or_else(|| (p.zeros_like(), p.zeros_like()));
        let t = self.step as i32;
        let hyper = Hyper {
            scale: scale as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            decay: match decay && self.weight_decay > 0.0 {
                true => (1.0 - lr * self.weight_decay) as f32,
                false => 1.0,
            },
            step_size: (lr / (1.0 - self.beta1.powi(t))) as f32,
            sqrt_bias_correction2: (1.0 - self.beta2.powi(t)).sqrt() as f32,
            eps: self.eps as f32,
        };
        let fused = adamw_on_host(&hyper, [&p, &g, &m, &v]);
        let (p, m, v) = match fused {
            Some(new) => {
                let device = p.device();
                let [p, m, v] = new.map(|x| upload_f32(x, &device));
                (p, m, v)
            }
            None => hyper.update_tensors(p, g, m, v),
        };
        self.moments.insert(name.to_string(), (m, v));
        p
    }
}
