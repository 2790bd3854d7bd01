//! Each operation's fast path (the fused kernels on `Autodiff<Flex>`) against its
//! reference `_slow` version, same inputs: outputs and input gradients.

use burn::nn::DropoutConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_model::ops;

type AB = Autodiff<Flex>;

/// `f` on a random `[2, 5, c]` input: output and the gradient of `Σ output²`.
fn run(c: usize, seed: u64, f: impl Fn(Tensor<AB, 3>) -> Tensor<AB, 3>) -> [Vec<f32>; 2] {
    AB::seed(&Default::default(), seed);
    let x = Tensor::<AB, 3>::random(
        [2, 5, c],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
    .require_grad();
    let y = f(x.clone());
    let grads = y.clone().powi_scalar(2).sum().backward();
    let dx = x.grad(&grads).unwrap();
    [
        y.into_data().to_vec().unwrap(),
        dx.into_data().to_vec().unwrap(),
    ]
}

fn assert_close(what: &str, fast: [Vec<f32>; 2], slow: [Vec<f32>; 2]) {
    for (part, (a, b)) in ["output", "gradient"].iter().zip(fast.iter().zip(&slow)) {
        let err = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(err < 2e-5, "{what}: {part} differs by {err:e}");
    }
}

#[test]
fn fast_paths_equal_their_reference_versions() {
    let device = Default::default();
    let gamma = Tensor::<AB, 1>::random([12], Distribution::Normal(1.0, 0.3), &device);
    let beta = Tensor::<AB, 1>::random([12], Distribution::Normal(0.0, 0.3), &device);
    let ln = |slow: bool| {
        let (gamma, beta) = (gamma.clone(), Some(beta.clone()));
        move |x| match slow {
            false => ops::layer_norm(x, gamma.clone(), beta.clone(), 1e-5),
            true => ops::layer_norm_slow(x, gamma.clone(), beta.clone(), 1e-5),
        }
    };
    assert_close("layer_norm", run(12, 1, ln(false)), run(12, 1, ln(true)));
    assert_close("gelu", run(12, 2, ops::gelu), run(12, 2, ops::gelu_slow));

    let w = Tensor::<AB, 2>::random([12, 7], Distribution::Normal(0.0, 0.3), &device);
    let b = Tensor::<AB, 1>::random([7], Distribution::Normal(0.0, 0.3), &device);
    let linear = |slow: bool| {
        let (w, b) = (w.clone(), b.clone());
        move |x: Tensor<AB, 3>| {
            let x = x.reshape([10, 12]);
            let y = match slow {
                false => ops::linear(x, w.clone(), Some(b.clone())),
                true => ops::linear_slow(x, w.clone(), Some(b.clone())),
            };
            y.reshape([2, 5, 7])
        }
    };
    assert_close(
        "linear",
        run(12, 3, linear(false)),
        run(12, 3, linear(true)),
    );

    // Rotary positions of 3 heads of 4, at positions 7..12 (after a cache of 7).
    assert_close(
        "rotary",
        run(36, 5, |x| ops::rotary(x, 3, 7)),
        run(36, 5, |x| ops::rotary_slow(x, 3, 7)),
    );

    // 3 heads of 4 over a [2, 5, 3·12] projection; dropout 0 takes the fused path.
    let dropout = DropoutConfig::new(0.0).init();
    let attention = |x| ops::causal_attention(x, 3, &dropout, None);
    let attention_slow = |x| ops::causal_attention_slow(x, 3, &dropout, None);
    assert_close(
        "attention",
        run(36, 4, attention),
        run(36, 4, attention_slow),
    );

    // Cross-entropy of the 10 rows of 9 classes, each row's loss broadcast back.
    let targets = Tensor::<AB, 1, Int>::from_data([3, 0, 8, 1, 1, 5, 7, 2, 6, 4], &device);
    let cross_entropy = |slow: bool| {
        let targets = targets.clone();
        move |x: Tensor<AB, 3>| {
            let x = x.reshape([10, 9]);
            let loss = match slow {
                false => ops::cross_entropy(x, targets.clone()),
                true => ops::cross_entropy_slow(x, targets.clone()),
            };
            loss.reshape([1, 1, 1]).expand([2, 5, 1])
        }
    };
    assert_close(
        "cross_entropy",
        run(9, 6, cross_entropy(false)),
        run(9, 6, cross_entropy(true)),
    );
}
