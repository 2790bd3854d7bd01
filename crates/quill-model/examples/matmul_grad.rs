//! The "Let's build GPT" notebook's matmul-gradient cell, done right.
//!
//! For C = A·B with A (2×3) and B (3×2), L = sum(C) has dL/dA = ones(2×2)·Bᵀ, and the
//! element-wise Jacobian is ∂C_ij/∂A_kl = δ_ik·B_lj. Run with
//! `cargo run --release -p quill-model --example matmul_grad`; both checks print `True`,
//! as the notebook's `print` would have.
//
// Why the notebook printed `False`: every entry A_kl reaches C_kj for *every* column j, with
// weight B_lj, so dL/dA_kl = Σ_j B_lj: the upstream gradient ones(2×2) multiplied by Bᵀ
// on the right (shape 2×3, like A). Comparing A.grad with B, with ones·B, or with a
// Jacobian lacking the δ_ik factor compares different numbers (or shapes); and two
// floating-point results must be compared with a tolerance, never with `==`.

use burn::tensor::Tensor;
use burn_autodiff::Autodiff;
use burn_ndarray::NdArray;

type B = Autodiff<NdArray<f64>>;

fn main() {
    let device = Default::default();
    let a = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device).require_grad();
    let b = Tensor::<B, 2>::from_floats([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]], &device);

    let c = a.clone().matmul(b.clone()); // [2, 2]
    let grads = c.sum().backward();
    let grad_a = a.grad(&grads).expect("A requires grad"); // [2, 3]

    let b_inner = b.inner();
    let expected =
        Tensor::<NdArray<f64>, 2>::ones([2, 2], &device).matmul(b_inner.clone().transpose());
    println!(
        "dL/dA == ones(2x2)·Bᵀ: {}",
        python(grad_a.all_close(expected, Some(1e-12), Some(1e-12)))
    );
    println!(
        "Jacobian ∂C_ij/∂A_kl == δ_ik·B_lj: {}",
        python(jacobian_matches(&b_inner))
    );
}

/// A check's result as the notebook's Python prints it.
fn python(check: bool) -> &'static str {
    match check {
        true => "True",
        false => "False",
    }
}

/// Checks every entry of the Jacobian against δ_ik·B_lj, one backward pass per C_ij.
fn jacobian_matches(b: &Tensor<NdArray<f64>, 2>) -> bool {
    let device = Default::default();
    let b_host: Vec<f64> = b.to_data().to_vec().unwrap();
    let a = Tensor::<B, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device).require_grad();
    let b = Tensor::<B, 2>::from_inner(b.clone());
    let mut all = true;
    for i in 0..2 {
        for j in 0..2 {
            let c_ij = a
                .clone()
                .matmul(b.clone())
                .slice([i..i + 1, j..j + 1])
                .sum();
            let grads = c_ij.backward();
            let row: Vec<f64> = a.grad(&grads).unwrap().into_data().to_vec().unwrap();
            for k in 0..2 {
                for l in 0..3 {
                    let expected = if i == k { b_host[l * 2 + j] } else { 0.0 };
                    all &= (row[k * 3 + l] - expected).abs() < 1e-12;
                }
            }
        }
    }
    all
}
