//! The sharded step on the CPU: one micro-batch split by rows into equal shards whose
//! forward and backward passes run at the same time, one per core.
//!
//! A small model's step keeps the cores far busier this way than as one pass whose
//! every operation is split over the cores: the matrix products of a 128-wide model
//! are too small to share well, and the threads would meet at every operation. The
//! step is the same: each shard's gradient is the mean over its rows, and the mean of
//! equal shards' gradients is the micro-batch's; only the order of the sums differs.
//!
//! Each shard runs on its own copy of the parameters (the same values, new nodes of
//! the autodiff graph), so that the shards' graphs share nothing, and on its own
//! one-thread rayon pool, so that the kernels inside run on that thread alone. The
//! pools are what keep it safe: Burn's autodiff holds a lock on a graph during its
//! backward pass, and a rayon worker waiting inside one shard's backward pass could
//! otherwise pick up another shard's whole pass and block on that lock for ever.

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use quill_model::LanguageModel;

use crate::TrainError;
use crate::optim::GradBuffer;

/// What the shards of one micro-batch computed.
pub(crate) struct Sharded<B: Backend> {
    /// The mean of the shards' losses.
    pub(crate) loss: f64,
    /// Each shard's gradients, in shard order.
    pub(crate) grads: Vec<GradBuffer<B>>,
}

/// One single-thread rayon pool per shard, built on first use and kept.
#[derive(Debug, Default)]
pub(crate) struct ShardPools {
    pools: Vec<rayon::ThreadPool>,
}

impl ShardPools {
    /// The mean loss of `x`, `y` `[B, T]` and each shard's gradients, for `shards`
    /// equal shards of the `B` rows (`shards` divides `B`).
    pub(crate) fn gradients<AB: AutodiffBackend>(
        &mut self,
        model: &LanguageModel<AB>,
        x: &Tensor<AB, 2, Int>,
        y: &Tensor<AB, 2, Int>,
        shards: usize,
    ) -> Result<Sharded<AB::InnerBackend>, TrainError> {
        while self.pools.len() < shards {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "quill-shard".into())
                .build()
                .map_err(|e| TrainError::Parallel(format!("a thread for a shard: {e}")))?;
            self.pools.push(pool);
        }
        let rows = x.dims()[0] / shards;
        let device = model.device();
        let shard = |s: usize| -> Result<(f64, GradBuffer<AB::InnerBackend>), TrainError> {
            let model = model.clone().fork(&device);
            let rows = s * rows..(s + 1) * rows;
            let loss = model.loss(x.clone().slice(rows.clone()), y.clone().slice(rows))?;
            let value = quill_model::ops::scalar(loss.clone());
            let mut grads = GradBuffer::default();
            grads.accumulate(&model, &loss.backward());
            Ok((value, grads))
        };
        let pools = &self.pools[..shards];
        let parts: Vec<_> = std::thread::scope(|scope| {
            let others: Vec<_> = (1..shards)
                .map(|s| {
                    let (pool, shard) = (&pools[s], &shard);
                    scope.spawn(move || pool.install(|| shard(s)))
                })
                .collect();
            let first = pools[0].install(|| shard(0));
            let others = others.into_iter().map(|handle| {
                // A panic in a shard goes on in the caller, as if the step had run here.
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            std::iter::once(first).chain(others).collect()
        });
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        let loss = parts.iter().map(|(loss, _)| loss).sum::<f64>() / shards as f64;
        let grads = parts.into_iter().map(|(_, grads)| grads).collect();
        Ok(Sharded { loss, grads })
    }
}
