//! The lecture's "mathematical trick in self-attention": three ways of averaging each
//! position with its past agree.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Distribution, Tensor};
use burn_ndarray::NdArray;

type B = NdArray<f32>;

#[test]
fn prefix_average_three_ways_agree() {
    let device = Default::default();
    let (b, t, c) = (4, 8, 2);
    let x = Tensor::<B, 3>::random([b, t, c], Distribution::Normal(0.0, 1.0), &device);

    // 1. Explicit loop: xbow[b, t] = mean(x[b, 0..=t]).
    let xbow1 = Tensor::cat(
        (0..t)
            .map(|i| x.clone().narrow(1, 0, i + 1).mean_dim(1))
            .collect(),
        1,
    ); // [B, T, C]

    // 2. Matrix multiply by the row-normalised lower triangle.
    let lower = Tensor::<B, 2>::ones([t, t], &device).tril(0);
    let wei = lower.clone() / lower.sum_dim(1); // [T, T]
    let xbow2 = wei.reshape([1, t, t]).matmul(x.clone()); // [B, T, C]

    // 3. Softmax of zeros with the future masked to −∞.
    let future = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, &device);
    let wei = Tensor::<B, 2>::zeros([t, t], &device).mask_fill(future, f32::NEG_INFINITY);
    let xbow3 = softmax(wei, 1).reshape([1, t, t]).matmul(x); // [B, T, C]

    xbow1.clone().into_data().assert_approx_eq::<f32>(
        &xbow2.clone().into_data(),
        burn::tensor::Tolerance::absolute(1e-6),
    );
    xbow2
        .into_data()
        .assert_approx_eq::<f32>(&xbow3.into_data(), burn::tensor::Tolerance::absolute(1e-6));
}
