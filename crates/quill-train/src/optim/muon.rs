//! Muon (Keller Jordan, 2024; the optimizer of the modded-nanogpt speedrun) for the
//! hidden matrices of a GPT: SGD with Nesterov momentum whose update is orthogonalised,
//! i.e. replaced by the nearest semi-orthogonal matrix `U·Vᵀ` (of `U·Σ·Vᵀ`), computed
//! by a few Newton–Schulz iterations instead of an SVD. Every direction of the update
//! then moves by the same amount, however small its gradient.
//!
//! Embeddings, the LM head, gains and biases stay with AdamW ([`crate::Optimizer`]
//! gives [`Muon`] the hidden matrices only). Its state is one momentum buffer per
//! matrix, `momentum_buffer.<name>` (PyTorch's `SGD` name).

use std::collections::BTreeMap;

use burn::tensor::{Tensor, backend::Backend};

use super::rule::{Member, StepContext, UpdateRule};
use super::to_f32;
use crate::TrainError;

const MOMENTUM: &str = "momentum_buffer.";

/// Muon's momentum, its buffers by parameter name, and this step's updates until
/// applied.
#[derive(Debug, Clone)]
pub struct Muon<B: Backend> {
    momentum: f64,
    buffers: BTreeMap<String, Tensor<B, 1>>,
    steps: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> Muon<B> {
    /// Muon with Nesterov momentum `momentum` and no buffers yet.
    pub fn new(momentum: f64) -> Self {
        Muon {
            momentum,
            buffers: BTreeMap::new(),
            steps: BTreeMap::new(),
        }
    }
}

impl<B: Backend> UpdateRule<B> for Muon<B> {
    fn name(&self) -> &'static str {
        "Muon"
    }

    fn state_prefixes(&self) -> &'static [&'static str] {
        &[MOMENTUM]
    }

    /// Each gradient (times the scale) into its momentum buffer; the Nesterov
    /// directions orthogonalised together ([`orthogonalize_all`]), times
    /// `lr·√max(1, out/in)`.
    fn begin(&mut self, grads: Vec<(Member, Tensor<B, 1>)>, ctx: &StepContext) {
        let mut names = Vec::new();
        let mut directions = Vec::new();
        for (member, g) in grads {
            let [d_in, d_out] = member.dims[..] else {
                unreachable!("Muon takes matrices only")
            };
            let g = to_f32(g) * ctx.scale;
            let buf = (self.buffers.remove(&member.name)).unwrap_or_else(|| g.zeros_like());
            let (direction, buf) = nesterov(g, buf, self.momentum);
            self.buffers.insert(member.name.clone(), buf);
            directions.push(direction.reshape([d_in, d_out]));
            names.push((member.name, [d_in, d_out]));
        }
        let orthogonal = orthogonalize_all(directions);
        self.steps = (names.into_iter().zip(orthogonal))
            .map(|((name, [d_in, d_out]), o)| {
                let step = o * (ctx.lr * shape_factor(d_in, d_out));
                (name, step.reshape([d_in * d_out]))
            })
            .collect();
    }

    fn updates(&self, name: &str) -> bool {
        self.steps.contains_key(name)
    }

    fn apply(&mut self, name: &str, p: Tensor<B, 1>, _ctx: &StepContext) -> Tensor<B, 1> {
        p - self.steps.remove(name).expect("updates(name)")
    }

    fn state(&self) -> Vec<(String, &Tensor<B, 1>)> {
        (self.buffers.iter())
            .map(|(name, buf)| (format!("{MOMENTUM}{name}"), buf))
            .collect()
    }

    fn load_state(&mut self, saved: BTreeMap<String, Tensor<B, 1>>) -> Result<(), TrainError> {
        self.buffers = (saved.into_iter())
            .filter_map(|(key, buf)| Some((key.strip_prefix(MOMENTUM)?.to_string(), buf)))
            .collect();
        Ok(())
    }
}

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
    let mut one = orthogonalize_all(vec![g]);
    one.pop().expect("one matrix in, one out")
}

/// [`orthogonalize`] of every matrix, on the fused CPU kernel when it serves the
/// backend (the matrices then spread over the cores, one thread each).
pub fn orthogonalize_all<B: Backend>(gs: Vec<Tensor<B, 2>>) -> Vec<Tensor<B, 2>> {
    #[cfg(feature = "fused-cpu")]
    let gs = match quill_kernels::newton_schulz(gs, NEWTON_SCHULZ, NEWTON_SCHULZ_STEPS) {
        Ok(xs) => return xs,
        Err(gs) => gs,
    };
    gs.into_iter().map(orthogonalize_slow).collect()
}

/// [`orthogonalize`] in Burn's operations (every backend; the fused CPU kernel serves
/// Flex).
pub fn orthogonalize_slow<B: Backend>(g: Tensor<B, 2>) -> Tensor<B, 2> {
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

/// Muon's momentum with Nesterov's look-ahead, for a gradient `g` and its buffer `buf`
/// (same shape): `buf ← μ·buf + (1−μ)·g`, and the direction `(1−μ)·g + μ·buf` to be
/// orthogonalised. Returns `(direction, buf)`.
pub fn nesterov<B: Backend, const D: usize>(
    g: Tensor<B, D>,
    buf: Tensor<B, D>,
    momentum: f64,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let buf = buf * momentum + g.clone() * (1.0 - momentum);
    (g * (1.0 - momentum) + buf.clone() * momentum, buf)
}

/// The factor `√max(1, out/in)` of a `d_in → d_out` weight's update (Keller Jordan's
/// `max(1, rows/cols)^0.5` for PyTorch's `[out, in]` layout): the update's RMS per
/// output stays in line for weights that widen.
pub fn shape_factor(d_in: usize, d_out: usize) -> f64 {
    (d_out as f64 / d_in as f64).max(1.0).sqrt()
}
