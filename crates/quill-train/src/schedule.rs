//! The learning-rate schedule: nanoGPT's linear warmup then cosine decay, a constant
//! rate, or warmup–stable–decay.

use crate::config::{Schedule, TrainConfig};

/// The learning rate for optimizer step `iter` (0-based).
///
/// Cosine: `lr·(iter+1)/(warmup+1)` during warmup, then
/// `min_lr + ½(1 + cos(π·r))·(lr − min_lr)` with `r = (iter − warmup)/(max_iters − warmup)`,
/// and `min_lr` from `max_iters` on. Constant: `lr`. Wsd: the same warmup, then `lr`
/// until the last `cooldown_iters` steps, over which it falls linearly,
/// `min_lr + (lr − min_lr)·(max_iters − iter)/cooldown_iters`, and `min_lr` from
/// `max_iters` on.
pub fn learning_rate(config: &TrainConfig, iter: usize) -> f64 {
    let (warmup, decay_end) = (config.warmup_iters, config.max_iters);
    if config.schedule == Schedule::Constant {
        return config.lr;
    }
    if iter < warmup {
        return config.lr * (iter + 1) as f64 / (warmup + 1) as f64;
    }
    if iter >= decay_end {
        return config.min_lr;
    }
    let ratio = match config.schedule {
        Schedule::Constant => 1.0, // returned above
        // 1 until the cooldown, then (steps left)/cooldown_iters: 1 → 1/cooldown_iters.
        Schedule::Wsd => ((decay_end - iter) as f64 / config.cooldown_iters as f64).min(1.0),
        Schedule::Cosine => {
            let r = (iter - warmup) as f64 / (decay_end - warmup) as f64;
            0.5 * (1.0 + (std::f64::consts::PI * r).cos())
        }
    };
    config.min_lr + ratio * (config.lr - config.min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    #[test]
    fn warmup_then_cosine_to_min_lr() {
        let config = RunConfig::preset("shakespeare-char").unwrap().train; // 1e-3 → 1e-4, warmup 100, 5000 iters
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
    fn wsd_warms_up_holds_then_falls_linearly() {
        let mut config = RunConfig::preset("cpu").unwrap().train; // 1e-3 → 1e-4
        (config.schedule, config.warmup_iters) = (Schedule::Wsd, 10);
        (config.max_iters, config.cooldown_iters) = (100, 40);
        let lr = |i| learning_rate(&config, i);
        assert!((lr(0) - 1e-3 / 11.0).abs() < 1e-15);
        assert_eq!((lr(10), lr(59)), (1e-3, 1e-3));
        assert!((lr(60) - 1e-3).abs() < 1e-15); // 40 steps left: the whole rate
        assert!((lr(80) - (1e-4 + 0.5 * 9e-4)).abs() < 1e-15);
        assert!((lr(99) - (1e-4 + 9e-4 / 40.0)).abs() < 1e-15);
        assert_eq!(lr(100), 1e-4);
        config.cooldown_iters = 0; // x/0 = ∞, min(1): no cooldown
        assert_eq!(
            (learning_rate(&config, 99), learning_rate(&config, 100)),
            (1e-3, 1e-4)
        );
    }

    #[test]
    fn constant_is_constant() {
        let config = RunConfig::preset("lecture").unwrap().train;
        assert_eq!(learning_rate(&config, 0), 3e-4);
        assert_eq!(learning_rate(&config, 4999), 3e-4);
    }
}
