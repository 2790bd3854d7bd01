//! Sampling the next token from logits (penalties, temperature, top-k, top-p, min-p),
//! and the context window of generation.
//!
//! Sampling happens on the host in `f64` from the last position's logits, with quill's
//! own seeded [`Rng`], so a seed gives the same text on every backend that computes the
//! same logits.

use std::collections::HashMap;

use quill_data::Rng;

use crate::ModelError;

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// Logits are divided by this; `0` means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (ties with the k-th are kept).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Keep only the tokens at least this fraction as likely as the most likely one
    /// (transformers' and llama.cpp's `min_p`), after top-k and top-p.
    pub min_p: Option<f64>,
    /// What to subtract from, or divide, the logits of tokens already in the text.
    pub penalties: Penalties,
    /// Seed of the sampling generator.
    pub seed: u64,
    /// Generate with the key/value cache (the default) instead of recomputing the
    /// whole context for every token; both give the same tokens.
    pub kv_cache: bool,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            penalties: Penalties::default(),
            seed: 1337,
            kv_cache: true,
        }
    }
}

impl SamplingOptions {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks the ranges: temperature ≥ 0 and finite, top_k ≥ 1, top_p in (0, 1],
    /// min_p in [0, 1], and those of [`Penalties::validate`].
    pub fn validate(&self) -> Result<(), ModelError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::Sampling(format!(
                "temperature must be a finite number ≥ 0, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(ModelError::Sampling("top_k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::Sampling(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        if let Some(p) = self.min_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(ModelError::Sampling(format!(
                "min_p must be in [0, 1], got {p}"
            )));
        }
        self.penalties.validate()
    }
}

/// Penalties on tokens the text already holds, applied to the logits before anything
/// else (before temperature, and before the argmax of greedy decoding).
///
/// - `repetition` is transformers' `repetition_penalty` (llama.cpp's `repeat_penalty`,
///   there over the whole context): the logit of every token in the prompt or the
///   generated text is divided by it when positive and multiplied by it when negative.
///   1 is off; above 1 discourages repeating.
/// - `frequency` and `presence` are OpenAI's: the logit of a token the model has
///   generated `c` times (the prompt does not count) loses `c × frequency`, plus
///   `presence` once when `c > 0`. 0 is off; OpenAI's range is −2 to 2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// Divides positive logits and multiplies negative ones of tokens seen; 1 is off.
    pub repetition: f64,
    /// Subtracted once per time a token was generated; 0 is off.
    pub frequency: f64,
    /// Subtracted once from every token generated at least once; 0 is off.
    pub presence: f64,
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties {
            repetition: 1.0,
            frequency: 0.0,
            presence: 0.0,
        }
    }
}

impl Penalties {
    /// Whether any penalty changes the logits.
    pub fn active(&self) -> bool {
        *self != Penalties::default()
    }

    /// Checks the ranges: repetition > 0 and finite; frequency and presence in [−2, 2].
    pub fn validate(&self) -> Result<(), ModelError> {
        if !(self.repetition > 0.0 && self.repetition.is_finite()) {
            return Err(ModelError::Sampling(format!(
                "repetition_penalty must be a finite number > 0 (1 is off), got {}",
                self.repetition
            )));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency),
            ("presence_penalty", self.presence),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return Err(ModelError::Sampling(format!(
                    "{name} must be between -2 and 2 (0 is off), got {value}"
                )));
            }
        }
        Ok(())
    }

    /// Applies the penalties to one position's `logits`, given what the row holds.
    pub fn apply(&self, logits: &mut [f32], history: &TokenHistory) {
        for (&token, &generated) in &history.seen {
            let Some(logit) = logits.get_mut(token as usize) else {
                continue;
            };
            let mut l = *logit as f64;
            if self.repetition != 1.0 {
                l = if l > 0.0 {
                    l / self.repetition
                } else {
                    l * self.repetition
                };
            }
            if generated > 0 {
                l -= generated as f64 * self.frequency + self.presence;
            }
            *logit = l as f32;
        }
    }
}

/// The tokens a row holds, as the penalties see them: each distinct token of the
/// prompt and of the generated text, with the times it was generated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenHistory {
    /// Token → times generated (0 for a token only in the prompt).
    seen: HashMap<u32, u32>,
}

impl TokenHistory {
    /// The history of a row that starts with `prompt`.
    pub fn new(prompt: &[u32]) -> Self {
        let mut seen = HashMap::new();
        for &t in prompt {
            seen.entry(t).or_insert(0);
        }
        TokenHistory { seen }
    }

    /// Records a generated token.
    pub fn push(&mut self, token: u32) {
        *self.seen.entry(token).or_insert(0) += 1;
    }
}

/// Index of the largest logit (the first one on ties).
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The probabilities `sample_token` draws from: softmax of `logits / temperature`,
/// restricted to top-k, then to top-p, then to min-p, renormalised. `temperature`
/// must be > 0.
pub fn probabilities(logits: &[f32], options: &SamplingOptions) -> Vec<f64> {
    let mut scaled: Vec<f64> = logits
        .iter()
        .map(|&l| l as f64 / options.temperature)
        .collect();
    if let Some(k) = options.top_k.filter(|&k| k < scaled.len()) {
        let mut sorted = scaled.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        scaled
            .iter_mut()
            .filter(|l| **l < kth)
            .for_each(|l| *l = f64::NEG_INFINITY);
    }
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<f64> = scaled.iter().map(|&l| (l - max).exp()).collect();
    if let Some(p) = options.top_p.filter(|&p| p < 1.0) {
        let total: f64 = probs.iter().sum();
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let mut cumulative = 0.0;
        let mut keep = order.len();
        for (rank, &i) in order.iter().enumerate() {
            cumulative += probs[i] / total;
            if cumulative >= p {
                keep = rank + 1;
                break;
            }
        }
        order[keep..].iter().for_each(|&i| probs[i] = 0.0);
    }
    if let Some(min_p) = options.min_p.filter(|&p| p > 0.0) {
        // Relative to the most likely token, whose unnormalised probability is 1.
        probs
            .iter_mut()
            .filter(|q| **q < min_p)
            .for_each(|q| *q = 0.0);
    }
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    probs
}

/// Picks the next token of a row from one position's logits, after applying
/// `options.penalties` given the row's `history`.
pub fn sample_next(
    logits: &[f32],
    history: &TokenHistory,
    options: &SamplingOptions,
    rng: &mut Rng,
) -> u32 {
    if !options.penalties.active() {
        return sample_token(logits, options, rng);
    }
    let mut penalised = logits.to_vec();
    options.penalties.apply(&mut penalised, history);
    sample_token(&penalised, options, rng)
}

/// Picks the next token from one position's logits (no penalties: [`sample_next`]).
pub fn sample_token(logits: &[f32], options: &SamplingOptions, rng: &mut Rng) -> u32 {
    if options.temperature == 0.0 {
        return argmax(logits);
    }
    let probs = probabilities(logits, options);
    let u = rng.next_f64();
    let mut cumulative = 0.0;
    let mut last_possible = 0;
    for (i, &q) in probs.iter().enumerate() {
        if q > 0.0 {
            cumulative += q;
            last_possible = i;
            if u < cumulative {
                return i as u32;
            }
        }
    }
    last_possible as u32 // rounding left u ≥ the total: the last possible token
}

/// Where the context window starts, given `len` tokens so far: the window holds at
/// most `block_size` tokens; when one more would not fit, it shifts so that only the
/// last `block_size / 2` tokens (at least 1) stay, and then grows again.
///
/// This is quill's context policy for text longer than the model's block. Both
/// generation paths follow it, so the cached path computes exactly what full recompute
/// does: when the window shifts, every position changes, and the cache is rebuilt from
/// the kept tokens — once per `block_size / 2` tokens rather than once per token (which
/// is what cropping to the last `block_size` tokens at every step would cost).
pub fn window_start(previous_start: usize, len: usize, block_size: usize) -> usize {
    if len - previous_start <= block_size {
        previous_start
    } else {
        len - (block_size / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(logits: &[f32]) -> Vec<f64> {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    const LOGITS: [f32; 6] = [1.0, 2.5, -0.5, 0.3, 2.0, -2.0];

    #[test]
    fn temperature_zero_is_argmax_and_deterministic() {
        let mut rng = Rng::new(0);
        for _ in 0..10 {
            assert_eq!(
                sample_token(&LOGITS, &SamplingOptions::greedy(), &mut rng),
                1
            );
        }
    }

    #[test]
    fn top_k_one_is_greedy() {
        let options = SamplingOptions {
            top_k: Some(1),
            ..Default::default()
        };
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            assert_eq!(sample_token(&LOGITS, &options, &mut rng), 1);
        }
    }

    #[test]
    fn empirical_distribution_matches_softmax() {
        let options = SamplingOptions::default();
        let mut rng = Rng::new(123);
        let mut counts = [0usize; 6];
        let n = 20_000;
        for _ in 0..n {
            counts[sample_token(&LOGITS, &options, &mut rng) as usize] += 1;
        }
        for (count, p) in counts.iter().zip(softmax(&LOGITS)) {
            let freq = *count as f64 / n as f64;
            assert!(
                (freq - p).abs() < 0.01,
                "{counts:?} vs {:?}",
                softmax(&LOGITS)
            );
        }
    }

    #[test]
    fn temperature_scales_the_logits() {
        let options = SamplingOptions {
            temperature: 0.5,
            ..Default::default()
        };
        let doubled: Vec<f32> = LOGITS.iter().map(|l| l * 2.0).collect();
        let got = probabilities(&LOGITS, &options);
        for (g, e) in got.iter().zip(softmax(&doubled)) {
            assert!((g - e).abs() < 1e-12);
        }
    }

    #[test]
    fn top_k_keeps_the_k_largest() {
        let options = SamplingOptions {
            top_k: Some(2),
            ..Default::default()
        };
        let p = probabilities(&LOGITS, &options);
        let e = softmax(&[2.5, 2.0]);
        assert_eq!(p.iter().filter(|&&q| q > 0.0).count(), 2);
        assert!((p[1] - e[0]).abs() < 1e-12 && (p[4] - e[1]).abs() < 1e-12);
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // softmax(LOGITS) sorted: 0.4997 (idx 1), 0.3031 (4), 0.1115 (0), 0.0554 (3), ...
        let full = softmax(&LOGITS);
        let options = SamplingOptions {
            top_p: Some(0.7),
            ..Default::default()
        };
        let p = probabilities(&LOGITS, &options);
        let kept: Vec<usize> = (0..6).filter(|&i| p[i] > 0.0).collect();
        assert_eq!(kept, vec![1, 4]);
        let z = full[1] + full[4];
        assert!((p[1] - full[1] / z).abs() < 1e-12);
        let options = SamplingOptions {
            top_p: Some(0.85),
            ..Default::default()
        };
        let kept = probabilities(&LOGITS, &options)
            .iter()
            .filter(|&&q| q > 0.0)
            .count();
        assert_eq!(kept, 3);
    }

    #[test]
    fn min_p_keeps_tokens_near_the_most_likely() {
        // Relative to the most likely logit (2.5): e^-0.5 = 0.61 (idx 4),
        // e^-1.5 = 0.22 (0), e^-2.2 = 0.11 (3), e^-3 = 0.05 (2), e^-4.5 = 0.01 (5).
        let kept = |min_p| {
            let options = SamplingOptions {
                min_p: Some(min_p),
                ..Default::default()
            };
            let p = probabilities(&LOGITS, &options);
            (0..6).filter(|&i| p[i] > 0.0).collect::<Vec<_>>()
        };
        assert_eq!(kept(0.5), vec![1, 4]);
        assert_eq!(kept(0.2), vec![0, 1, 4]);
        assert_eq!(kept(0.1), vec![0, 1, 3, 4]);
        assert_eq!(kept(0.0), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(kept(1.0), vec![1]);
        // After temperature: at 0.5, e^-1 = 0.37 is the second's ratio.
        let options = SamplingOptions {
            min_p: Some(0.3),
            temperature: 0.5,
            ..Default::default()
        };
        let p = probabilities(&LOGITS, &options);
        assert_eq!((0..6).filter(|&i| p[i] > 0.0).count(), 2);
        let z = 1.0 + (-1.0f64).exp();
        assert!((p[1] - 1.0 / z).abs() < 1e-12);
    }

    #[test]
    fn penalties_change_the_logits_of_tokens_seen() {
        let mut history = TokenHistory::new(&[1, 2, 1]);
        history.push(4);
        history.push(4);
        history.push(2);
        let penalties = Penalties {
            repetition: 2.0,
            frequency: 0.5,
            presence: 0.25,
        };
        let mut logits = LOGITS;
        penalties.apply(&mut logits, &history);
        // 1 (prompt): 2.5 / 2; 2 (prompt, generated once): -0.5 * 2 - 0.5 - 0.25;
        // 4 (generated twice): 2.0 / 2 - 1.0 - 0.25; the others unchanged.
        assert_eq!(logits, [1.0, 1.25, -1.75, 0.3, -0.25, -2.0]);
        // Greedy decoding sees the penalised logits: the argmax moves from 1 to 0.
        let options = SamplingOptions {
            penalties,
            ..SamplingOptions::greedy()
        };
        let mut rng = Rng::new(0);
        assert_eq!(sample_next(&LOGITS, &history, &options, &mut rng), 1);
        let options = SamplingOptions {
            penalties: Penalties {
                repetition: 3.0,
                ..penalties
            },
            ..options
        };
        assert_eq!(sample_next(&LOGITS, &history, &options, &mut rng), 0);
        // Neutral penalties change nothing; ids outside the logits are ignored.
        let mut logits = LOGITS;
        Penalties::default().apply(&mut logits, &TokenHistory::new(&[0, 1, 99]));
        assert_eq!(logits, LOGITS);
    }

    #[test]
    fn bad_options_are_errors() {
        for options in [
            SamplingOptions {
                temperature: -1.0,
                ..Default::default()
            },
            SamplingOptions {
                temperature: f64::NAN,
                ..Default::default()
            },
            SamplingOptions {
                top_k: Some(0),
                ..Default::default()
            },
            SamplingOptions {
                top_p: Some(0.0),
                ..Default::default()
            },
            SamplingOptions {
                top_p: Some(1.5),
                ..Default::default()
            },
            SamplingOptions {
                min_p: Some(1.5),
                ..Default::default()
            },
            SamplingOptions {
                penalties: Penalties {
                    repetition: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            SamplingOptions {
                penalties: Penalties {
                    frequency: 2.5,
                    ..Default::default()
                },
                ..Default::default()
            },
            SamplingOptions {
                penalties: Penalties {
                    presence: f64::NAN,
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }
}
