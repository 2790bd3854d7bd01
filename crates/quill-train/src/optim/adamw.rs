//! AdamW's update of one parameter, as PyTorch's `torch.optim.AdamW` computes it
//! (decoupled weight decay, bias-corrected moments): in tensor operations here, and as
//! the fused CPU kernel's one pass (`quill_kernels::AdamWUpdate`) on Flex.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// One AdamW step's constants for one parameter, as `f32` (the precision of the
/// update).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hyper {
    /// Gradient scale: 1 / micro-batches, times the clipping coefficient.
    pub(super) scale: f32,
    pub(super) beta1: f32,
    pub(super) beta2: f32,
    /// `1 − lr·weight_decay` for decaying parameters, else 1.
    pub(super) decay: f32,
    /// `lr / (1 − β₁ᵗ)`.
    pub(super) step_size: f32,
    /// `√(1 − β₂ᵗ)`.
    pub(super) sqrt_bias_correction2: f32,
    pub(super) eps: f32,
}

impl Hyper {
    /// The update in Burn tensor operations: `(p, m, v)` after the step.
    pub(super) fn update_tensors<B: Backend>(
        &self,
        p: Tensor<B, 1>,
        g: Tensor<B, 1>,
        m: Tensor<B, 1>,
        v: Tensor<B, 1>,
    ) -> (Tensor<B, 1>, Tensor<B, 1>, Tensor<B, 1>) {
        let g = g * self.scale;
        let m = m * self.beta1 + g.clone() * (1.0 - self.beta1);
        let v = v * self.beta2 + g.powi_scalar(2) * (1.0 - self.beta2);
        let denom = v.clone().sqrt() / self.sqrt_bias_correction2 + self.eps;
        let p = p * self.decay - m.clone() / denom * self.step_size;
        (p, m, v)
    }

    /// The same update as the fused CPU kernel takes it (one pass over host values).
    #[cfg(feature = "fused-cpu")]
    pub(super) fn kernel(&self) -> quill_kernels::AdamWUpdate {
        quill_kernels::AdamWUpdate {
            scale: self.scale,
            beta1: self.beta1,
            beta2: self.beta2,
            decay: self.decay,
            step_size: self.step_size,
            sqrt_bias_correction2: self.sqrt_bias_correction2,
            eps: self.eps,
        }
    }
}

#[cfg(all(test, feature = "fused-cpu"))]
mod tests {
    use super::*;
    use burn_ndarray::NdArray;

    /// Values of a vector that spans several host chunks and ends in a partial one.
    fn ramp(len: usize, offset: f32, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| offset + scale * ((i * 7919) % 1000) as f32 / 1000.0)
            .collect()
    }

    #[test]
    fn the_fused_update_is_the_tensor_operations_update_bit_for_bit() {
        let len = 2 * (1 << 14) + 7;
        let (p, g, m) = (
            ramp(len, -0.5, 1.0),
            ramp(len, -0.1, 0.2),
            ramp(len, -0.01, 0.02),
        );
        let v = ramp(len, 1e-6, 1e-3);
        let hyper = Hyper {
            scale: 0.7,
            beta1: 0.9,
            beta2: 0.99,
            decay: 1.0 - 1e-3 * 0.1,
            step_size: 1e-3 / (1.0 - 0.9f32.powi(3)),
            sqrt_bias_correction2: (1.0 - 0.99f32.powi(3)).sqrt(),
            eps: 1e-8,
        };
        let by_value = hyper.kernel().apply(&p, &g, &m, &v);
        let device = Default::default();
        let tensor = |x: &[f32]| Tensor::<NdArray, 1>::from_floats(x, &device);
        let (p2, m2, v2) = hyper.update_tensors(tensor(&p), tensor(&g), tensor(&m), tensor(&v));
        for (values, tensor) in by_value.iter().zip([p2, m2, v2]) {
            assert_eq!(values, &tensor.into_data().to_vec::<f32>().unwrap());
        }
    }
}
