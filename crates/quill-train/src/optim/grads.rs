//! [`GradBuffer`]: the gradients of a step's micro-batches (and shards, and ranks),
//! summed by parameter name in f32 (whatever the parameters' dtype), and their global
//! norm.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use quill_model::LanguageModel;
use quill_model::params::ParamSpecs;
use rayon::prelude::*;

use super::declared;
use super::host::{add_then_divide_on_host, on_host};
use crate::TrainError;

/// Summed gradients by parameter name, flattened, on the inner (non-autodiff) backend.
#[derive(Debug, Clone)]
pub struct GradBuffer<B: Backend> {
    pub(super) grads: BTreeMap<String, Tensor<B, 1>>,
    pub(super) micro_batches: usize,
}

impl<B: Backend> Default for GradBuffer<B> {
    fn default() -> Self {
        GradBuffer {
            grads: BTreeMap::new(),
            micro_batches: 0,
        }
    }
}

impl<B: Backend> GradBuffer<B> {
    /// Adds the gradients of one micro-batch's backward pass.
    pub fn accumulate<AB>(&mut self, model: &LanguageModel<AB>, grads: &AB::Gradients)
    where
        AB: AutodiffBackend<InnerBackend = B>,
    {
        struct Collect<'a, AB: AutodiffBackend> {
            specs: ParamSpecs,
            grads: &'a AB::Gradients,
            out: &'a mut BTreeMap<String, Tensor<AB::InnerBackend, 1>>,
        }
        impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<'_, AB> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                let Some(grad) = param.val().grad(self.grads) else {
                    return;
                };
                let n = grad.shape().num_elements();
                let grad = super::to_f32(grad.reshape([n]));
                let name = declared(&self.specs, &param.id).name.clone();
                add_to(self.out, name, grad);
            }
        }
        model.visit(&mut Collect::<AB> {
            specs: model.param_specs(),
            grads,
            out: &mut self.grads,
        });
        self.micro_batches += 1;
    }

    /// Adds one micro-batch whose rows were split into equal shards: `shards` holds one
    /// buffer per shard, each with that shard's gradients; their mean, taken in the
    /// order given, counts as one micro-batch.
    pub fn accumulate_shards(&mut self, shards: Vec<GradBuffer<B>>) {
        let n = shards.len();
        let mut parts: BTreeMap<String, Vec<Tensor<B, 1>>> = BTreeMap::new();
        for shard in shards {
            for (name, grad) in shard.grads {
                parts.entry(name).or_default().push(grad);
            }
        }
        for (name, grads) in parts {
            add_to(&mut self.grads, name, mean(grads, n));
        }
        self.micro_batches += 1;
    }

    /// Replaces the gradients by their sums over the `ranks` processes of a
    /// data-parallel run, as one flat tensor that `sum` all-reduces. `extra` values ride
    /// along and come back summed. The mean gradient then averages every rank's
    /// micro-batches, as one process with all of them would.
    pub fn sum_over_ranks(
        &mut self,
        ranks: usize,
        extra: &[f32],
        sum: impl FnOnce(Tensor<B, 1>) -> Result<Tensor<B, 1>, TrainError>,
    ) -> Result<Vec<f32>, TrainError> {
        let device = match self.grads.values().next() {
            Some(g) => g.device(),
            None => Default::default(),
        };
        let lengths: Vec<usize> = self.grads.values().map(|g| g.dims()[0]).collect();
        let mut flat: Vec<Tensor<B, 1>> = self.grads.values().cloned().collect();
        flat.push(super::upload_f32(extra.to_vec(), &device));
        let summed = sum(Tensor::cat(flat, 0))?;
        let mut start = 0;
        for (grad, len) in self.grads.values_mut().zip(lengths) {
            *grad = summed.clone().slice(start..start + len);
            start += len;
        }
        let extra = summed.slice(start..start + extra.len()).into_data();
        self.micro_batches *= ranks;
        extra
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Parallel(format!("{e:?}")))
    }

    /// The mean gradient of the parameter called `name` (flattened, in quill's layout),
    /// if it has one.
    pub fn gradient(&self, name: &str) -> Option<Tensor<B, 1>> {
        let sum = self.grads.get(name)?.clone();
        Some(sum / self.micro_batches.max(1) as f64)
    }

    /// The global L2 norm of the mean gradient.
    pub fn global_norm(&self) -> f64 {
        // One parameter per rayon task; the totals are added in a fixed order.
        let grads: Vec<&Tensor<B, 1>> = self.grads.values().collect();
        let squares_on_host: Option<Vec<f64>> = (grads.par_iter())
            .map(|g| {
                on_host(
                    [g],
                    #[inline(always)]
                    |[g]| sum_of_squares(g),
                )
            })
            .collect();
        if let Some(squares) = squares_on_host {
            return squares.iter().sum::<f64>().sqrt() / self.micro_batches.max(1) as f64;
        }
        let squares: Vec<Tensor<B, 1>> = self
            .grads
            .values()
            .map(|g| g.clone().powi_scalar(2).sum())
            .collect();
        if squares.is_empty() {
            return 0.0;
        }
        let total: f64 = quill_model::ops::scalar(Tensor::cat(squares, 0).sum());
        total.sqrt() / self.micro_batches.max(1) as f64
    }
}

/// `Σ x²` in `f64`, in eight partial sums so that the loop vectorises.
#[inline(always)]
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let x8 = x.chunks_exact(8);
    let tail: f64 = x8.remainder().iter().map(|&v| v as f64 * v as f64).sum();
    for x in x8 {
        for l in 0..8 {
            acc[l] += x[l] as f64 * x[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(g₀ + g₁ + …) / n`, summed in order; on the host in one parallel pass per term
/// where the fused kernels serve the backend (the same values as tensor operations).
fn mean<B: Backend>(grads: Vec<Tensor<B, 1>>, n: usize) -> Tensor<B, 1> {
    let mut grads = grads.into_iter();
    let Some(first) = grads.next() else {
        unreachable!("every shard has each gradient")
    };
    let last = grads.len();
    grads.enumerate().fold(first, |sum, (i, g)| {
        let divisor = (i + 1 == last).then_some(n as f32);
        let device = sum.device();
        let fused = add_then_divide_on_host(&sum, &g, divisor);
        match (fused, divisor) {
            (Some(sum), _) => super::upload_f32(sum, &device),
            (None, Some(n)) => (sum + g) / n as f64,
            (None, None) => sum + g,
        }
    })
}

/// Adds `grad` to the sum kept under `name` (or starts it).
fn add_to<B: Backend>(sums: &mut BTreeMap<String, Tensor<B, 1>>, name: String, grad: Tensor<B, 1>) {
    let sum = match sums.remove(&name) {
        Some(previous) => previous + grad,
        None => grad,
    };
    sums.insert(name, sum);
}
