//! AdamW, as PyTorch's `torch.optim.AdamW` computes it (decoupled weight decay,
//! bias-corrected moments), element-wise: in tensor operations, and as the fused CPU
//! kernel's one pass (`quill_kernels::AdamWUpdate`) on Flex. Its state is the two
//! moments of each parameter, `exp_avg.<name>` and `exp_avg_sq.<name>` (PyTorch's).

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::host::adamw_on_host;
use super::rule::{Member, StepContext, UpdateRule};
use super::{to_f32, upload_f32};
use crate::TrainError;

const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";

/// AdamW's settings and its moments, by parameter name.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    moments: BTreeMap<String, (Tensor<B, 1>, Tensor<B, 1>)>,
    /// This step's gradients and whether each parameter decays, until applied.
    pending: BTreeMap<String, (Tensor<B, 1>, bool)>,
}

impl<B: Backend> AdamW<B> {
    /// AdamW with no moments yet.
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Self {
        AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            moments: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }
}

impl<B: Backend> UpdateRule<B> for AdamW<B> {
    fn name(&self) -> &'static str {
        "AdamW"
    }

    fn state_prefixes(&self) -> &'static [&'static str] {
        &[EXP_AVG, EXP_AVG_SQ]
    }

    fn begin(&mut self, grads: Vec<(Member, Tensor<B, 1>)>, _ctx: &StepContext) {
        self.pending = (grads.into_iter())
            .map(|(member, g)| (member.name, (g, member.decays)))
            .collect();
    }

    fn updates(&self, name: &str) -> bool {
        self.pending.contains_key(name)
    }

    fn apply(&mut self, name: &str, p: Tensor<B, 1>, ctx: &StepContext) -> Tensor<B, 1> {
        let (g, decays) = self.pending.remove(name).expect("updates(name)");
        let (m, v) = self
            .moments
            .remove(name)
            .unwrap_or_else(|| (p.zeros_like(), p.zeros_like()));
        let (t, lr) = (ctx.step as i32, ctx.lr);
        let hyper = Hyper {
            scale: ctx.scale as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            decay: match decays && self.weight_decay > 0.0 {
                true => (1.0 - lr * self.weight_decay) as f32,
                false => 1.0,
            },
            step_size: (lr / (1.0 - self.beta1.powi(t))) as f32,
            sqrt_bias_correction2: (1.0 - self.beta2.powi(t)).sqrt() as f32,
            eps: self.eps as f32,
        };
        // In f32 whatever the parameters' dtype: in f16, eps (1e-8) is 0 and a
        // parameter without gradient would get 0/0.
        let g = to_f32(g);
        let (p, m, v) = match adamw_on_host(&hyper, [&p, &g, &m, &v]) {
            Some(new) => {
                let device = p.device();
                let [p, m, v] = new.map(|x| upload_f32(x, &device));
                (p, m, v)
            }
            None => hyper.update_tensors(p, g, m, v),
        };
        self.moments.insert(name.to_string(), (m, v));
        p
    }

    fn state(&self) -> Vec<(String, &Tensor<B, 1>)> {
        (self.moments.iter())
            .flat_map(|(name, (m, v))| {
                [
                    (format!("{EXP_AVG}{name}"), m),
                    (format!("{EXP_AVG_SQ}{name}"), v),
                ]
            })
            .collect()
    }

    fn load_state(&mut self, mut saved: BTreeMap<String, Tensor<B, 1>>) -> Result<(), TrainError> {
        self.moments.clear();
        let firsts: Vec<String> = (saved.keys())
            .filter(|key| key.starts_with(EXP_AVG) && !key.starts_with(EXP_AVG_SQ))
            .cloned()
            .collect();
        for key in firsts {
            let name = &key[EXP_AVG.len()..];
            let second = format!("{EXP_AVG_SQ}{name}");
            let v = saved
                .remove(&second)
                .ok_or_else(|| TrainError::OptimizerState(format!("missing tensor {second}")))?;
            let m = saved.remove(&key).expect("listed above");
            self.moments.insert(name.to_string(), (m, v));
        }
        Ok(())
    }
}

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
