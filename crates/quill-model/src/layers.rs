//! The two layers with weights a GPT is built from besides embeddings: [`Linear`] and
//! [`Normalization`] (LayerNorm or RMSNorm), thin modules over [`crate::ops`] so that the model's code reads
//! `self.c_fc.forward(x)` whatever the backend.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};
use quill_data::Rng;

use crate::Norm;
use crate::init::normal_param;
use crate::ops;

/// `x·W + b` over the last dimension, `W` stored `[in, out]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]` (PyTorch stores the transpose).
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`, when the layer has one.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// A `d_in → d_out` layer with `N(0, std²)` weights and zero biases.
    pub fn new(
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        Linear {
            weight: normal_param([d_in, d_out], std, rng, device),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
        }
    }

    /// `[..., in] → [..., out]`, as one `[N, in] × [in, out]` product over all leading
    /// dimensions (one large matrix multiplication each way, which the CPU backends
    /// spread over all cores; Burn's `Linear` multiplies each batch row separately).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = x.shape().num_elements() / d_in.max(1);
        let bias = self.bias.as_ref().map(|b| b.val());
        let y = ops::linear(x.reshape([rows, d_in]), self.weight.val(), bias); // [N, out]
        dims[D - 1] = y.dims()[1];
        y.reshape(dims)
    }
}

/// The normalisation of a GPT over the last dimension, with PyTorch's epsilon (1e-5):
/// LayerNorm, or RMSNorm when built with [`Norm::Rms`].
#[derive(Module, Debug)]
pub struct Normalization<B: Backend> {
    /// The gain γ, `[C]`, initialised to 1.
    pub weight: Param<Tensor<B, 1>>,
    /// The shift β, `[C]`, initialised to 0, when the layer has one (RMSNorm never has).
    pub bias: Option<Param<Tensor<B, 1>>>,
    eps: f64,
    #[module(skip)]
    kind: Norm,
}

impl<B: Backend> Normalization<B> {
    /// PyTorch's epsilon, which every normalisation here is built with.
    pub const EPS: f64 = 1e-5;

    /// A LayerNorm or an RMSNorm (which ignores `bias`) over `d` features.
    pub fn new(kind: Norm, d: usize, bias: bool, device: &B::Device) -> Self {
        let bias = bias && kind == Norm::Layer;
        Normalization {
            weight: Param::from_tensor(Tensor::ones([d], device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d], device))),
            eps: Self::EPS,
            kind,
        }
    }

    /// `[B, T, C] → [B, T, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.kind {
            Norm::Layer => {
                let bias = self.bias.as_ref().map(|b| b.val());
                ops::layer_norm(x, self.weight.val(), bias, self.eps)
            }
            Norm::Rms => ops::rms_norm(x, self.weight.val(), self.eps),
        }
    }
}
