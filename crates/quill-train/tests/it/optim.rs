//! quill's AdamW against an independent host-side implementation of PyTorch's
//! `AdamW` + `clip_grad_norm_`, on the bigram model: on Flex (the fused one-pass
//! update) and on NdArray (the update in Burn tensor operations).

use std::collections::BTreeMap;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use burn_ndarray::NdArray;
use quill_data::Rng;
use quill_data::batch::ids_to_tensor;
use quill_model::params::export;
use quill_model::{BigramConfig, LanguageModel, ModelConfig};
use quill_train::{GradBuffer, Optimizer, StepOptions};

type AB = Autodiff<Flex>;

const LR: f64 = 0.05;
const WD: f64 = 0.1;
const B1: f64 = 0.9;
const B2: f64 = 0.99;
const EPS: f64 = 1e-8;
const CLIP: f64 = 0.01;

/// Host copies of every gradient, in PyTorch names and layout.
fn host_grads<A: AutodiffBackend>(
    model: &LanguageModel<A>,
    grads: &A::Gradients,
) -> BTreeMap<String, Vec<f64>> {
    let LanguageModel::Bigram(m) = model else {
        unreachable!()
    };
    let v = |t: Tensor<A::InnerBackend, 2>| t.into_data().convert::<f64>().to_vec::<f64>().unwrap();
    let v1 =
        |t: Tensor<A::InnerBackend, 1>| t.into_data().convert::<f64>().to_vec::<f64>().unwrap();
    BTreeMap::from([
        (
            "token_embedding_table.weight".into(),
            v(m.token_embedding_table.weight.val().grad(grads).unwrap()),
        ),
        (
            "position_embedding_table.weight".into(),
            v(m.position_embedding_table.weight.val().grad(grads).unwrap()),
        ),
        (
            "lm_head.weight".into(),
            v(m.lm_head.weight.val().grad(grads).unwrap().transpose()),
        ),
        (
            "lm_head.bias".into(),
            v1(m.lm_head.bias.as_ref().unwrap().val().grad(grads).unwrap()),
        ),
    ])
}

struct Reference {
    params: BTreeMap<String, Vec<f64>>,
    m: BTreeMap<String, Vec<f64>>,
    v: BTreeMap<String, Vec<f64>>,
    t: i32,
}

impl Reference {
    fn step(&mut self, grads: &BTreeMap<String, Vec<f64>>, clip: f64) -> f64 {
        let norm = grads.values().flatten().map(|g| g * g).sum::<f64>().sqrt();
        let coef = (clip / (norm + 1e-6)).min(1.0);
        self.t += 1;
        for (name, p) in self.params.iter_mut() {
            let decay = name == "lm_head.weight"; // embeddings and biases do not decay
            let m = self.m.entry(name.clone()).or_insert(vec![0.0; p.len()]);
            let v = self.v.entry(name.clone()).or_insert(vec![0.0; p.len()]);
            for i in 0..p.len() {
                let g = grads[name][i] * coef;
                m[i] = B1 * m[i] + (1.0 - B1) * g;
                v[i] = B2 * v[i] + (1.0 - B2) * g * g;
                if decay {
                    p[i] *= 1.0 - LR * WD;
                }
                let denom = v[i].sqrt() / (1.0 - B2.powi(self.t)).sqrt() + EPS;
                p[i] -= LR / (1.0 - B1.powi(self.t)) * m[i] / denom;
            }
        }
        norm
    }
}

fn batch<A: AutodiffBackend>(rng: &mut Rng) -> (Tensor<A, 2, Int>, Tensor<A, 2, Int>) {
    let ids: Vec<u32> = (0..2 * 4 * 6).map(|_| rng.below(9) as u32).collect();
    let device = Default::default();
    (
        ids_to_tensor(&ids[..24], [4, 6], &device),
        ids_to_tensor(&ids[24..], [4, 6], &device),
    )
}

fn params<A: AutodiffBackend>(model: &LanguageModel<A>) -> BTreeMap<String, Vec<f64>> {
    export(model)
        .into_iter()
        .map(|t| (t.name, t.values.iter().map(|&v| v as f64).collect()))
        .collect()
}

#[test]
fn fused_flex_update_matches_pytorch_adamw_with_global_norm_clipping() {
    matches_pytorch_adamw_with_global_norm_clipping::<AB>();
}

#[test]
fn tensor_op_update_matches_pytorch_adamw_with_global_norm_clipping() {
    matches_pytorch_adamw_with_global_norm_clipping::<Autodiff<NdArray>>();
}

fn matches_pytorch_adamw_with_global_norm_clipping<A: AutodiffBackend>() {
    let config = ModelConfig::Bigram(BigramConfig {
        vocab_size: 9,
        block_size: 6,
        n_embd: 5,
    });
    let mut model = config.init::<A>(3, &Default::default()).unwrap();
    let mut reference = Reference {
        params: params(&model),
        m: BTreeMap::new(),
        v: BTreeMap::new(),
        t: 0,
    };
    let mut optim = Optimizer::new(B1, B2, EPS, WD);
    let mut rng = Rng::new(11);
    let mut clipped = 0;
    for step in 0..5 {
        let (x, y) = batch::<A>(&mut rng);
        let grads = model.loss(x, y).unwrap().backward();
        let host = host_grads(&model, &grads);
        let mut buffer = GradBuffer::default();
        buffer.accumulate(&model, &grads);
        // A clip below the first norms makes clipping active.
        let (updated, norm) = optim.step(
            model,
            buffer,
            StepOptions {
                muon_lr: 0.0,
                loss_scale: None,
                lr: LR,
                grad_clip: CLIP,
            },
        );
        model = updated;
        let expected_norm = reference.step(&host, CLIP);
        clipped += usize::from(expected_norm > CLIP);
        assert!(
            (norm - expected_norm).abs() < 1e-5 * expected_norm,
            "step {step}: norm {norm} vs {expected_norm}"
        );
        for (name, got) in params(&model) {
            for (g, e) in got.iter().zip(&reference.params[&name]) {
                assert!((g - e).abs() < 1e-5, "step {step} {name}: {g} vs {e}");
            }
        }
    }
    assert!(
        clipped >= 2,
        "the test must exercise clipping ({clipped} of 5 steps clipped)"
    );
}

#[test]
fn two_accumulated_micro_batches_equal_one_of_their_mean() {
    let config = ModelConfig::Bigram(BigramConfig {
        vocab_size: 9,
        block_size: 6,
        n_embd: 5,
    });
    let mut rng = Rng::new(12);
    let (x, y) = batch(&mut rng);
    let model = config.init::<AB>(3, &Default::default()).unwrap();

    let mut once = GradBuffer::default();
    once.accumulate(
        &model,
        &model.loss(x.clone(), y.clone()).unwrap().backward(),
    );
    let mut twice = GradBuffer::default();
    for _ in 0..2 {
        twice.accumulate(
            &model,
            &model.loss(x.clone(), y.clone()).unwrap().backward(),
        );
    }
    assert!((once.global_norm() - twice.global_norm()).abs() < 1e-6);
    let options = StepOptions {
        muon_lr: 0.0,
        loss_scale: None,
        lr: LR,
        grad_clip: 0.0,
    };
    let (a, _) = Optimizer::new(B1, B2, EPS, WD).step(model.clone(), once, options);
    let (b, _) = Optimizer::new(B1, B2, EPS, WD).step(model, twice, options);
    for ((name, pa), (_, pb)) in params(&a).iter().zip(params(&b).iter()) {
        for (u, v) in pa.iter().zip(pb) {
            assert!((u - v).abs() < 1e-6, "{name}");
        }
    }
}
