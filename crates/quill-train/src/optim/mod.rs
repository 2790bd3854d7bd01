//! The optimizer: update rules per parameter group, global-norm gradient clipping and
//! gradient accumulation, matching PyTorch's `torch.optim.AdamW` and `clip_grad_norm_`
//! (nanoGPT), with Muon for the hidden matrices when asked (modded-nanogpt).
//!
//! - **Groups and rules** ([`UpdateRule`]). Each parameter belongs to one rule's group,
//!   chosen from the model's declaration of it ([`LanguageModel::param_specs`]): Muon
//!   ([`muon`]) takes the hidden matrices (Linear weights inside blocks) when the run
//!   uses it; AdamW ([`adamw`]) takes the rest. A new rule is a file and a row of
//!   [`Optimizer::for_run`]'s table.
//! - **Decay.** AdamW's weight decay applies to Linear weights only; never to biases or
//!   LayerNorm parameters. Embedding tables do not decay (minGPT's rule: they are lookup
//!   tables), except a tied `wte`, which is also the LM head's weight and decays like
//!   the other Linear weights.
//! - **Clipping.** One norm over all gradients; every gradient is scaled by
//!   `min(1, clip / (norm + 1e-6))`.
//! - **Accumulation.** Gradients of `grad_accum` micro-batches are summed in
//!   [`GradBuffer`] and divided by their count before the step.
//! - **Precision** ([`Precision`]), around every rule: the update, the rules' state and
//!   the gradient sums are f32 whatever the parameters' dtype; 16-bit parameters get f32
//!   master copies, emulated bf16 storage its rounding. With f16, the loss is scaled
//!   ([`LossScaler`]) and the gradients unscaled here.
//!
//! State is keyed by parameter name, each rule's under its own prefixes (PyTorch's
//! `exp_avg.`, `exp_avg_sq.`, `momentum_buffer.`), so it saves and loads with
//! checkpoints.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use quill_model::LanguageModel;
use quill_model::params::{NamedTensor, ParamSpec, ParamSpecs};

use crate::{OptimizerKind, TrainConfig, TrainError};

pub mod adamw;
mod grads;
mod host;
mod loss_scale;
pub mod muon;
mod precision;
mod rule;

pub use adamw::AdamW;
pub use grads::GradBuffer;
pub use loss_scale::LossScaler;
pub use muon::Muon;
pub use precision::Precision;
pub use rule::{Member, StepContext, UpdateRule};

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

/// A rule and the parameters it takes.
struct Group<B: Backend> {
    rule: Box<dyn UpdateRule<B>>,
    /// Whether the rule takes a parameter, from its declaration and its number of
    /// dimensions.
    takes: fn(&ParamSpec, usize) -> bool,
    /// The rule's learning rate in a step's options.
    lr: fn(&StepOptions) -> f64,
}

/// The optimizer of a run: its groups' rules (the first that takes a parameter updates
/// it), the step count, and the precision around them.
pub struct Optimizer<B: Backend> {
    step: u64,
    groups: Vec<Group<B>>,
    precision: Precision<B>,
}

impl<B: Backend> std::fmt::Debug for Optimizer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<&str> = self.groups.iter().map(|g| g.rule.name()).collect();
        (f.debug_struct("Optimizer"))
            .field("step", &self.step)
            .field("rules", &rules)
            .finish()
    }
}

impl<B: Backend> Optimizer<B> {
    /// The rules `config` asks for, one row each: AdamW for every parameter, and the
    /// run's choice of optimizer for the parameters it takes.
    pub fn for_run(config: &TrainConfig) -> Self {
        let c = config;
        let adamw = Optimizer::new(c.beta1, c.beta2, c.eps, c.weight_decay);
        match c.optimizer {
            OptimizerKind::Adamw => adamw,
            OptimizerKind::Muon => adamw.with_muon(c.muon_momentum),
        }
    }

    /// AdamW (β1, β2, ε, weight decay) for every parameter; [`Optimizer::with_muon`]
    /// adds Muon's row.
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        Optimizer {
            step: 0,
            groups: vec![Group {
                rule: Box::new(AdamW::new(beta1, beta2, eps, weight_decay)),
                takes: |_, _| true,
                lr: |options| options.lr,
            }],
            precision: Precision::new(false, false),
        }
    }

    /// Updates the hidden matrices with Muon (momentum `momentum`) instead of AdamW.
    pub fn with_muon(mut self, momentum: f64) -> Self {
        let muon = Group {
            rule: Box::new(Muon::new(momentum)),
            takes: |spec, dims| spec.hidden && dims == 2,
            lr: |options| options.muon_lr,
        };
        self.groups.insert(0, muon);
        self
    }

    /// Keeps an f32 master copy of every parameter it updates (for 16-bit parameters):
    /// each step updates the copy, and the model holds the copy rounded to its dtype.
    pub fn with_master_weights(mut self, keep: bool) -> Self {
        self.precision.keep_masters = keep;
        self
    }

    /// Rounds every parameter it updates to bf16 (round to nearest, ties to even) and
    /// back to f32: what bf16 storage does to the weights, on a backend that computes
    /// in f32. With master weights, the master copies stay unrounded.
    pub fn with_bf16_rounding(mut self, round: bool) -> Self {
        self.precision.round_to_bf16 = round;
        self
    }

    /// The master copies and rounding around the rules: the weights a checkpoint saves
    /// ([`Precision::with_masters_of`]).
    pub fn precision(&self) -> &Precision<B> {
        &self.precision
    }

    /// The same, to take master copies from a checkpoint ([`Precision::load_masters`]).
    pub fn precision_mut(&mut self) -> &mut Precision<B> {
        &mut self.precision
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
        let mut by_group: Vec<Vec<(Member, Tensor<B, 1>)>> =
            self.groups.iter().map(|_| Vec::new()).collect();
        for (member, spec) in members(&model, &specs) {
            let Some(g) = grads.remove(&member.name) else {
                continue;
            };
            let group = (self.groups.iter())
                .position(|group| (group.takes)(&spec, member.dims.len()))
                .expect("the last rule takes every parameter");
            by_group[group].push((member, g));
        }
        let contexts: Vec<StepContext> = (self.groups.iter())
            .map(|group| StepContext {
                step: self.step,
                lr: (group.lr)(&options),
                scale,
            })
            .collect();
        for ((group, grads), ctx) in self.groups.iter_mut().zip(by_group).zip(&contexts) {
            group.rule.begin(grads, ctx);
        }
        let mut update = Update {
            optim: self,
            specs,
            contexts,
        };
        (model.map(&mut update), norm)
    }

    /// Every rule's state as named tensors (`exp_avg.<param>`, `exp_avg_sq.<param>`,
    /// Muon's `momentum_buffer.<param>`), AdamW's first.
    pub fn state(&self) -> Vec<NamedTensor> {
        let host = |(name, t): (String, &Tensor<B, 1>)| NamedTensor {
            name,
            shape: t.dims().to_vec(),
            values: t.to_data().convert::<f32>().to_vec().expect("f32 data"),
        };
        (self.groups.iter().rev())
            .flat_map(|group| group.rule.state())
            .map(host)
            .collect()
    }

    /// Restores state saved by [`Optimizer::state`] and the step count. `lengths` are
    /// the model's parameters' sizes by name ([`param_lengths`]): every saved tensor
    /// must belong to one of them and have its size, and to one of this run's rules.
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, NamedTensor>,
        step: u64,
        lengths: &BTreeMap<String, usize>,
        device: &B::Device,
    ) -> Result<(), TrainError> {
        let bad = |reason: String| TrainError::OptimizerState(reason);
        for (key, t) in tensors {
            let name = (STATE_PREFIXES.iter())
                .find_map(|(_, prefix)| key.strip_prefix(prefix))
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
        let mut by_group: Vec<BTreeMap<String, Tensor<B, 1>>> =
            self.groups.iter().map(|_| BTreeMap::new()).collect();
        for (key, t) in tensors {
            let owner = (self.groups.iter()).position(|group| {
                (group.rule.state_prefixes().iter()).any(|prefix| key.starts_with(prefix))
            });
            let Some(owner) = owner else {
                return Err(bad(
                    match STATE_PREFIXES.iter().find(|(_, p)| key.starts_with(p)) {
                        Some((rule, _)) => {
                            format!("{key} is {rule}'s, and this run does not use {rule}")
                        }
                        None => format!("unexpected tensor {key}"),
                    },
                ));
            };
            by_group[owner].insert(key.clone(), upload_f32(t.values.clone(), device));
        }
        for (group, saved) in self.groups.iter_mut().zip(by_group) {
            group.rule.load_state(saved)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Every rule's state prefixes, with the rule's name: a saved tensor of a rule the run
/// does not use is named as such.
const STATE_PREFIXES: [(&str, &str); 3] = [
    ("AdamW", "exp_avg."),
    ("AdamW", "exp_avg_sq."),
    ("Muon", "momentum_buffer."),
];

/// The model's declaration of a parameter it holds.
fn declared<'a>(specs: &'a ParamSpecs, id: &burn::module::ParamId) -> &'a ParamSpec {
    specs.get(id).expect("the model declares every parameter")
}

/// `values` as a flat f32 tensor on `device`, whatever the backend's default float type
/// (an f16 backend would round them on the way in).
pub(crate) fn upload_f32<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), (device, DType::F32))
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
    (members(model, &model.param_specs()).into_iter())
        .map(|(member, _)| (member.name, member.dims.iter().product()))
        .collect()
}

/// Every parameter of `model` as a rule sees it, with its declaration, in the model's
/// order.
fn members<B: Backend>(model: &LanguageModel<B>, specs: &ParamSpecs) -> Vec<(Member, ParamSpec)> {
    struct Members<'a> {
        specs: &'a ParamSpecs,
        out: Vec<(Member, ParamSpec)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Members<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let spec = declared(self.specs, &param.id);
            let member = Member {
                name: spec.name.clone(),
                decays: spec.decays,
                dims: param.val().dims().to_vec(),
            };
            self.out.push((member, spec.clone()));
        }
    }
    let mut members = Members {
        specs,
        out: Vec::new(),
    };
    model.visit(&mut members);
    members.out
}

/// A step's second half: each parameter with an update gets it from its rule.
struct Update<'a, B: Backend> {
    optim: &'a mut Optimizer<B>,
    specs: ParamSpecs,
    contexts: Vec<StepContext>,
}

impl<B: Backend, AB: AutodiffBackend<InnerBackend = B>> ModuleMapper<AB> for Update<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let name = declared(&self.specs, &id).name.clone();
        let o = &mut *self.optim;
        let Some(group) = o.groups.iter().position(|g| g.rule.updates(&name)) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let (shape, dtype) = (tensor.shape(), tensor.dtype());
        let p = (o.precision).take(&name, tensor.inner().reshape([shape.num_elements()]));
        let p = o.groups[group].rule.apply(&name, p, &self.contexts[group]);
        Param::from_mapped_value(id, o.precision.store(name, p, dtype, shape), mapper)
    }
}
