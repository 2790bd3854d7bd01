//! The optimizer's precision on an f32 backend: f32 master copies beside parameters
//! rounded to bf16 (bf16 storage, emulated), and the loss scale that f16 training uses.

use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_data::Rng;
use quill_data::batch::ids_to_tensor;
use quill_model::params::{NamedTensor, export};
use quill_model::{GptConfig, LanguageModel, ModelConfig};
use quill_train::{GradBuffer, Optimizer, StepOptions};

type AB = Autodiff<Flex>;

/// A 1-layer GPT and the gradients of its loss on one batch, the loss multiplied by
/// each of `scales`.
fn model_and_gradients(scales: &[f64]) -> (LanguageModel<AB>, Vec<GradBuffer<Flex>>) {
    let device = Default::default();
    let config = ModelConfig::Gpt(GptConfig {
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        block_size: 8,
        vocab_size: 11,
        dropout: 0.0,
        bias: true,
        ..Default::default()
    });
    let model = config.init::<AB>(7, &device).unwrap();
    let mut rng = Rng::new(3);
    let ids = |rng: &mut Rng| -> Tensor<AB, 2, Int> {
        let ids: Vec<u32> = (0..4 * 8).map(|_| rng.below(11) as u32).collect();
        ids_to_tensor(&ids, [4, 8], &device)
    };
    let (x, y) = (ids(&mut rng), ids(&mut rng));
    let grads = scales
        .iter()
        .map(|&scale| {
            let loss = model.loss(x.clone(), y.clone()).unwrap() * scale;
            let mut buffer = GradBuffer::default();
            buffer.accumulate(&model, &loss.backward());
            buffer
        })
        .collect();
    (model, grads)
}

fn adamw() -> Optimizer<Flex> {
    Optimizer::new(0.9, 0.99, 1e-8, 0.1)
}

fn options(loss_scale: Option<f64>) -> StepOptions {
    StepOptions {
        lr: 1e-3,
        grad_clip: 1.0,
        muon_lr: 0.0,
        loss_scale,
    }
}

fn weights(model: &LanguageModel<Flex>) -> Vec<NamedTensor> {
    export(model)
}

/// `x` rounded to the nearest bf16 (ties to even), as an f32.
fn bf16(x: f32) -> f32 {
    burn::tensor::bf16::from_f32(x).to_f32()
}

#[test]
fn master_copies_take_the_f32_update_and_the_model_holds_its_bf16_rounding() {
    let (model, grads) = model_and_gradients(&[1.0]);
    let mut f32_only = adamw();
    let mut master = adamw().with_master_weights(true).with_bf16_rounding(true);
    let mut alone = adamw().with_bf16_rounding(true);
    let (mut a, mut b, mut c) = (model.clone(), model.clone(), model.clone());
    for step in 1..=3 {
        a = f32_only.step(a, grads[0].clone(), options(None)).0;
        b = master.step(b, grads[0].clone(), options(None)).0;
        c = alone.step(c, grads[0].clone(), options(None)).0;
        let f32_weights = weights(&a.valid());
        // The master copies are the f32 run's weights, bit for bit ...
        assert_eq!(
            weights(&master.precision().with_masters_of(b.valid())),
            f32_weights,
            "step {step}"
        );
        // ... and the model holds their rounding to bf16.
        for (held, exact) in weights(&b.valid()).iter().zip(&f32_weights) {
            let rounded: Vec<u32> = exact.values.iter().map(|&v| bf16(v).to_bits()).collect();
            let held: Vec<u32> = held.values.iter().map(|v| v.to_bits()).collect();
            assert_eq!(held, rounded, "step {step}: {}", exact.name);
        }
    }
    // Without master copies, a LayerNorm gain of 1.0 moves by ~lr (1e-3) a step, less
    // than half of bf16's spacing at 1.0 (2⁻⁷): every update is lost. The master copy
    // keeps them.
    let gain = |w: Vec<NamedTensor>| {
        let t = w.into_iter().find(|t| t.name == "transformer.ln_f.weight");
        t.unwrap().values
    };
    assert!(gain(weights(&c.valid())).iter().all(|&g| g == 1.0));
    let kept = gain(weights(&master.precision().with_masters_of(b.valid())));
    assert!(
        kept.iter().all(|&g| g != 1.0 && (g - 1.0).abs() < 0.004),
        "{kept:?}"
    );
}

#[test]
fn a_scaled_loss_takes_the_unscaled_step_and_a_non_finite_gradient_skips_it() {
    let (model, grads) = model_and_gradients(&[1.0, 65_536.0, f64::INFINITY]);
    let (mut plain, mut scaled, mut skipping) = (adamw(), adamw(), adamw());
    let (a, norm) = plain.step(model.clone(), grads[0].clone(), options(None));
    // Scaling by a power of two is exact: the unscaled gradients, and so the step, are
    // the same bit for bit.
    let (b, scaled_norm) = scaled.step(model.clone(), grads[1].clone(), options(Some(65_536.0)));
    assert_eq!(scaled_norm, norm);
    assert_eq!(weights(&b.valid()), weights(&a.valid()));
    assert_eq!(scaled.state(), plain.state());
    // An infinite loss scale makes the gradients infinite or NaN: nothing moves.
    let (c, bad_norm) = skipping.step(model.clone(), grads[2].clone(), options(Some(1.0)));
    assert!(!bad_norm.is_finite());
    assert_eq!(weights(&c.valid()), weights(&model.valid()));
    assert_eq!((skipping.steps(), skipping.state().len()), (0, 0));
}
