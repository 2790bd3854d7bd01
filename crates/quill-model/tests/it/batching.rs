//! Continuous batching changes nothing a group generates: groups that join and leave
//! a [`Batcher`] at different steps, at different positions, greedy and sampled, with
//! more rows in all than the CPU kernels' few-row product takes, get exactly the
//! tokens [`generate`] gives each of them alone, inside and beyond the block; and a
//! grouped step's logits equal each group's own pass bit for bit.

use crate::common;

use burn::tensor::backend::Backend;
use burn_flex::Flex;
use burn_ndarray::NdArray;
use quill_data::batch::ids_to_tensor;
use quill_model::{
    Batcher, GptConfig, KvCache, LanguageModel, ModelError, Penalties, SamplingOptions, generate,
};

const BLOCK: usize = 8;
const VOCAB: usize = 13;

/// nanoGPT's recipe, or (`fast`) rotary positions, RMSNorm, ReLU² and an untied head
/// without biases; 32 wide.
fn model<B: Backend>(fast: bool) -> LanguageModel<B> {
    let config = GptConfig {
        n_embd: 32,
        bias: !fast,
        ..common::recipe(common::gpt_config(VOCAB, !fast), fast)
    };
    common::scaled_model(config, 5, 6.0)
}

/// A group: its prompts, options, the step it joins at and the steps it stays for.
struct Plan {
    prompts: Vec<Vec<u32>>,
    options: SamplingOptions,
    joins: usize,
    steps: usize,
}

fn plans() -> Vec<Plan> {
    let sampled = |seed, top_k, top_p| SamplingOptions {
        temperature: 0.9,
        top_k,
        top_p,
        seed,
        ..Default::default()
    };
    vec![
        Plan {
            prompts: vec![vec![1, 2, 3]; 3],
            options: SamplingOptions::greedy(),
            joins: 0,
            steps: 12,
        },
        Plan {
            prompts: vec![vec![4, 0, 9, 9, 2]],
            options: sampled(7, None, None),
            joins: 2,
            steps: 18,
        },
        Plan {
            prompts: vec![vec![6]; 10],
            options: sampled(3, Some(5), None),
            joins: 4,
            steps: 15,
        },
        Plan {
            prompts: vec![vec![1, 2, 3, 4, 5, 6, 7], vec![7, 6, 5, 4, 3, 2, 1]],
            options: sampled(11, None, Some(0.8)),
            joins: 5,
            steps: 14,
        },
        Plan {
            // Recomputes its window at every step, beside the cached groups.
            prompts: vec![vec![2, 2]; 2],
            options: SamplingOptions {
                kv_cache: false,
                ..sampled(5, None, None)
            },
            joins: 1,
            steps: 10,
        },
        Plan {
            // Penalised rows keep histories of their own.
            prompts: vec![vec![3, 1, 3], vec![5, 5, 5]],
            options: SamplingOptions {
                min_p: Some(0.1),
                penalties: Penalties {
                    repetition: 1.4,
                    frequency: 0.3,
                    presence: 0.2,
                },
                ..sampled(9, None, None)
            },
            joins: 3,
            steps: 16,
        },
    ]
}

fn groups_equal_their_runs_alone_on<B: Backend>(fast: bool) {
    let model = model::<B>(fast);
    let plans = plans();
    let mut batcher = Batcher::new(&model);
    let mut ids = vec![None; plans.len()];
    let mut got = vec![None; plans.len()];
    let mut most_rows = 0;
    for step in 0..40 {
        for (i, plan) in plans.iter().enumerate() {
            if plan.joins == step {
                ids[i] = Some(batcher.add(&plan.prompts, &plan.options).unwrap());
            }
            if plan.joins + plan.steps == step {
                got[i] = batcher.remove(ids[i].unwrap());
            }
        }
        if batcher.is_empty() {
            break;
        }
        most_rows = most_rows.max(batcher.rows());
        batcher.step().unwrap();
    }
    // More rows than one pass of the few-row products takes: two passes.
    assert!(
        most_rows > quill_model::ops::independent_rows::<B>().unwrap_or(16),
        "{most_rows} rows at most"
    );
    for (plan, got) in plans.iter().zip(got) {
        let alone = generate(&model, &plan.prompts, plan.steps, &plan.options, |_| true).unwrap();
        assert_eq!(got.unwrap(), alone, "fast {fast}, {:?}", plan.options);
    }
}

#[test]
fn groups_get_the_tokens_they_get_alone() {
    for fast in [false, true] {
        groups_equal_their_runs_alone_on::<Flex>(fast);
        groups_equal_their_runs_alone_on::<NdArray>(fast);
    }
}

/// Logits of one grouped step against each group's own cached pass.
fn grouped_logits_equal_each_group_alone_on<B: Backend>(fast: bool) {
    let model = model::<B>(fast);
    let device = Default::default();
    // Groups at positions 3, 6 and 1, of 4, 1 and 3 rows: 8 rows in all, one pass.
    let groups: [(usize, usize); 3] = [(4, 3), (1, 6), (3, 1)];
    let mut batched: Vec<KvCache<B>> = Vec::new();
    let mut alone: Vec<KvCache<B>> = Vec::new();
    let prompt = |rows: usize, len: usize, salt: u32| -> Vec<u32> {
        (0..rows * len)
            .map(|i| (i as u32 * 7 + salt) % VOCAB as u32)
            .collect()
    };
    for (g, &(rows, len)) in groups.iter().enumerate() {
        for caches in [&mut batched, &mut alone] {
            let mut cache = KvCache::new();
            let idx = ids_to_tensor(&prompt(rows, len, g as u32), [rows, len], &device);
            model.forward_cached(idx, Some(&mut cache)).unwrap();
            caches.push(cache);
        }
    }
    let newest: Vec<u32> = (0..8).map(|i| (i * 5 + 1) % VOCAB as u32).collect();
    let mut args: Vec<(usize, &mut KvCache<B>)> = groups
        .iter()
        .map(|&(rows, _)| rows)
        .zip(batched.iter_mut())
        .collect();
    let together = model
        .forward_groups(ids_to_tensor(&newest, [8, 1], &device), &mut args)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let mut expected = Vec::new();
    let mut offset = 0;
    for (&(rows, _), cache) in groups.iter().zip(alone.iter_mut()) {
        let idx = ids_to_tensor(&newest[offset..offset + rows], [rows, 1], &device);
        offset += rows;
        let logits = model.forward_cached(idx, Some(cache)).unwrap();
        expected.extend(logits.into_data().to_vec::<f32>().unwrap());
    }
    assert_eq!(together, expected, "fast {fast}");
    for (b, a) in batched.iter().zip(&alone) {
        assert_eq!(b.len(), a.len());
    }
}

#[test]
fn a_grouped_step_gives_each_group_its_own_logits() {
    for fast in [false, true] {
        grouped_logits_equal_each_group_alone_on::<Flex>(fast);
        grouped_logits_equal_each_group_alone_on::<NdArray>(fast);
    }
}

#[test]
fn a_full_cache_or_miscounted_rows_are_errors() {
    let model = model::<Flex>(false);
    let device = Default::default();
    let mut cache = KvCache::new();
    let idx = ids_to_tensor(&[1; BLOCK], [1, BLOCK], &device);
    model.forward_cached(idx, Some(&mut cache)).unwrap();
    let one = || ids_to_tensor(&[1], [1, 1], &device);
    let err = model
        .forward_groups(one(), &mut [(1, &mut cache)])
        .unwrap_err();
    assert!(
        matches!(err, ModelError::TooLong { len, block_size } if len == BLOCK + 1 && block_size == BLOCK),
        "{err}"
    );
    let mut empty = KvCache::new();
    assert!(model.forward_groups(one(), &mut [(2, &mut empty)]).is_err());
}

/// The next token by the penalties' definitions, computed here from the whole
/// window's logits: transformers' repetition penalty over the prompt and the generated
/// tokens, then OpenAI's frequency and presence penalties over the generated ones,
/// then the argmax.
fn greedy_by_definition<B: Backend>(
    model: &LanguageModel<B>,
    row: &[u32],
    prompt_len: usize,
    penalties: Penalties,
) -> u32 {
    let idx = ids_to_tensor(row, [1, row.len()], &Default::default());
    let logits = model.forward_cached(idx, None).unwrap();
    let all = logits.into_data().to_vec::<f32>().unwrap();
    let mut last: Vec<f64> = all[all.len() - VOCAB..].iter().map(|&l| l as f64).collect();
    for (token, logit) in last.iter_mut().enumerate() {
        let token = token as u32;
        if row.contains(&token) {
            *logit = if *logit > 0.0 {
                *logit / penalties.repetition
            } else {
                *logit * penalties.repetition
            };
        }
        let generated = row[prompt_len..].iter().filter(|&&t| t == token).count();
        *logit -= generated as f64 * penalties.frequency;
        if generated > 0 {
            *logit -= penalties.presence;
        }
    }
    let mut best = 0;
    for (i, &l) in last.iter().enumerate() {
        if l > last[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn penalties_follow_their_definitions() {
    let model = model::<Flex>(false);
    let prompt = vec![1, 2];
    let plain = generate(
        &model,
        std::slice::from_ref(&prompt),
        6,
        &SamplingOptions::greedy(),
        |_| true,
    )
    .unwrap()
    .remove(0);
    // Each penalty, and whether it changes this model's greedy text.
    for (penalties, changes) in [
        (
            Penalties {
                repetition: 6.0,
                ..Default::default()
            },
            true,
        ),
        (
            Penalties {
                repetition: 0.7,
                ..Default::default()
            },
            false,
        ),
        (
            Penalties {
                frequency: 1.5,
                ..Default::default()
            },
            true,
        ),
        (
            Penalties {
                presence: 2.0,
                ..Default::default()
            },
            false,
        ),
        (
            Penalties {
                repetition: 1.3,
                frequency: 0.5,
                presence: -0.4,
            },
            false,
        ),
    ] {
        let options = SamplingOptions {
            penalties,
            ..SamplingOptions::greedy()
        };
        let got = generate(&model, std::slice::from_ref(&prompt), 6, &options, |_| true)
            .unwrap()
            .remove(0);
        let mut expected = prompt.clone();
        while expected.len() < got.len() {
            expected.push(greedy_by_definition(
                &model,
                &expected,
                prompt.len(),
                penalties,
            ));
        }
        assert_eq!(got, expected, "{penalties:?}");
        assert_eq!(got != plain, changes, "{penalties:?}: {got:?} vs {plain:?}");
    }
}
