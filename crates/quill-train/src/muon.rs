//! Muon (Keller Jordan, 2024; the optimizer of the modded-nanogpt speedrun) for the
//! hidden matrices of a GPT: SGD with Nesterov momentum whose update is orthogonalised,
//! i.e. replaced by the nearest semi-orthogonal matrix `U·Vᵀ` (of `U·Σ·Vᵀ`), computed
//! by a few Newton–Schulz iterations instead of an SVD. Every direction of the update
//! then moves by the same amount, however small its gradient.
//!
//! Embeddings, the LM head, gains and biases stay with AdamW ([`crate::optim`]).

use burn::tensor::{Tensor, backend::Backend};

/// Coefficients `(a, b, c)` of the quintic Newton–Schulz step
/// `X ← a·X + (b·A + c·A²)·X`, `A = X·Xᵀ` (modded-nanogpt's: they push every singular
/// value of a normalised matrix towards 1 in few steps, roughly into [0.7, 1.2]).
pub const NEWTON_SCHULZ: (f32, f32, f32) = (3.4445, -4.7750, 2.0315);

/// Newton–Schulz steps per update.
pub const NEWTON_SCHULZ_STEPS: usize = 5;

/// The orthogonalisation of `g` `[m, n]`: `g` divided by its Frobenius norm, then
/// [`NEWTON_SCHULZ_STEPS`] quintic steps, run on the orientation whose `X·Xᵀ` is the
/// smaller (the result is the same up to rounding: the iteration commutes with
/// transposition).
pub fn orthogonalize<B: Backend>(g: Tensor<B, 2>) -> Tensor<B, 2> {
    let [m, n] = g.dims();
    let wide = m <= n;
    let g = if wide { g } else { g.transpose() }; // [r, s], r ≤ s
    let norm = g.clone().powi_scalar(2).sum().sqrt().reshape([1, 1]);
    let mut x = g / (norm + 1e-7);
    let (a, b, c) = NEWTON_SCHULZ;
    for _ in 0..NEWTON_SCHULZ_STEPS {
        let gram = x.clone().matmul(x.clone().transpose()); // [r, r]
        let poly = gram.clone() * b + gram.clone().matmul(gram) * c; // [r, r]
        x = x.clone() * a + poly.matmul(x); // [r, s]
    }
    if wide { x } else { x.transpose() }
}

/// One Muon step of a weight `p` `[in, out]` (quill's layout) with gradient `g` and
/// momentum buffer `buf`, both `[in, out]`: `buf ← μ·buf + (1−μ)·g`, the Nesterov
/// direction `(1−μ)·g + μ·buf` orthogonalised, and `p ← p − lr·√max(1, out/in)·O`
/// (the factor keeps the update's RMS per output in line for tall PyTorch matrices).
/// Returns `(p, buf)` after the step.
pub fn step<B: Backend>(
    p: Tensor<B, 2>,
    g: Tensor<B, 2>,
    buf: Tensor<B, 2>,
    lr: f64,
    momentum: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [d_in, d_out] = p.dims();
    let buf = buf * momentum + g.clone() * (1.0 - momentum);
    let direction = g * (1.0 - momentum) + buf.clone() * momentum;
    let scale = (d_out as f64 / d_in as f64).max(1.0).sqrt();
    let p = p - orthogonalize(direction) * (lr * scale);
    (p, buf)
}
