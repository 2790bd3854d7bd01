//! The fused Flex kernels under `Autodiff<Flex>`, as the
//! trainer runs them: outputs and gradients against exact references (closed forms and
//! central differences in f64) and against Burn's own LayerNorm.

use burn::module::Param;
use burn::nn::{LayerNormConfig, Linear};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_autodiff::Autodiff;
use burn_flex::Flex;
use quill_kernels as kernels;

type Fused = Autodiff<Flex>;

/// `n` values from `N(0, std²)`, fixed by `seed`.
fn random(n: usize, std: f64, seed: u64) -> Vec<f32> {
    Flex::seed(&Default::default(), seed);
    Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, std), &Default::default())
        .into_data()
        .to_vec()
        .unwrap()
}

/// Largest absolute difference.
fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, y)| (x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Asserts that each of the fused kernel's outputs is within 1e-5 of Burn's.
fn assert_close(what: [&str; 4], fused: &[Vec<f32>; 4], burn: &[Vec<f32>; 4], bias: bool) {
    for (what, (a, b)) in what.iter().zip(fused.iter().zip(burn)) {
        let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        let err = max_diff(a, &b);
        assert!(err < 1e-5, "bias {bias}: {what} off by {err:e}");
    }
}

/// Runs `f` on `input` (shape `[b, t, c]`, a tracked leaf); returns the output and the
/// gradient of `Σ output·weights` with respect to the input.
fn run<AB: AutodiffBackend>(
    input: &[f32],
    shape: [usize; 3],
    weights: &[f32],
    f: impl Fn(Tensor<AB, 3>) -> Tensor<AB, 3>,
) -> (Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let x =
        Tensor::<AB, 3>::from_data(TensorData::new(input.to_vec(), shape), &device).require_grad();
    let y = f(x.clone());
    let w = Tensor::<AB, 3>::from_data(TensorData::new(weights.to_vec(), y.dims()), &device);
    let grads = (y.clone() * w).sum().backward();
    let dx = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
    (y.into_data().to_vec().unwrap(), dx)
}

/// `erf` in f64 by Simpson's rule on `2/√π·e^(−t²)` (error far below f32's precision).
fn erf(x: f64) -> f64 {
    let n = 2000;
    let h = x / n as f64;
    let f = |t: f64| (-t * t).exp();
    let inner: f64 = (1..n).map(|i| f(i as f64 * h) * [2.0, 4.0][i % 2]).sum();
    (f(0.0) + f(x) + inner) * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn gelu_and_its_gradient_are_exact() {
    let shape = [3, 5, 64];
    let n = shape.iter().product();
    let (x, w) = (random(n, 3.0, 1), random(n, 1.0, 2));
    let (y, dx) = run::<Fused>(&x, shape, &w, |x| kernels::gelu(x).unwrap());
    let cdf = |x: f64| 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
    let pdf = |x: f64| (-x * x / 2.0).exp() / std::f64::consts::TAU.sqrt();
    let want_y: Vec<f64> = x.iter().map(|&x| x as f64 * cdf(x as f64)).collect();
    let want_dx: Vec<f64> = (x.iter().zip(&w))
        .map(|(&x, &w)| w as f64 * (cdf(x as f64) + x as f64 * pdf(x as f64)))
        .collect();
    let (ey, edx) = (max_diff(&y, &want_y), max_diff(&dx, &want_dx));
    assert!(
        ey < 2e-6 && edx < 2e-6,
        "output off by {ey:e}, gradient by {edx:e}"
    );
}

/// Causal attention in f64, the textbook way: `Σ_t Σ_c y·w` for `qkv` `[b, t, 3c]`.
fn attention_loss(qkv: &[f64], w: &[f32], [b, t, c, nh]: [usize; 4]) -> f64 {
    let hs = c / nh;
    let mut total = 0.0;
    for (bi, h, i) in
        (0..b).flat_map(|bi| (0..nh).flat_map(move |h| (0..t).map(move |i| (bi, h, i))))
    {
        let at =
            |r: usize, part: usize, d: usize| qkv[(bi * t + r) * 3 * c + part * c + h * hs + d];
        let dot = |j: usize| (0..hs).map(|d| at(i, 0, d) * at(j, 1, d)).sum::<f64>();
        let s: Vec<f64> = (0..=i).map(|j| dot(j) / (hs as f64).sqrt()).collect();
        let max = s.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
        let z: f64 = e.iter().sum();
        for d in 0..hs {
            let y: f64 = (0..=i).map(|j| e[j] / z * at(j, 2, d)).sum();
            total += y * w[(bi * t + i) * c + h * hs + d] as f64;
        }
    }
    total
}

#[test]
fn causal_attention_and_its_gradient_are_exact() {
    for (seed, [b, t, c, nh]) in [[2, 7, 12, 3], [1, 9, 8, 1], [3, 4, 16, 2]]
        .into_iter()
        .enumerate()
    {
        let dims = [b, t, c, nh];
        let qkv = random(b * t * 3 * c, 1.0, seed as u64);
        let w = random(b * t * c, 1.0, 100 + seed as u64);
        let (y, dqkv) = run::<Fused>(&qkv, [b, t, 3 * c], &w, |qkv| {
            kernels::causal_attention(qkv, nh).expect("Flex takes the fused path")
        });
        let x: Vec<f64> = qkv.iter().map(|&v| v as f64).collect();
        // Σ y·w with one-hot weights reads back single outputs.
        let loss = attention_loss(&x, &w, dims);
        let got: f64 = y.iter().zip(&w).map(|(&y, &w)| y as f64 * w as f64).sum();
        assert!(
            (got - loss).abs() < 1e-5,
            "{dims:?}: Σ y·w = {got}, want {loss}"
        );
        let h = 1e-5;
        let want: Vec<f64> = (0..x.len())
            .map(|i| {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                (attention_loss(&up, &w, dims) - attention_loss(&down, &w, dims)) / (2.0 * h)
            })
            .collect();
        let err = max_diff(&dqkv, &want);
        assert!(err < 1e-5, "{dims:?}: gradient off by {err:e}");
    }
}

#[test]
fn layer_norm_matches_burns_with_and_without_bias() {
    let (shape, c) = ([2, 6, 32], 32);
    let n = shape.iter().product();
    let (x, w) = (random(n, 2.0, 7), random(n, 1.0, 8));
    let (gamma, beta) = (random(c, 0.5, 9), random(c, 0.5, 10));
    assert!(
        kernels::serves::<Fused>(),
        "the fused kernels run on Autodiff<Flex>"
    );
    let device = Default::default();
    let vector =
        |v: &[f32]| Tensor::<Fused, 1>::from_data(TensorData::new(v.to_vec(), [c]), &device);
    for bias in [true, false] {
        // Outputs and gradients of x, γ and β (empty without bias), fused or Burn's.
        let outputs = |fused: bool| {
            let mut ln = LayerNormConfig::new(c)
                .with_bias(bias)
                .init::<Fused>(&device);
            ln.gamma = Param::from_tensor(vector(&gamma).require_grad());
            ln.beta = bias.then(|| Param::from_tensor(vector(&beta).require_grad()));
            let xt = Tensor::<Fused, 3>::from_data(TensorData::new(x.clone(), shape), &device)
                .require_grad();
            let y = match fused {
                true => kernels::layer_norm(
                    xt.clone(),
                    ln.gamma.val(),
                    ln.beta.as_ref().map(|b| b.val()),
                    1e-5,
                )
                .unwrap(),
                false => ln.forward(xt.clone()),
            };
            let wt = Tensor::<Fused, 3>::from_data(TensorData::new(w.clone(), shape), &device);
            let grads = (y.clone() * wt).sum().backward();
            let values = |t: Option<Tensor<Autodiff<Flex>, 1>>| -> Vec<f32> {
                t.map(|t| t.grad(&grads).unwrap().into_data().to_vec().unwrap())
                    .unwrap_or_default()
            };
            [
                y.into_data().to_vec().unwrap(),
                xt.grad(&grads).unwrap().into_data().to_vec().unwrap(),
                values(Some(ln.gamma.val())),
                values(ln.beta.as_ref().map(|b| b.val())),
            ]
        };
        let fused = outputs(true);
        assert_close(["y", "dx", "dγ", "dβ"], &fused, &outputs(false), bias);
        assert_eq!(fused[3].len(), if bias { c } else { 0 });
    }
}

#[test]
fn linear_matches_burns_matmul_plus_bias() {
    let (rows, d_in, d_out) = (37, 24, 20);
    let (x, w) = (random(rows * d_in, 1.0, 11), random(rows * d_out, 1.0, 12));
    let (weight, bias) = (random(d_in * d_out, 0.3, 13), random(d_out, 1.0, 14));
    assert!(
        kernels::serves::<Fused>(),
        "the fused kernels run on Autodiff<Flex>"
    );
    let device = Default::default();
    for with_bias in [true, false] {
        // Output and gradients of x, W and b (empty without bias), fused or Burn's.
        let outputs = |fused: bool| {
            let layer = Linear::<Fused> {
                weight: Param::from_tensor(
                    Tensor::from_data(TensorData::new(weight.clone(), [d_in, d_out]), &device)
                        .require_grad(),
                ),
                bias: with_bias.then(|| {
                    Param::from_tensor(
                        Tensor::from_data(TensorData::new(bias.clone(), [d_out]), &device)
                            .require_grad(),
                    )
                }),
            };
            let xt =
                Tensor::<Fused, 2>::from_data(TensorData::new(x.clone(), [rows, d_in]), &device)
                    .require_grad();
            let y = match fused {
                true => kernels::linear(
                    xt.clone(),
                    layer.weight.val(),
                    layer.bias.as_ref().map(|b| b.val()),
                )
                .unwrap(),
                false => {
                    let y = xt.clone().matmul(layer.weight.val());
                    match &layer.bias {
                        Some(b) => y + b.val().unsqueeze(),
                        None => y,
                    }
                }
            };
            let wt =
                Tensor::<Fused, 2>::from_data(TensorData::new(w.clone(), [rows, d_out]), &device);
            let grads = (y.clone() * wt).sum().backward();
            let bias_grad = layer.bias.as_ref().map(|b| b.val().grad(&grads).unwrap());
            [
                y.into_data().to_vec::<f32>().unwrap(),
                xt.grad(&grads).unwrap().into_data().to_vec().unwrap(),
                layer
                    .weight
                    .val()
                    .grad(&grads)
                    .unwrap()
                    .into_data()
                    .to_vec()
                    .unwrap(),
                bias_grad
                    .map(|g| g.into_data().to_vec().unwrap())
                    .unwrap_or_default(),
            ]
        };
        let fused = outputs(true);
        assert_close(["y", "dx", "dW", "db"], &fused, &outputs(false), with_bias);
        assert_eq!(fused[3].len(), if with_bias { d_out } else { 0 });
    }
}

/// Mean cross-entropy and its gradient in f64: `(1/N)·Σ (lse_i − x_{i,t_i})` and
/// `(softmax − one-hot)/N`.
fn cross_entropy_reference(logits: &[f32], targets: &[i64], v: usize) -> (f64, Vec<f64>) {
    let n = targets.len();
    let (mut loss, mut grad) = (0.0, vec![0.0; logits.len()]);
    for (i, &t) in targets.iter().enumerate() {
        let row: Vec<f64> = logits[i * v..(i + 1) * v]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        loss += (lse - row[t as usize]) / n as f64;
        for (j, x) in row.iter().enumerate() {
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            grad[i * v + j] = ((x - lse).exp() - onehot) / n as f64;
        }
    }
    (loss, grad)
}

#[test]
fn cross_entropy_and_its_gradient_are_exact() {
    let (n, v) = (13, 40);
    let device = Default::default();
    let logits = random(n * v, 2.0, 11);
    let targets: Vec<i64> = (0..n as i64).map(|i| (i * 7) % v as i64).collect();
    let (loss_ref, grad_ref) = cross_entropy_reference(&logits, &targets, v);
    let x = Tensor::<Fused, 2>::from_data(TensorData::new(logits.clone(), [n, v]), &device)
        .require_grad();
    let t = Tensor::<Fused, 1, burn::tensor::Int>::from_data(
        TensorData::new(targets.clone(), [n]),
        &device,
    );
    let loss = kernels::cross_entropy(x.clone(), t).expect("Autodiff<Flex> f32 is served");
    let grads = loss.clone().backward();
    let loss = loss.into_data().to_vec::<f32>().unwrap();
    assert!(
        max_diff(&loss, &[loss_ref]) < 2e-6,
        "loss {loss:?} against {loss_ref}"
    );
    let dx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
    let err = max_diff(&dx, &grad_ref);
    assert!(err < 1e-7, "gradient off by {err:e}");
    // Plain Flex, and logits read through a strided view (a narrowed, padded vocabulary).
    let padded: Vec<f32> = (0..n)
        .flat_map(|i| logits[i * v..(i + 1) * v].iter().cloned().chain([9.0; 3]))
        .collect();
    let padded = Tensor::<Flex, 2>::from_data(TensorData::new(padded, [n, v + 3]), &device);
    let t = Tensor::<Flex, 1, burn::tensor::Int>::from_data(TensorData::new(targets, [n]), &device);
    let plain = kernels::cross_entropy(padded.narrow(1, 0, v), t.clone()).unwrap();
    let plain = plain.into_data().to_vec::<f32>().unwrap();
    assert!(max_diff(&plain, &[loss_ref]) < 2e-6);
    // A target out of range hands the logits back, for the generic path to report.
    let wrong = t.clone() + v as i64;
    let back = kernels::cross_entropy(Tensor::<Flex, 2>::zeros([n, v], &device), wrong);
    assert_eq!(back.unwrap_err().dims(), [n, v]);
}

#[test]
fn f32_values_reach_host_kernels_on_plain_flex_only() {
    let device = Default::default();
    let flex = Tensor::<Flex, 1>::from_data(TensorData::new(vec![1f32, 2.0, 3.0], [3]), &device);
    let doubled = kernels::with_f32_values([&flex, &flex], |[a, b]| {
        a.iter().zip(b).map(|(x, y)| x + y).collect::<Vec<_>>()
    });
    assert_eq!(doubled, Some(vec![2.0, 4.0, 6.0]));
    // A strided view is read in row-major order.
    let m =
        Tensor::<Flex, 2>::from_data(TensorData::new(vec![1f32, 2.0, 3.0, 4.0], [2, 2]), &device);
    let column_major = kernels::with_f32_values([&m.transpose()], |[v]| v.to_vec());
    assert_eq!(column_major, Some(vec![1.0, 3.0, 2.0, 4.0]));
    let other = Tensor::<burn_ndarray::NdArray, 1>::from_data(
        TensorData::new(vec![1f32], [1]),
        &Default::default(),
    );
    assert_eq!(kernels::with_f32_values([&other], |[v]| v.len()), None);
    let tracked = Tensor::<Fused, 1>::from_data(TensorData::new(vec![1f32], [1]), &device);
    assert_eq!(kernels::with_f32_values([&tracked], |[v]| v.len()), None);
}

#[test]
fn other_backends_get_their_input_back() {
    type Other = burn_ndarray::NdArray<f32>;
    let device = Default::default();
    let x = Tensor::<Other, 3>::from_data(TensorData::new(vec![1f32; 24], [1, 2, 12]), &device);
    assert!(!kernels::serves::<Other>());
    let back = kernels::causal_attention(x.clone(), 2).unwrap_err();
    assert_eq!(back.into_data(), x.clone().into_data());
    let gamma = Tensor::<Other, 1>::ones([12], &device);
    assert!(kernels::layer_norm(x.clone(), gamma, None, 1e-5).is_err());
    assert!(kernels::gelu(x).is_err());
    let logits = Tensor::<Other, 2>::ones([2, 12], &device);
    let targets = Tensor::<Other, 1, burn::tensor::Int>::zeros([2], &device);
    assert!(kernels::cross_entropy(logits, targets).is_err());
}

/// Shapes that disagree stop the public kernels with a message before anything is
/// written (they never hand back uninitialised memory).
#[test]
fn kernels_refuse_shapes_that_disagree() {
    fn zeros2(shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::zeros(shape, &Default::default())
    }
    fn zeros1(n: usize) -> Tensor<Flex, 1> {
        Tensor::zeros([n], &Default::default())
    }
    fn x3() -> Tensor<Flex, 3> {
        Tensor::zeros([1, 2, 6], &Default::default())
    }
    type Call = Box<dyn FnOnce() + std::panic::UnwindSafe>;
    let message = |f: Call| -> String {
        let err = std::panic::catch_unwind(f).expect_err("should stop");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let cases: [(Call, &str); 5] = [
        (
            Box::new(move || drop(kernels::layer_norm(x3(), zeros1(4), None, 1e-5))),
            "layer_norm: γ has 4 values for rows of 6",
        ),
        (
            Box::new(move || drop(kernels::layer_norm(x3(), zeros1(6), Some(zeros1(5)), 1e-5))),
            "layer_norm: β has 5 values for rows of 6",
        ),
        (
            Box::new(move || drop(kernels::linear(zeros2([2, 3]), zeros2([4, 5]), None))),
            "linear: x has 3 columns but the weight 4 rows",
        ),
        (
            Box::new(move || {
                drop(kernels::linear(
                    zeros2([2, 3]),
                    zeros2([3, 5]),
                    Some(zeros1(2)),
                ))
            }),
            "linear: the bias has 2 values for 5 outputs",
        ),
        (
            Box::new(move || drop(kernels::causal_attention(x3(), 4))),
            "causal_attention: 6 columns are not q, k and v of 4 equal heads",
        ),
    ];
    for (f, expected) in cases {
        let message = message(f);
        assert!(message.contains(expected), "{message}");
    }
}
