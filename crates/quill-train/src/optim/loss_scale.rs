//! Dynamic loss scaling for f16 training, as PyTorch's `torch.amp.GradScaler` does it.
//!
//! f16's range ends at 65,504 and its smallest normal number is 6.1e-5: the gradients
//! of a small loss underflow to zero on the way back through 16-bit activations. The
//! loss is multiplied by a large scale before the backward pass, and the gradients are
//! divided by it in f32 before the optimizer sees them. A step whose gradients hold an
//! infinity or a NaN (the scale was too large) is skipped and the scale halved; after
//! `growth_interval` good steps in a row it doubles. bf16 has f32's range and needs none
//! of this.

use serde::{Deserialize, Serialize};

/// The scaler's state: the scale, the good steps since it last changed, and the steps
/// skipped so far. Saved in checkpoints, so that a resumed run scales as the first
/// would have.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// The factor the loss is multiplied by before the backward pass.
    pub scale: f64,
    /// Good steps in a row since the scale last changed.
    pub good_steps: u64,
    /// Steps skipped so far because a gradient was not finite.
    pub skipped_steps: u64,
}

impl LossScaler {
    /// PyTorch's initial scale, 2¹⁶.
    pub const INIT_SCALE: f64 = 65_536.0;
    /// Good steps in a row before the scale doubles (PyTorch's default).
    pub const GROWTH_INTERVAL: u64 = 2000;
    /// What the scale is multiplied by after `GROWTH_INTERVAL` good steps.
    pub const GROWTH_FACTOR: f64 = 2.0;
    /// What the scale is multiplied by after a step with a non-finite gradient.
    pub const BACKOFF_FACTOR: f64 = 0.5;

    /// A scaler at PyTorch's initial scale.
    pub fn new() -> Self {
        LossScaler {
            scale: Self::INIT_SCALE,
            good_steps: 0,
            skipped_steps: 0,
        }
    }

    /// Records a step whose unscaled gradient norm was `grad_norm`: whether the step is
    /// to be taken (the gradients are finite). A skipped step halves the scale; the
    /// `GROWTH_INTERVAL`-th good step in a row doubles it.
    pub fn update(&mut self, grad_norm: f64) -> bool {
        if !grad_norm.is_finite() {
            self.scale *= Self::BACKOFF_FACTOR;
            self.good_steps = 0;
            self.skipped_steps += 1;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps == Self::GROWTH_INTERVAL {
            self.scale *= Self::GROWTH_FACTOR;
            self.good_steps = 0;
        }
        true
    }
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_infinite_gradient_skips_the_step_and_halves_the_scale() {
        let mut scaler = LossScaler::new();
        assert!(scaler.update(3.0));
        assert!(!scaler.update(f64::INFINITY));
        assert_eq!(scaler.scale, 32_768.0);
        assert!(!scaler.update(f64::NAN));
        assert_eq!(
            scaler,
            LossScaler {
                scale: 16_384.0,
                good_steps: 0,
                skipped_steps: 2
            }
        );
    }

    #[test]
    fn the_scale_doubles_after_the_growth_interval_of_good_steps_in_a_row() {
        let mut scaler = LossScaler::new();
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            assert!(scaler.update(1.0));
        }
        // An infinity just before the interval ends starts the count again.
        assert!(!scaler.update(f64::INFINITY));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            assert!(scaler.update(1.0));
        }
        assert_eq!(scaler.scale, 32_768.0);
        assert!(scaler.update(1.0));
        assert_eq!(
            scaler,
            LossScaler {
                scale: 65_536.0,
                good_steps: 0,
                skipped_steps: 1
            }
        );
    }
}
