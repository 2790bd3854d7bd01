//! The seam between the optimizer and an update rule: a rule updates one group of
//! parameters (AdamW, Muon), in f32, and names its own state. Which parameters form its
//! group, the master copies and the dtype are the optimizer's ([`super::Optimizer`]).

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::TrainError;

/// A parameter as a rule sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The parameter's PyTorch name (`transformer.h.0.attn.c_attn.weight`).
    pub name: String,
    /// Whether weight decay applies to it ([`quill_model::params::ParamSpec::decays`]).
    pub decays: bool,
    /// Its shape in quill's layout (a Linear weight is `[in, out]`).
    pub dims: Vec<usize>,
}

/// One step's settings, as they reach a rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepContext {
    /// The step's number, from 1.
    pub step: u64,
    /// The group's learning rate at this step (the schedule applied).
    pub lr: f64,
    /// The factor every gradient is multiplied by: 1 / micro-batches, over the loss
    /// scale, times the clipping coefficient.
    pub scale: f64,
}

/// An update rule for one group of parameters: one file per rule, one row in
/// [`super::Optimizer::for_run`]'s table. A step calls [`UpdateRule::begin`] once with the
/// group's gradients, then [`UpdateRule::apply`] on each parameter it
/// [`UpdateRule::updates`], in the model's order.
pub trait UpdateRule<B: Backend>: Send {
    /// The rule's name, in errors ("Muon").
    fn name(&self) -> &'static str;

    /// The prefixes of the rule's state in a checkpoint (`exp_avg.`): a saved tensor
    /// is `<prefix><parameter name>`.
    fn state_prefixes(&self) -> &'static [&'static str];

    /// Before any parameter changes: this step's gradients of the group's members that
    /// have one (flat, in the parameters' dtype, not yet multiplied by `ctx.scale`), in
    /// the model's order. A rule that updates its group together computes the updates
    /// here (Muon orthogonalises its matrices in one batch); an element-wise one keeps
    /// the gradients for [`UpdateRule::apply`].
    fn begin(&mut self, grads: Vec<(Member, Tensor<B, 1>)>, ctx: &StepContext);

    /// Whether the parameter `name` has an update this step.
    fn updates(&self, name: &str) -> bool;

    /// The new value of the parameter `name` from its value `p` (f32, flat).
    fn apply(&mut self, name: &str, p: Tensor<B, 1>, ctx: &StepContext) -> Tensor<B, 1>;

    /// The rule's state, by checkpoint name (`<prefix><parameter>`), as f32.
    fn state(&self) -> Vec<(String, &Tensor<B, 1>)>;

    /// Replaces the rule's state by `saved` (by checkpoint name; only names with the
    /// rule's prefixes, each already checked against its parameter's size).
    fn load_state(&mut self, saved: BTreeMap<String, Tensor<B, 1>>) -> Result<(), TrainError>;
}
