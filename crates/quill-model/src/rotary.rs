//! Rotary position embeddings (RoFormer, as modded-nanogpt and Llama use them): instead
//! of adding a learned position vector to each token, every head's query and key are
//! rotated by angles proportional to their absolute position, so that `q·k` depends on
//! the offset between two positions only.
//!
//! Each head's `hs` features are `hs/2` pairs `(x₁, x₂)` = (feature `i`, feature
//! `i + hs/2`); pair `i` at position `p` turns by `p·θᵢ`, `θᵢ = BASE^(−2i/hs)`:
//! `(x₁·cos + x₂·sin, −x₁·sin + x₂·cos)`.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// The base of the rotation frequencies (RoFormer's).
pub const BASE: f64 = 10_000.0;

/// `cos` and `sin` of every pair's angle at positions `past..past + t`, `[1, T, 1, hs/2]`
/// each, computed on the host in `f64`.
fn angles<B: Backend>(t: usize, past: usize, hs: usize, device: &B::Device) -> [Tensor<B, 4>; 2] {
    let half = hs / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in past..past + t {
        for i in 0..half {
            let theta = BASE.powf(-2.0 * i as f64 / hs as f64);
            let (s, c) = (p as f64 * theta).sin_cos();
            cos.push(c as f32);
            sin.push(s as f32);
        }
    }
    [cos, sin].map(|v| Tensor::from_data(TensorData::new(v, [1, t, 1, half]), device))
}

/// Rotates `x` `[B, T, nh·hs]` (one head after another, as a projection writes them),
/// whose positions are `past..past + T`.
pub fn rotate<B: Backend>(x: Tensor<B, 3>, n_head: usize, past: usize) -> Tensor<B, 3> {
    let [b, t, c] = x.dims();
    let (hs, half) = (c / n_head, c / n_head / 2);
    let [cos, sin] = angles::<B>(t, past, hs, &x.device()); // [1, T, 1, hs/2]
    let x = x.reshape([b, t, n_head, hs]);
    let x1 = x.clone().narrow(3, 0, half); // [B, T, nh, hs/2]
    let x2 = x.narrow(3, half, half);
    let y1 = x1.clone() * cos.clone() + x2.clone() * sin.clone();
    let y2 = x2 * cos - x1 * sin;
    Tensor::cat(vec![y1, y2], 3).reshape([b, t, c]) // [B, T, C]
}

/// Rotates the queries and keys of `qkv` `[B, T, 3C]` (queries, keys, values side by
/// side) at positions `past..past + T`; the values pass unchanged.
pub fn rotate_qk<B: Backend>(qkv: Tensor<B, 3>, n_head: usize, past: usize) -> Tensor<B, 3> {
    let c = qkv.dims()[2] / 3;
    let part = |i: usize| qkv.clone().narrow(2, i * c, c); // [B, T, C]
    let (q, k, v) = (part(0), part(1), part(2));
    Tensor::cat(vec![rotate(q, n_head, past), rotate(k, n_head, past), v], 2) // [B, T, 3C]
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    type B = NdArray;

    #[test]
    fn pairs_turn_by_position_times_frequency() {
        // One head of 4 features: pairs (0, 2) at θ₀ = 1 and (1, 3) at θ₁ = 1/100.
        let x = Tensor::<B, 3>::from_data([[[1.0, 2.0, 3.0, 4.0]; 2]], &Default::default());
        let y: Vec<f32> = rotate(x, 1, 5).into_data().to_vec().unwrap();
        for (p, row) in [(5.0f64, &y[..4]), (6.0, &y[4..])] {
            let (s0, c0) = p.sin_cos();
            let (s1, c1) = (p / 100.0).sin_cos();
            let want = [
                1.0 * c0 + 3.0 * s0,
                2.0 * c1 + 4.0 * s1,
                3.0 * c0 - 1.0 * s0,
                4.0 * c1 - 2.0 * s1,
            ];
            for (got, want) in row.iter().zip(want) {
                assert!((*got as f64 - want).abs() < 1e-5, "{row:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn scores_depend_on_the_offset_only() {
        let device = Default::default();
        let q = Tensor::<B, 3>::from_data([[[0.3, -1.2, 0.7, 2.0]]], &device);
        let k = Tensor::<B, 3>::from_data([[[1.1, 0.4, -0.6, 0.9]]], &device);
        let score = |pq, pk| -> f32 {
            let (q, k) = (rotate(q.clone(), 1, pq), rotate(k.clone(), 1, pk));
            (q * k).sum().into_scalar()
        };
        assert!((score(7, 3) - score(24, 20)).abs() < 1e-5);
        assert!((score(7, 3) - score(7, 4)).abs() > 1e-3);
    }
}
