//! Backend parity: the same initial weights and batches must give the same losses on
//! every backend. [`trajectory`] runs the trainer's step from weights it is given (loaded,
//! not drawn on the device) on batches fixed by the random seed; comparing two trajectories
//! is [`compare`].

use std::collections::BTreeMap;

use burn::tensor::backend::AutodiffBackend;
use quill_model::params::{NamedTensor, import};
use serde::Serialize;

use crate::trainer::{Batch, Trainer};
use crate::{RunConfig, TrainError};

/// The losses of `steps + 1` training steps of `config` on `data`, starting from
/// `weights`: `losses[0]` is the loss of the initial weights, `losses[i]` the loss after
/// `i` AdamW updates (each on its own batch). Dropout must be 0 (its masks are drawn
/// by each backend's own RNG).
pub fn trajectory<AB: AutodiffBackend>(
    config: &RunConfig,
    vocab_size: usize,
    weights: &[NamedTensor],
    data: &(impl quill_data::TokenSource + ?Sized),
    steps: usize,
    device: &AB::Device,
) -> Result<Vec<f32>, TrainError> {
    if config.model.dropout() != 0.0 {
        return Err(TrainError::Config(
            "parity needs dropout 0: dropout masks differ between backends".into(),
        ));
    }
    let tensors: BTreeMap<String, NamedTensor> = weights
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    // Drawn with another seed, then overwritten: the weights are the given ones.
    let model = config
        .model_for(vocab_size)
        .init::<AB>(config.train.seed ^ 1, device)?;
    let mut trainer = Trainer::new(import(model, &tensors)?, &config.train);
    let mut sampler = config.batch_sampler()?;
    (0..=steps)
        .map(|_| {
            let batch = Batch::sample(&mut sampler, data, config.train.grad_accum, device)?;
            Ok(trainer.step(&batch)?.loss)
        })
        .collect()
}

/// How far one trajectory is from a reference one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parity {
    /// The reference's initial loss.
    pub reference_initial_loss: f32,
    /// `|initial loss − reference initial loss|`.
    pub initial_diff: f32,
    /// The largest `|loss − reference loss|` over the steps after the first update.
    pub max_step_diff: f32,
    /// The final losses, reference first.
    pub final_losses: (f32, f32),
    /// Whether both differences are within their tolerances.
    pub within_tolerance: bool,
}

/// Compares `losses` with `reference` (both from [`trajectory`]): the initial losses
/// must agree within `initial_tol`, every later one within `step_tol`.
pub fn compare(reference: &[f32], losses: &[f32], initial_tol: f32, step_tol: f32) -> Parity {
    let diff = |i: usize| (losses[i] - reference[i]).abs();
    let n = reference.len().min(losses.len());
    let initial_diff = diff(0);
    // A NaN difference is kept (f32::max would drop it).
    let max_step_diff = (1..n)
        .map(diff)
        .fold(0.0f32, |max, d| if d.is_nan() || d > max { d } else { max });
    Parity {
        reference_initial_loss: reference[0],
        initial_diff,
        max_step_diff,
        final_losses: (reference[n - 1], losses[n - 1]),
        // NaN compares false, so a NaN loss fails.
        within_tolerance: n == reference.len()
            && n == losses.len()
            && initial_diff <= initial_tol
            && max_step_diff <= step_tol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_measures_the_largest_difference_and_fails_on_nan() {
        let reference = [4.0, 3.0, 2.5];
        let p = compare(&reference, &[4.00005, 3.0005, 2.4999], 1e-4, 1e-3);
        assert!(p.within_tolerance, "{p:?}");
        assert!((p.max_step_diff - 0.0005).abs() < 1e-6);
        assert!(!compare(&reference, &[4.001, 3.0, 2.5], 1e-4, 1e-3).within_tolerance);
        assert!(!compare(&reference, &[4.0, 3.01, 2.5], 1e-4, 1e-3).within_tolerance);
        assert!(!compare(&reference, &[4.0, f32::NAN, 2.5], 1e-4, 1e-3).within_tolerance);
    }
}
