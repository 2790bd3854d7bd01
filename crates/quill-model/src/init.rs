//! GPT-2 / nanoGPT initialisation, drawn on the host from quill's own generator so the
//! same seed gives bit-identical weights on every backend.

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use quill_data::Rng;

/// Standard deviation of every weight but the residual projections.
pub const INIT_STD: f64 = 0.02;

/// `N(0, std²)` values by the Box–Muller transform.
fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.next_f64(); // (0, 1]: ln is finite
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let theta = std::f64::consts::TAU * u2;
        out.push((r * theta.cos()) as f32);
        out.push((r * theta.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A parameter of `shape` drawn from `N(0, std²)`.
pub fn normal_param<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let values = normal(rng, shape.iter().product(), std);
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// A `[n, d]` embedding table with `N(0, 0.02²)` entries.
pub fn embedding<B: Backend>(
    n: usize,
    d: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Embedding<B> {
    Embedding {
        weight: normal_param([n, d], INIT_STD, rng, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_the_asked_std() {
        let xs = normal(&mut Rng::new(0), 100_001, 0.02);
        assert_eq!(xs.len(), 100_001);
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 2e-4, "{mean}");
        assert!((var.sqrt() - 0.02).abs() < 2e-4, "{}", var.sqrt());
    }
}
