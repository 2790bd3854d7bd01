//! The learning-rate schedule: nanoGPT's linear warmup then cosine decay.

use crate::config::{Schedule, TrainConfig};

/// The learning rate for optimizer step `iter` (0-based).
///
/// Cosine: `lr·(iter+1)/(warmup+1)` during warmup, then
/// `min_lr + ½(1 + cos(π·r))·(lr − min_lr)` with `r = (iter − warmup)/(max_iters − warmup)`,
/// and `min_lr` from `max_iters` on. Constant: `lr`.
pub fn learning_rate(config: &TrainConfig, iter: usize) -> f64 {
    match config.schedule {
        Schedule::Constant => config.lr,
        Schedule::Cosine => {
            let (warmup, decay_end) = (config.warmup_iters, config.max_iters);
            if iter < warmup {
                return config.lr * (iter + 1) as f64 / (warmup + 1) as f64;
            }
            if iter >= decay_end {
                return config.min_lr;
            }
            let ratio = (iter - warmup) as f64 / (decay_end - warmup) as f64;
            let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
            config.min_lr + coeff * (config.lr - config.min_lr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_min_lr() {
        let config = TrainConfig::preset("shakespeare-char").unwrap(); // 1e-3 → 1e-4, warmup 100, 5000 iters
        let lr = |i| learning_rate(&config, i);
        assert!((lr(0) - 1e-3 / 101.0).abs() < 1e-15);
        assert!((lr(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-15);
        assert!((lr(100) - 1e-3).abs() < 1e-15);
        assert!((lr(2550) - 5.5e-4).abs() < 1e-12); // halfway: the mean of lr and min_lr
        assert!((lr(5000) - 1e-4).abs() < 1e-15);
        assert!((lr(9999) - 1e-4).abs() < 1e-15);
        for i in 100..5000 {
            assert!(lr(i + 1) <= lr(i), "not decreasing at {i}");
        }
    }

    #[test]
    fn constant_is_constant() {
        let config = TrainConfig::preset("lecture").unwrap();
        assert_eq!(learning_rate(&config, 0), 3e-4);
        assert_eq!(learning_rate(&config, 4999), 3e-4);
    }
}
