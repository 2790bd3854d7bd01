//! [`LanguageModel`]: the bigram model or the GPT behind one type, and the loss.

use burn::module::Module;
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::kv_cache::KvCache;
use crate::params::ParamSpecs;
use crate::{Bigram, Gpt, ModelError, WeightFormat};

/// Either model; what the trainer, the sampler and checkpoints work with.
// One value per process, moved rarely: the size difference between variants is moot,
// and Burn's `Module` derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum LanguageModel<B: Backend> {
    /// The lecture's bigram model.
    Bigram(Bigram<B>),
    /// nanoGPT's GPT.
    Gpt(Gpt<B>),
}

impl<B: Backend> LanguageModel<B> {
    /// Maximum context length.
    pub fn block_size(&self) -> usize {
        match self {
            LanguageModel::Bigram(m) => m.block_size(),
            LanguageModel::Gpt(m) => m.block_size(),
        }
    }

    /// The device the weights are on.
    pub fn device(&self) -> B::Device {
        self.devices().into_iter().next().unwrap_or_default()
    }

    /// The dropout probability the model was built with (what training applies).
    pub fn dropout(&self) -> f64 {
        match self {
            LanguageModel::Bigram(_) => 0.0,
            LanguageModel::Gpt(g) => g.dropout(),
        }
    }

    /// Whether the LM head is the token embedding (a tied GPT).
    pub fn ties_weights(&self) -> bool {
        matches!(self, LanguageModel::Gpt(g) if g.lm_head.is_none())
    }

    /// How the weight matrices are stored: [`WeightFormat::F32`] as trained and loaded,
    /// another after [`LanguageModel::with_weights`].
    pub fn weight_format(&self) -> WeightFormat {
        match self {
            LanguageModel::Bigram(_) => WeightFormat::F32,
            LanguageModel::Gpt(g) => g.weight_format(),
        }
    }

    /// The model with its weight matrices stored in `format` for sampling and
    /// evaluation (see [`crate::weights`]): converted once, here; activations stay in
    /// f32. A GPT's only: the bigram model is its tables.
    pub fn with_weights(self, format: WeightFormat) -> Result<Self, ModelError> {
        match self {
            LanguageModel::Gpt(g) => Ok(LanguageModel::Gpt(g.with_weights(format)?)),
            bigram if format == WeightFormat::F32 => Ok(bigram),
            LanguageModel::Bigram(_) => Err(ModelError::Config(format!(
                "{format} weights apply to GPT models; the bigram model keeps f32"
            ))),
        }
    }

    /// Every parameter's PyTorch name and decay group, as the model declares them (see
    /// [`crate::params`]).
    pub fn param_specs(&self) -> ParamSpecs {
        let mut specs = ParamSpecs::default();
        match self {
            LanguageModel::Bigram(m) => m.param_specs(&mut specs),
            LanguageModel::Gpt(m) => m.param_specs(&mut specs),
        }
        specs
    }

    /// `[B, T]` token ids → `[B, T, V]` logits. An empty input or one longer than
    /// block_size is an error.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>, ModelError> {
        self.forward_cached(idx, None)
    }

    /// [`LanguageModel::forward`] for tokens that follow the `P` positions held in
    /// `cache` (and are added to it); `P + T` must not exceed block_size.
    pub fn forward_cached(
        &self,
        idx: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let [_, t] = idx.dims();
        let past = cache.as_ref().map_or(0, |c| c.len());
        if t == 0 {
            return Err(ModelError::Empty);
        }
        if past + t > self.block_size() {
            return Err(ModelError::TooLong {
                len: past + t,
                block_size: self.block_size(),
            });
        }
        Ok(match self {
            LanguageModel::Bigram(m) => {
                if let Some(cache) = cache {
                    cache.skip(t);
                }
                m.forward(idx, past)
            }
            LanguageModel::Gpt(m) => m.forward(idx, cache),
        })
    }

    /// One decoding step for groups of sequences, each at its own position: `idx`
    /// `[N, 1]` holds the newest token of every row, the groups' rows one after another,
    /// and `groups` each group's row count and cache. Returns `[N, 1, V]` logits; the
    /// rows of a group are what [`LanguageModel::forward_cached`] gives for that group
    /// alone. The GPT runs its projections on all `N` rows at once (what makes batching
    /// pay) and attention per group. An error when the row counts do not add up to `N`
    /// or a cache is full.
    pub fn forward_groups(
        &self,
        idx: Tensor<B, 2, Int>,
        groups: &mut [(usize, &mut KvCache<B>)],
    ) -> Result<Tensor<B, 3>, ModelError> {
        let [n, t] = idx.dims();
        let rows: usize = groups.iter().map(|(rows, _)| rows).sum();
        if t != 1 || rows != n || groups.iter().any(|(rows, _)| *rows == 0) {
            return Err(ModelError::Config(format!(
                "a grouped step takes one token for each of the groups' rows: got [{n}, {t}] for {rows} rows"
            )));
        }
        if let Some((_, full)) = groups.iter().find(|(_, c)| c.len() + 1 > self.block_size()) {
            return Err(ModelError::TooLong {
                len: full.len() + 1,
                block_size: self.block_size(),
            });
        }
        match self {
            LanguageModel::Gpt(m) => Ok(m.forward_groups(idx, groups)),
            LanguageModel::Bigram(_) => {
                let mut offset = 0;
                let mut logits = Vec::with_capacity(groups.len());
                for (rows, cache) in groups.iter_mut() {
                    let part = idx.clone().narrow(0, offset, *rows);
                    offset += *rows;
                    logits.push(self.forward_cached(part, Some(&mut **cache))?);
                }
                Ok(Tensor::cat(logits, 0))
            }
        }
    }

    /// Mean cross-entropy of predicting `targets` `[B, T]` from `idx` `[B, T]`; shape `[1]`.
    pub fn loss(
        &self,
        idx: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 1>, ModelError> {
        Ok(cross_entropy(self.forward(idx)?, targets))
    }
}

/// Mean cross-entropy over all `B·T` positions: logits `[B, T, V]`, targets `[B, T]`.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    crate::ops::cross_entropy(logits.reshape([b * t, v]), targets.reshape([b * t])) // [B·T, V], [B·T]
}
