//! Behaviour of the bigram model and the GPT on the CPU backend.

use crate::common;

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, backend::Backend};
use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;
use common::{gpt_config, random_ids};
use quill_data::Rng;
use quill_model::params::{export, import};
use quill_model::{
    Activation, BigramConfig, GptConfig, LanguageModel, ModelConfig, ModelError, SamplingOptions,
    generate, window_start,
};

type B = NdArray<f32>;
type AB = Autodiff<NdArray<f32>>;

fn ids<BB: Backend>(rows: &[&[u32]]) -> Tensor<BB, 2, Int> {
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    quill_data::batch::ids_to_tensor(&flat, [rows.len(), rows[0].len()], &Default::default())
}

fn to_vec<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn future_tokens_never_change_past_logits() {
    let model = ModelConfig::Gpt(gpt_config(11, true))
        .init::<B>(1, &Default::default())
        .unwrap();
    let mut rng = Rng::new(2);
    let a = random_ids(&mut rng, 8, 11);
    for t in 0..7 {
        let mut b = a.clone();
        for x in &mut b[t + 1..] {
            *x = (*x + 1 + rng.below(10) as u32) % 11;
        }
        let la = to_vec(model.forward(ids(&[&a])).unwrap()); // [1, 8, 11]
        let lb = to_vec(model.forward(ids(&[&b])).unwrap());
        let past = (t + 1) * 11;
        for i in 0..past {
            assert!(
                (la[i] - lb[i]).abs() < 1e-6,
                "position ≤ {t} changed at {i}"
            );
        }
        let changed = (past..la.len()).any(|i| (la[i] - lb[i]).abs() > 1e-4);
        assert!(changed, "a change at t+1.. must change later logits");
    }
}

#[test]
fn loss_at_init_is_about_ln_vocab_size() {
    let mut rng = Rng::new(3);
    let x = random_ids(&mut rng, 4 * 8, 65);
    let y = random_ids(&mut rng, 4 * 8, 65);
    let to_t = |v: &[u32]| -> Tensor<B, 2, Int> {
        quill_data::batch::ids_to_tensor(v, [4, 8], &Default::default())
    };
    let bigram = ModelConfig::Bigram(BigramConfig {
        vocab_size: 65,
        block_size: 8,
        n_embd: 32,
    });
    for config in [
        bigram,
        ModelConfig::Gpt(gpt_config(65, true)),
        ModelConfig::Gpt(gpt_config(65, false)),
    ] {
        let model = config.init::<B>(0, &Default::default()).unwrap();
        let loss = model.loss(to_t(&x), to_t(&y)).unwrap().into_scalar();
        assert!((loss - 65f32.ln()).abs() < 0.1, "{config:?}: loss {loss}");
    }
}

#[test]
fn inputs_longer_than_block_size_or_empty_are_errors() {
    let model = ModelConfig::Gpt(gpt_config(11, true))
        .init::<B>(1, &Default::default())
        .unwrap();
    let too_long = vec![1u32; 9];
    assert_eq!(
        model.forward(ids(&[&too_long])).unwrap_err(),
        ModelError::TooLong {
            len: 9,
            block_size: 8
        }
    );
    let empty = Tensor::<B, 2, Int>::zeros([1, 0], &Default::default());
    assert_eq!(model.forward(empty).unwrap_err(), ModelError::Empty);
}

#[test]
fn parameter_count_matches_the_closed_form() {
    let (v, t, l, c) = (65, 256, 6, 384);
    let config = GptConfig {
        vocab_size: v,
        block_size: t,
        n_layer: l,
        n_head: 6,
        n_embd: c,
        dropout: 0.2,
        bias: true,
        tie_weights: true,
        activation: Activation::Gelu,
        pad_vocab: 1,
        position: quill_model::Position::Learned,
        norm: quill_model::Norm::Layer,
        zero_init_proj: false,
    };
    let per_block = 2 * c // ln_1
        + (c * 3 * c + 3 * c) // c_attn
        + (c * c + c) // attn.c_proj
        + 2 * c // ln_2
        + (c * 4 * c + 4 * c) // c_fc
        + (4 * c * c + c); // mlp.c_proj
    let closed_form = v * c + t * c + l * per_block + 2 * c;
    assert_eq!(closed_form, 10_770_816);
    let model = ModelConfig::Gpt(config.clone())
        .init::<B>(0, &Default::default())
        .unwrap();
    assert_eq!(model.num_params(), closed_form);
    // Untied adds the head, [C, V] without bias; no bias removes 2C per LayerNorm and
    // every Linear bias: nanoGPT's 10.65M (it does not count wpe).
    let untied = GptConfig {
        tie_weights: false,
        ..config.clone()
    };
    let untied = ModelConfig::Gpt(untied)
        .init::<B>(0, &Default::default())
        .unwrap();
    assert_eq!(untied.num_params(), closed_form + c * v);
    let no_bias = GptConfig {
        bias: false,
        ..config.clone()
    };
    let no_bias = ModelConfig::Gpt(no_bias)
        .init::<B>(0, &Default::default())
        .unwrap();
    assert_eq!(no_bias.num_params() - t * c, 10_646_784);
    // Rotary positions drop wpe; RMSNorm drops every norm's shift (2C per block, C at
    // the end); the closed form of num_params agrees.
    let fast = GptConfig {
        position: quill_model::Position::Rotary,
        norm: quill_model::Norm::Rms,
        ..config
    };
    let model = ModelConfig::Gpt(fast.clone())
        .init::<B>(0, &Default::default())
        .unwrap();
    assert_eq!(model.num_params(), closed_form - t * c - (2 * l + 1) * c);
    assert_eq!(fast.num_params(), model.num_params() as f64);
}

#[test]
fn tiny_gpt_overfits_one_batch() {
    let device = Default::default();
    let config = GptConfig {
        n_embd: 32,
        ..gpt_config(11, true)
    };
    let mut model = ModelConfig::Gpt(config).init::<AB>(4, &device).unwrap();
    let mut rng = Rng::new(5);
    let x = random_ids(&mut rng, 4 * 8, 11);
    let y = random_ids(&mut rng, 4 * 8, 11);
    let to_t =
        |v: &[u32]| -> Tensor<AB, 2, Int> { quill_data::batch::ids_to_tensor(v, [4, 8], &device) };
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut loss = f32::INFINITY;
    for step in 0..300 {
        let l = model.loss(to_t(&x), to_t(&y)).unwrap();
        loss = l.clone().into_scalar();
        if loss < 0.1 {
            eprintln!("loss {loss} after {step} steps");
            break;
        }
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    assert!(loss < 0.1, "loss {loss} after 300 steps");
}

/// Every parameter's declared name and decay group, sorted by name.
fn decay_groups<BB: Backend>(model: &LanguageModel<BB>) -> Vec<(String, bool)> {
    struct Specs(quill_model::params::ParamSpecs, Vec<(String, bool)>);
    impl<BB: Backend> burn::module::ModuleVisitor<BB> for Specs {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<BB, D>>) {
            let spec = self.0.get(&param.id).expect("declared");
            self.1.push((spec.name.clone(), spec.decays));
        }
    }
    let mut specs = Specs(model.param_specs(), Vec::new());
    model.visit(&mut specs);
    specs.1.sort();
    specs.1
}

#[test]
fn the_model_declares_nanogpts_decay_groups() {
    let device = Default::default();
    let decaying = |tie: bool| -> Vec<String> {
        let model = ModelConfig::Gpt(GptConfig {
            n_layer: 1,
            ..gpt_config(11, tie)
        });
        let groups = decay_groups(&model.init::<B>(0, &device).unwrap());
        assert_eq!(groups.len(), if tie { 16 } else { 17 }, "{groups:?}");
        groups
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(n, _)| n)
            .collect()
    };
    let linear = [
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight",
    ];
    // Linear weights decay; biases, LayerNorms and wpe never; wte only when it is also
    // the LM head's weight.
    assert_eq!(
        decaying(true),
        [&linear[..], &["transformer.wte.weight"]].concat()
    );
    assert_eq!(decaying(false), [&["lm_head.weight"], &linear[..]].concat());
    let bigram = BigramConfig {
        vocab_size: 5,
        block_size: 4,
        n_embd: 8,
    };
    let groups = decay_groups(&ModelConfig::Bigram(bigram).init::<B>(0, &device).unwrap());
    let names: Vec<(&str, bool)> = groups.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    assert_eq!(
        names,
        [
            ("lm_head.bias", false),
            ("lm_head.weight", true),
            ("position_embedding_table.weight", false),
            ("token_embedding_table.weight", false),
        ]
    );
}

#[test]
fn parameters_round_trip_through_pytorch_names() {
    let device = Default::default();
    let config = ModelConfig::Gpt(gpt_config(11, true));
    let source = config.init::<B>(1, &device).unwrap();
    let exported = export(&source);
    let names: Vec<&str> = exported.iter().map(|t| t.name.as_str()).collect();
    for expected in [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_proj.bias",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let c_attn = exported
        .iter()
        .find(|t| t.name == "transformer.h.0.attn.c_attn.weight")
        .unwrap();
    assert_eq!(
        c_attn.shape,
        vec![48, 16],
        "Linear weights are [out, in] like torch"
    );

    let map: BTreeMap<String, _> = exported
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let target = import(config.init::<B>(2, &device).unwrap(), &map).unwrap();
    let input = ids::<B>(&[&[1, 2, 3, 4]]);
    assert_eq!(
        to_vec(source.forward(input.clone()).unwrap()),
        to_vec(target.forward(input).unwrap())
    );

    let mut missing = map.clone();
    missing.remove("transformer.ln_f.bias");
    let err = import(config.init::<B>(2, &device).unwrap(), &missing).unwrap_err();
    assert_eq!(
        err,
        ModelError::MissingTensor("transformer.ln_f.bias".into())
    );
    let mut extra = map.clone();
    extra.insert(
        "transformer.h.9.ln_1.weight".into(),
        map["transformer.ln_f.bias"].clone(),
    );
    let err = import(config.init::<B>(2, &device).unwrap(), &extra).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unexpected tensor transformer.h.9.ln_1.weight"
    );

    let wider = ModelConfig::Gpt(gpt_config(12, true))
        .init::<B>(2, &device)
        .unwrap();
    let err = import(wider, &map).unwrap_err().to_string();
    assert!(
        err.contains("transformer.wte.weight has shape [11, 16], the model needs [12, 16]"),
        "{err}"
    );

    let bigram = ModelConfig::Bigram(BigramConfig {
        vocab_size: 11,
        block_size: 8,
        n_embd: 16,
    });
    let err = import(bigram.init::<B>(0, &device).unwrap(), &map)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing tensor token_embedding_table.weight"),
        "{err}"
    );
}

#[test]
fn generation_is_seeded_and_greedy_is_argmax() {
    let model = ModelConfig::Gpt(gpt_config(11, true))
        .init::<B>(8, &Default::default())
        .unwrap();
    let prompt = vec![vec![1u32, 2, 3]];
    let sampled = |seed| {
        let options = SamplingOptions {
            seed,
            ..Default::default()
        };
        generate(&model, &prompt, 20, &options, |_| true).unwrap()
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));

    let greedy = generate(&model, &prompt, 12, &SamplingOptions::greedy(), |_| true).unwrap();
    let top1 = SamplingOptions {
        top_k: Some(1),
        seed: 99,
        ..Default::default()
    };
    assert_eq!(
        generate(&model, &prompt, 12, &top1, |_| true).unwrap(),
        greedy
    );
    // Each greedy token is the argmax of the model's logits for its context window.
    let row = &greedy[0];
    let mut start = 0;
    for n in 3..row.len() {
        start = window_start(start, n, 8);
        let logits = to_vec(model.forward(ids(&[&row[start..n]])).unwrap());
        let last = &logits[logits.len() - 11..];
        let argmax = (0..11).fold(0, |best, i| if last[i] > last[best] { i } else { best });
        assert_eq!(row[n] as usize, argmax);
    }
    // Stopping early.
    let mut steps = 0;
    let out = generate(&model, &prompt, 50, &SamplingOptions::default(), |_| {
        steps += 1;
        steps < 5
    })
    .unwrap();
    assert_eq!(out[0].len(), 3 + 5);
}

#[test]
fn num_params_counts_the_models_parameters() {
    let mut configs = Vec::new();
    for (tie_weights, bias) in [(true, true), (false, true), (true, false), (false, false)] {
        configs.push(ModelConfig::Gpt(GptConfig {
            bias,
            ..gpt_config(11, tie_weights)
        }));
    }
    configs.push(ModelConfig::Bigram(BigramConfig {
        vocab_size: 11,
        block_size: 8,
        n_embd: 6,
    }));
    for config in configs {
        let model = config.init::<B>(1, &Default::default()).unwrap();
        let counted = match &model {
            quill_model::LanguageModel::Gpt(m) => m.num_params(),
            quill_model::LanguageModel::Bigram(m) => m.num_params(),
        };
        assert_eq!(config.num_params(), counted as f64, "{config:?}");
    }
}
