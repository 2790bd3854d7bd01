//! Muon against a direct host implementation of Keller Jordan's reference code: the
//! Newton–Schulz orthogonalisation on small matrices, and two optimizer steps of a tiny
//! GPT in which Muon moves the hidden matrices and AdamW everything else.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Tensor};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use burn_ndarray::NdArray;
use quill_data::Rng;
use quill_data::batch::ids_to_tensor;
use quill_model::params::export;
use quill_model::{Activation, GptConfig, LanguageModel, ModelConfig, Norm, Position};
use quill_train::muon::{self, NEWTON_SCHULZ, NEWTON_SCHULZ_STEPS};
use quill_train::{GradBuffer, Optimizer, StepOptions};

type Matrix = Vec<Vec<f64>>;

fn matmul(a: &Matrix, b: &Matrix) -> Matrix {
    let (n, k, m) = (a.len(), b.len(), b[0].len());
    let mut c = vec![vec![0.0; m]; n];
    for i in 0..n {
        for j in 0..m {
            c[i][j] = (0..k).map(|l| a[i][l] * b[l][j]).sum();
        }
    }
    c
}

fn transpose(a: &Matrix) -> Matrix {
    (0..a[0].len())
        .map(|j| a.iter().map(|row| row[j]).collect())
        .collect()
}

fn lin(x: f64, a: &Matrix, y: f64, b: &Matrix) -> Matrix {
    a.iter()
        .zip(b)
        .map(|(ra, rb)| ra.iter().zip(rb).map(|(u, v)| x * u + y * v).collect())
        .collect()
}

/// `zeropower_via_newtonschulz5` of modded-nanogpt, in f64: transpose a tall matrix,
/// divide by the Frobenius norm, five quintic steps, transpose back.
fn newton_schulz(g: &Matrix) -> Matrix {
    let tall = g.len() > g[0].len();
    let g = if tall { transpose(g) } else { g.clone() };
    let norm = g.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    let mut x: Matrix = lin(1.0 / (norm + 1e-7), &g, 0.0, &g);
    let (a, b, c) = NEWTON_SCHULZ;
    for _ in 0..NEWTON_SCHULZ_STEPS {
        let gram = matmul(&x, &transpose(&x));
        let poly = lin(b as f64, &gram, c as f64, &matmul(&gram, &gram));
        x = lin(a as f64, &x, 1.0, &matmul(&poly, &x));
    }
    if tall { transpose(&x) } else { x }
}

fn to_matrix(values: &[f32], cols: usize) -> Matrix {
    values
        .chunks(cols)
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect()
}

fn max_diff(a: &Matrix, b: &Matrix) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn orthogonalize_matches_newton_schulz_on_wide_and_tall_matrices() {
    orthogonalize_matches::<Flex>();
    orthogonalize_matches::<NdArray>();
}

fn orthogonalize_matches<B: Backend>() {
    let device = Default::default();
    B::seed(&device, 3);
    let shapes = [[3, 5], [6, 4], [8, 8]];
    let gs: Vec<Tensor<B, 2>> = (shapes.iter())
        .map(|&s| Tensor::random(s, Distribution::Normal(0.0, 0.5), &device))
        .collect();
    // All at once (the optimizer's call: on Flex, spread over the cores) and one by one
    // agree, in order.
    let all = muon::orthogonalize_all(gs.clone());
    for (together, g) in all.into_iter().zip(&gs) {
        let alone = muon::orthogonalize_slow(g.clone());
        assert_eq!(together.dims(), alone.dims());
        let err: f32 = (together - alone).abs().max().into_scalar().elem();
        assert!(err < 1e-5, "{:?}: differs by {err:e}", g.dims());
    }
    for ([m, n], g) in shapes.into_iter().zip(gs) {
        let host = to_matrix(&g.to_data().to_vec::<f32>().unwrap(), n);
        let want = newton_schulz(&host);
        // The fused kernel (on Flex) and the version in Burn's operations.
        for got in [
            muon::orthogonalize(g.clone()),
            muon::orthogonalize_slow(g.clone()),
        ] {
            let got = to_matrix(&got.into_data().to_vec::<f32>().unwrap(), n);
            let err = max_diff(&got, &want);
            assert!(err < 1e-4, "[{m}, {n}]: differs by {err:e}");
        }
        // Orthogonalised: every singular value near 1, so X·Xᵀ (of the wide side) ≈ I.
        let wide = if m <= n {
            want.clone()
        } else {
            transpose(&want)
        };
        let gram = matmul(&wide, &transpose(&wide));
        for (i, row) in gram.iter().enumerate() {
            assert!((0.4..1.5).contains(&row[i]), "[{m}, {n}]: σ² {}", row[i]);
        }
    }
}

type AB = Autodiff<Flex>;
const MU: f64 = 0.95;
const MUON_LR: f64 = 0.02;

fn tiny_gpt() -> LanguageModel<AB> {
    let config = ModelConfig::Gpt(GptConfig {
        vocab_size: 11,
        block_size: 6,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias: true,
        tie_weights: true,
        activation: Activation::Gelu,
        pad_vocab: 1,
        position: Position::Learned,
        norm: Norm::Layer,
        zero_init_proj: false,
    });
    config.init::<AB>(5, &Default::default()).unwrap()
}

fn params(model: &LanguageModel<AB>) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    export(model)
        .into_iter()
        .map(|t| (t.name, (t.shape, t.values)))
        .collect()
}

fn grads(model: &LanguageModel<AB>, rng: &mut Rng) -> GradBuffer<Flex> {
    let ids: Vec<u32> = (0..2 * 3 * 6).map(|_| rng.below(11) as u32).collect();
    let device = Default::default();
    let (x, y) = (
        ids_to_tensor(&ids[..18], [3, 6], &device),
        ids_to_tensor(&ids[18..], [3, 6], &device),
    );
    let mut buffer = GradBuffer::default();
    buffer.accumulate(model, &model.loss(x, y).unwrap().backward());
    buffer
}

#[test]
fn muon_moves_hidden_matrices_and_adamw_the_rest() {
    let options = StepOptions {
        lr: 0.01,
        grad_clip: 0.0,
        muon_lr: MUON_LR,
        loss_scale: None,
    };
    let hidden = [
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    ];
    let is_hidden = |name: &str| hidden.iter().any(|h| name.ends_with(h));
    let (mut with_muon, mut adamw) = (tiny_gpt(), tiny_gpt());
    let mut muon_optim = Optimizer::new(0.9, 0.99, 1e-8, 0.1).with_muon(MU);
    let mut adamw_optim = Optimizer::new(0.9, 0.99, 1e-8, 0.1);
    let mut buffers: BTreeMap<String, Matrix> = BTreeMap::new();
    let mut rng = Rng::new(9);
    for step in 0..2 {
        let before = params(&with_muon);
        let mut rng_copy = rng.clone();
        let g = grads(&with_muon, &mut rng);
        let g_adamw = grads(&adamw, &mut rng_copy);
        // The gradient of each hidden matrix, in PyTorch's [out, in] layout.
        let host: BTreeMap<String, Matrix> = before
            .iter()
            .filter(|(name, _)| is_hidden(name))
            .map(|(name, (shape, _))| {
                let flat = g
                    .gradient(name)
                    .unwrap()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap();
                // quill holds [in, out]: transpose to [out, in].
                (name.clone(), transpose(&to_matrix(&flat, shape[0])))
            })
            .collect();
        (with_muon, _) = muon_optim.step(with_muon, g, options);
        (adamw, _) = adamw_optim.step(adamw, g_adamw, options);
        let (after, after_adamw) = (params(&with_muon), params(&adamw));
        for (name, (shape, values)) in &after {
            let got = to_matrix(values, *shape.last().unwrap());
            if !is_hidden(name) {
                if step > 0 {
                    continue; // the models (and so the gradients) differ from here on
                }
                // Muon's matrices do not touch AdamW's update of the others.
                let want = to_matrix(&after_adamw[name].1, *shape.last().unwrap());
                assert!(max_diff(&got, &want) < 1e-6, "step {step} {name}");
                continue;
            }
            // buf ← μ·buf + (1−μ)·g; direction (1−μ)·g + μ·buf; p ← p − lr·√max(1, out/in)·NS.
            let g = &host[name];
            let buf = buffers
                .entry(name.clone())
                .or_insert_with(|| lin(0.0, g, 0.0, g));
            *buf = lin(MU, buf, 1.0 - MU, g);
            let direction = lin(1.0 - MU, g, MU, buf);
            let scale = (shape[0] as f64 / shape[1] as f64).max(1.0).sqrt();
            let p = to_matrix(&before[name].1, shape[1]);
            let want = lin(1.0, &p, -MUON_LR * scale, &newton_schulz(&direction));
            let err = max_diff(&got, &want);
            assert!(err < 2e-6, "step {step} {name}: differs by {err:e}");
            assert!(max_diff(&got, &p) > 1e-3, "step {step} {name} did not move");
        }
    }
}
