//! Continuous batching: several generations at once, each joining and leaving between
//! steps, decoded together through their key/value caches.
//!
//! A [`Batcher`] holds groups of sequences. A group is what one request asks for: rows
//! of one prompt (or of prompts of one length) that share a cache, a position and a
//! sampler seeded for that group alone. Each [`Batcher::step`] gives every row of every
//! group one new token:
//! - a group that has just joined, or whose context window has shifted, (re)fills its
//!   cache with its window's tokens alone (the prompt's pass);
//! - every other group feeds its newest tokens into a batched pass
//!   ([`LanguageModel::forward_groups`]): the weights are read once for all its rows,
//!   and attention runs per group against its own cache. On the fused CPU kernels a
//!   pass holds at most [`crate::ops::independent_rows`] rows (more make several
//!   passes), the most whose products are computed row by row.
//!
//! A group's tokens do not depend on the other groups in the batch: it samples from
//! its own generator, and its logits are those of the group alone (bit for bit on the
//! CPU kernels; see `tests/it/batching.rs`). [`generate`] is a batcher of one group.

use burn::tensor::backend::Backend;
use quill_data::Rng;
use quill_data::batch::ids_to_tensor;

use crate::kv_cache::KvCache;
use crate::sampling::{TokenHistory, sample_next, window_start};
use crate::{LanguageModel, ModelError, SamplingOptions};

/// Names a group inside its [`Batcher`].
pub type GroupId = u64;

/// One group: rows of equal length, their cache and their sampler.
#[derive(Debug)]
struct Group<B: Backend> {
    id: GroupId,
    rows: Vec<Vec<u32>>,
    /// Where the context window starts ([`window_start`]).
    start: usize,
    cache: KvCache<B>,
    rng: Rng,
    options: SamplingOptions,
    /// Each row's tokens as the penalties see them (kept only when there are some).
    histories: Vec<TokenHistory>,
}

impl<B: Backend> Group<B> {
    /// The tokens the next pass must feed, from this position on: the newest one when
    /// the cache holds the rest, else the whole window (after moving it if it is full).
    fn next_input(&mut self, block_size: usize) -> usize {
        let len = self.rows[0].len();
        let start = window_start(self.start, len, block_size);
        if start != self.start {
            self.cache.clear();
            self.start = start;
        }
        match self.options.kv_cache {
            true => self.start + self.cache.len(),
            false => self.start,
        }
    }

    fn tokens_from(&self, from: usize) -> Vec<u32> {
        self.rows
            .iter()
            .flat_map(|r| r[from..].iter().copied())
            .collect()
    }
}

/// Generations decoded together; see the [module](self) documentation.
#[derive(Debug)]
pub struct Batcher<'m, B: Backend> {
    model: &'m LanguageModel<B>,
    groups: Vec<Group<B>>,
    next_id: GroupId,
    /// The most rows in one decoding pass ([`crate::ops::independent_rows`]).
    pass_rows: Option<usize>,
}

impl<'m, B: Backend> Batcher<'m, B> {
    /// An empty batch over `model`.
    pub fn new(model: &'m LanguageModel<B>) -> Self {
        Batcher {
            model,
            groups: Vec::new(),
            next_id: 0,
            pass_rows: crate::ops::independent_rows::<B>(),
        }
    }

    /// Adds a group that continues each of `prompts` (all of one non-zero length),
    /// sampling with `options` from a generator of its own (seeded by
    /// `options.seed`). A prompt longer than the model's block keeps its last
    /// block_size tokens of context. It gets its first tokens at the next step.
    pub fn add(
        &mut self,
        prompts: &[Vec<u32>],
        options: &SamplingOptions,
    ) -> Result<GroupId, ModelError> {
        options.validate()?;
        let len = prompts.first().map_or(0, Vec::len);
        if len == 0 || prompts.iter().any(|p| p.len() != len) {
            return Err(ModelError::Sampling(
                "prompts must be non-empty and of equal length".into(),
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.groups.push(Group {
            id,
            rows: prompts.to_vec(),
            start: len.saturating_sub(self.model.block_size()),
            cache: KvCache::new(),
            rng: Rng::new(options.seed),
            histories: match options.penalties.active() {
                true => prompts.iter().map(|p| TokenHistory::new(p)).collect(),
                false => vec![TokenHistory::default(); prompts.len()],
            },
            options: options.clone(),
        });
        Ok(id)
    }

    /// Takes group `id` out of the batch (finished, or its client gone): its rows, the
    /// prompts followed by every token generated, or `None` for an unknown id.
    pub fn remove(&mut self, id: GroupId) -> Option<Vec<Vec<u32>>> {
        let i = self.groups.iter().position(|g| g.id == id)?;
        Some(self.groups.remove(i).rows)
    }

    /// Rows in the batch, over all groups.
    pub fn rows(&self) -> usize {
        self.groups.iter().map(|g| g.rows.len()).sum()
    }

    /// Whether no group is in the batch.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Generates one token for every row of every group: `(group, new tokens)`, one per
    /// row, groups in the order they were added.
    pub fn step(&mut self) -> Result<Vec<(GroupId, Vec<u32>)>, ModelError> {
        let (model, block_size) = (self.model, self.model.block_size());
        let device = model.device();
        // Each group's logits of its last position, `rows × V` floats on the host.
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; self.groups.len()];
        let mut decoding = Vec::new();
        for (i, group) in self.groups.iter_mut().enumerate() {
            let from = group.next_input(block_size);
            let (rows, len) = (group.rows.len(), group.rows[0].len());
            if group.options.kv_cache && len - from == 1 {
                decoding.push(i);
                continue;
            }
            let idx = ids_to_tensor(&group.tokens_from(from), [rows, len - from], &device);
            let cache = group.options.kv_cache.then_some(&mut group.cache);
            logits[i] = Some(last_position(model.forward_cached(idx, cache)?));
        }
        for pass in passes(&decoding, |i| self.groups[i].rows.len(), self.pass_rows) {
            let mut tokens = Vec::new();
            let mut groups = Vec::new();
            for (i, group) in self.groups.iter_mut().enumerate() {
                if pass.contains(&i) {
                    tokens.extend(group.rows.iter().map(|r| r[r.len() - 1]));
                    groups.push((group.rows.len(), &mut group.cache));
                }
            }
            let idx = ids_to_tensor(&tokens, [tokens.len(), 1], &device);
            let all = last_position(model.forward_groups(idx, &mut groups)?);
            let width = all.len() / tokens.len();
            let mut rest = all.as_slice();
            for &i in &pass {
                let (mine, others) = rest.split_at(self.groups[i].rows.len() * width);
                logits[i] = Some(mine.to_vec());
                rest = others;
            }
        }
        Ok(self
            .groups
            .iter_mut()
            .zip(logits)
            .map(|(group, logits)| {
                let logits = logits.expect("every group was computed");
                let next: Vec<u32> = logits
                    .chunks(logits.len() / group.rows.len())
                    .zip(&group.histories)
                    .map(|(l, h)| sample_next(l, h, &group.options, &mut group.rng))
                    .collect();
                let penalised = group.options.penalties.active();
                for ((row, history), &n) in
                    group.rows.iter_mut().zip(&mut group.histories).zip(&next)
                {
                    row.push(n);
                    if penalised {
                        history.push(n);
                    }
                }
                (group.id, next)
            })
            .collect())
    }
}

/// The groups `decoding` (indices, of `rows(i)` rows each) in passes of at most `limit`
/// rows, in order; a group of more rows than that is a pass of its own.
fn passes(
    decoding: &[usize],
    rows: impl Fn(usize) -> usize,
    limit: Option<usize>,
) -> Vec<Vec<usize>> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut passes: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in decoding {
        match passes.last_mut() {
            Some((n, pass)) if *n + rows(i) <= limit => {
                *n += rows(i);
                pass.push(i);
            }
            _ => passes.push((rows(i), vec![i])),
        }
    }
    passes.into_iter().map(|(_, pass)| pass).collect()
}

/// The logits of the last position, `[B, T, V] → B·V` floats on the host.
fn last_position<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> Vec<f32> {
    let [b, t, v] = logits.dims();
    logits
        .narrow(1, t - 1, 1)
        .reshape([b, v])
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 logits")
}

/// Continues each of `prompts` (all of one non-zero length) by `max_new_tokens` tokens,
/// as one batch, within the context window of [`window_start`].
///
/// With `options.kv_cache` each step feeds only the newest token and attends to cached
/// keys and values; without, it recomputes the whole window. Both give the same tokens.
/// After each step `on_step` gets the new token of every row; returning `false` stops
/// generation early. Returns the prompts with their continuations.
pub fn generate<B: Backend>(
    model: &LanguageModel<B>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    options: &SamplingOptions,
    mut on_step: impl FnMut(&[u32]) -> bool,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let mut batcher = Batcher::new(model);
    let id = batcher.add(prompts, options)?;
    for _ in 0..max_new_tokens {
        let step = batcher.step()?;
        if !on_step(&step[0].1) {
            break;
        }
    }
    Ok(batcher.remove(id).expect("the group was added"))
}
