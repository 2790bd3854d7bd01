//! Autodiff gradients against central finite differences, in f64.
//!
//! In a test binary of its own: NdArray<f32> and NdArray<f64> share one device, and a
//! process that created f32 tensors first can make the f64 backend's new tensors f32.

#[path = "it/common.rs"]
mod common;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;
use common::{gpt_config, random_ids};
use quill_data::Rng;
use quill_model::{GptConfig, LanguageModel, ModelConfig};

/// Adds `delta` to element `index` of the parameter with id `id`.
struct Nudge {
    id: burn::module::ParamId,
    index: usize,
    delta: f64,
}

impl<BB: Backend> ModuleMapper<BB> for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<BB, D>>) -> Param<Tensor<BB, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if id == self.id {
            let shape = tensor.dims();
            let mut bump = vec![0.0f64; shape.iter().product()];
            bump[self.index] = self.delta;
            tensor.clone() + Tensor::from_data(TensorData::new(bump, shape), &tensor.device())
        } else {
            tensor
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[test]
fn autodiff_gradients_match_central_differences() {
    type F = NdArray<f64>;
    type AF = Autodiff<F>;
    let device = Default::default();
    let config = GptConfig {
        n_embd: 8,
        vocab_size: 7,
        ..gpt_config(7, false)
    };
    let model = ModelConfig::Gpt(config).init::<AF>(6, &device).unwrap();
    let mut rng = Rng::new(7);
    let x = random_ids(&mut rng, 2 * 8, 7);
    let y = random_ids(&mut rng, 2 * 8, 7);
    let to_t =
        |v: &[u32]| -> Tensor<AF, 2, Int> { quill_data::batch::ids_to_tensor(v, [2, 8], &device) };
    let grads = model.loss(to_t(&x), to_t(&y)).unwrap().backward();

    let LanguageModel::Gpt(gpt) = &model else {
        unreachable!()
    };
    let params = [
        (gpt.h[0].attn.c_attn.weight.clone(), "c_attn.weight"),
        (gpt.h[1].mlp.c_fc.weight.clone(), "c_fc.weight"),
        (gpt.wte.weight.clone(), "wte.weight"),
        (
            gpt.lm_head.as_ref().unwrap().weight.clone(),
            "lm_head.weight",
        ),
    ];
    let inner = model.valid();
    let loss_of = |m: &LanguageModel<F>| -> f64 {
        let to_i = |v: &[u32]| -> Tensor<F, 2, Int> {
            quill_data::batch::ids_to_tensor(v, [2, 8], &device)
        };
        m.loss(to_i(&x), to_i(&y)).unwrap().into_scalar()
    };
    let eps = 1e-5;
    for (param, name) in params {
        let analytic: Vec<f64> = param
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        for index in [0, 3, analytic.len() / 2, analytic.len() - 1] {
            let mut plus = Nudge {
                id: param.id,
                index,
                delta: eps,
            };
            let mut minus = Nudge {
                id: param.id,
                index,
                delta: -eps,
            };
            let numeric = (loss_of(&inner.clone().map(&mut plus))
                - loss_of(&inner.clone().map(&mut minus)))
                / (2.0 * eps);
            let err = (numeric - analytic[index]).abs();
            assert!(
                err < 1e-7 + 1e-5 * numeric.abs(),
                "{name}[{index}]: autodiff {} vs numeric {numeric}",
                analytic[index]
            );
        }
    }
}
