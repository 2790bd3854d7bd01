//! The precision around any update rule: rules compute in f32; this keeps an f32 master
//! copy of each 16-bit parameter it updates (so updates smaller than a 16-bit
//! parameter's last bit accumulate instead of vanishing), rounds to bf16 when bf16
//! storage is emulated, and gives the model each parameter back in its own dtype.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, FloatDType, Shape, Tensor};
use quill_model::LanguageModel;
use quill_model::params::{NamedTensor, ParamSpecs, quill_layout};

use super::{declared, to_f32, upload_f32};

/// Master copies and rounding (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Precision<B: Backend> {
    /// Whether to keep an f32 master copy of each parameter updated.
    pub(super) keep_masters: bool,
    /// The f32 master copies, flattened, by parameter name (filled at the first update
    /// of each parameter, or by [`Precision::load_masters`]).
    masters: BTreeMap<String, Tensor<B, 1>>,
    /// Whether each updated parameter is rounded to bf16 (emulated bf16 storage).
    pub(super) round_to_bf16: bool,
}

impl<B: Backend> Precision<B> {
    /// Master copies kept or not, bf16 rounding or not.
    pub fn new(keep_masters: bool, round_to_bf16: bool) -> Self {
        Precision {
            keep_masters,
            masters: BTreeMap::new(),
            round_to_bf16,
        }
    }

    /// The f32 value an update of `name` starts from: its master copy where one is
    /// kept, else the parameter `tensor` itself, flat, in f32.
    pub(super) fn take(&mut self, name: &str, tensor: Tensor<B, 1>) -> Tensor<B, 1> {
        match self.masters.remove(name) {
            Some(master) => master,
            None => to_f32(tensor),
        }
    }

    /// `p` (f32, flat) as the model holds the parameter `name`: kept as its master copy
    /// if copies are kept; rounded to bf16 if asked; cast to `dtype`; in `shape`, a
    /// leaf of the next step's graph.
    pub(super) fn store<AB: AutodiffBackend<InnerBackend = B>, const D: usize>(
        &mut self,
        name: String,
        p: Tensor<B, 1>,
        dtype: DType,
        shape: Shape,
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
            precision: &'a mut Precision<B>,
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
                let value = self
                    .precision
                    .store(spec.name.clone(), master, dtype, shape);
                Param::from_mapped_value(id, value, mapper)
            }
        }
        let specs = model.param_specs();
        model.map(&mut Load {
            precision: self,
            specs,
            weights,
        })
    }
}
