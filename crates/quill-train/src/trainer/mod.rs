//! One optimizer step as a public API, in the shape of Burn's custom training loop:
//! forward → loss → backward → gradients → AdamW. Other programs drive it with batches
//! from any source (`examples/custom_loop.rs`); [`crate::train()`], the benchmark and the
//! parity check call the same step.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use quill_data::BatchSampler;
use quill_model::LanguageModel;
use quill_model::params::NamedTensor;

use crate::optim::{GradBuffer, LossScaler, Optimizer, StepOptions, param_dtype};
use crate::schedule::learning_rate;
use crate::{TrainConfig, TrainError};
use shard::ShardPools;
use strategy::{SingleProcess, Strategy};

pub(crate) mod shard;
pub(crate) mod strategy;

/// The data of one optimizer step: one or more micro-batches of inputs `x` and targets
/// `y`, `[B, T]` token ids each; their gradients are averaged (gradient accumulation).
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `(x, y)` per micro-batch.
    pub micro_batches: Vec<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)>,
}

impl<B: Backend> Batch<B> {
    /// One micro-batch.
    pub fn new(x: Tensor<B, 2, Int>, y: Tensor<B, 2, Int>) -> Self {
        Batch {
            micro_batches: vec![(x, y)],
        }
    }

    /// `micro_batches` batches drawn from `data` by `sampler`, as the trainer draws them
    /// (the sampler's shard of each: see [`BatchSampler::with_shard`]).
    pub fn sample(
        sampler: &mut BatchSampler,
        data: &(impl quill_data::TokenSource + ?Sized),
        micro_batches: usize,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let micro_batches = (0..micro_batches)
            .map(|_| sampler.sample::<B>(data, device))
            .collect::<Result<_, _>>()?;
        Ok(Batch { micro_batches })
    }
}

/// Runs `f` on a thread of rayon's global pool when `sharded` (a sharded step on the
/// CPU), else here. From the pool, the fused optimizer's parallel loops share the work at
/// once; from outside, each one first waits for a pool thread to wake up (a quarter of
/// the gradient mean's time; BENCHMARKS.md has the figures).
fn in_pool<R: Send>(sharded: bool, f: impl FnOnce() -> R + Send) -> R {
    match sharded {
        true => rayon::scope(|_| f()),
        false => f(),
    }
}

/// Whether `B` is the CPU backend whose fused kernels and threads [`Trainer::shards`]
/// is for.
fn serves_cpu<B: Backend>() -> bool {
    #[cfg(feature = "fused-cpu")]
    return quill_kernels::serves::<B>();
    #[cfg(not(feature = "fused-cpu"))]
    {
        let _no_kernels_for = std::marker::PhantomData::<B>;
        false
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutput {
    /// Mean loss of the step's micro-batches (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// The loss scale of f16 training, and whether this step was skipped because a
    /// gradient was not finite at that scale.
    pub loss_scale: Option<(f64, bool)>,
}

/// A model, its optimizer and the learning-rate schedule: [`Trainer::step`] takes one
/// optimizer step.
pub struct Trainer<AB: AutodiffBackend> {
    /// `None` only while a step moves the model through the optimizer.
    model: Option<LanguageModel<AB>>,
    optim: Optimizer<AB::InnerBackend>,
    config: TrainConfig,
    iter: usize,
    /// Who shares each step: gradients and losses are summed over its ranks.
    strategy: Box<dyn Strategy<AB::InnerBackend>>,
    /// The most shards a micro-batch is split into (`None`: one per CPU thread).
    max_shards: Option<usize>,
    /// The threads the shards run on.
    shard_pools: ShardPools,
    /// The loss scaler, when the parameters are f16.
    scaler: Option<LossScaler>,
}

impl<AB: AutodiffBackend> Trainer<AB> {
    /// A trainer for `model` with a fresh optimizer, at step 0, using `config`'s
    /// optimizer, schedule, clipping and dropout seed (the dropout itself is the
    /// model's).
    ///
    /// The precision follows the model's parameters: 16-bit ones (or `emulate_bf16`)
    /// get f32 master copies unless `master_weights` is off, and f16 ones a
    /// [`LossScaler`].
    pub fn new(model: LanguageModel<AB>, config: &TrainConfig) -> Self {
        let c = config;
        let dtype = param_dtype(&model);
        let sixteen_bits = dtype != burn::tensor::DType::F32 || c.emulate_bf16;
        let optim = Optimizer::for_run(c)
            .with_master_weights(sixteen_bits && c.master_weights)
            .with_bf16_rounding(c.emulate_bf16);
        Trainer {
            model: Some(model),
            optim,
            config: config.clone(),
            iter: 0,
            strategy: Box::new(SingleProcess),
            max_shards: None,
            shard_pools: ShardPools::default(),
            scaler: (dtype == burn::tensor::DType::F16).then(LossScaler::new),
        }
    }

    /// The float type of the model's parameters.
    pub fn float_type(&self) -> Option<crate::run::checkpoint::FloatType> {
        let model = self.model.as_ref()?;
        crate::run::checkpoint::FloatType::of(crate::optim::param_dtype(model))
    }

    /// The loss scaler of f16 training (`None` otherwise).
    pub fn loss_scaler(&self) -> Option<&LossScaler> {
        self.scaler.as_ref()
    }

    /// Splits each micro-batch into at most `max_shards` equal shards of rows, whose
    /// forward and backward passes run at the same time, one per CPU thread (see
    /// [`Trainer::shards`]); 1 runs each micro-batch whole.
    pub fn with_max_shards(mut self, max_shards: usize) -> Self {
        self.max_shards = Some(max_shards.max(1));
        self
    }

    /// How many shards each micro-batch of `rows` rows is split into. On the CPU
    /// (Flex with the fused kernels), the shards' forward and backward passes run at
    /// the same time, one per core, which keeps a small model's cores far busier than
    /// one pass whose every operation is split over them. The step is the same (the
    /// mean of equal shards' gradients is the micro-batch's); only the rounding
    /// differs, by the order of the sums. The module `shard` has the details.
    ///
    /// The count is the largest divisor of `rows` up to the number of rayon threads
    /// (or [`Trainer::with_max_shards`]); 1 on other backends, where one pass already
    /// fills the device; with dropout, whose masks come from one random generator
    /// that parallel shards would draw from in an order that changes between runs; and
    /// in f16, whose loss scale the shards' passes do not apply.
    pub fn shards(&self, rows: usize) -> usize {
        let scaled = self.scaler.is_some();
        if !serves_cpu::<AB::InnerBackend>() || self.model().dropout() > 0.0 || scaled {
            return 1;
        }
        let most = self.max_shards.unwrap_or_else(rayon::current_num_threads);
        (1..=most.min(rows))
            .rev()
            .find(|&s| rows.is_multiple_of(s))
            .unwrap_or(1)
    }

    /// [`Trainer::shards`] for `batch`'s micro-batches (1 when they differ in rows).
    fn shards_of(&self, batch: &Batch<AB>) -> usize {
        let mut rows = batch.micro_batches.iter().map(|(x, _)| x.dims()[0]);
        match rows.next() {
            Some(first) if rows.all(|r| r == first) => self.shards(first),
            _ => 1,
        }
    }

    /// Trains as `strategy` shares the work: with a data-parallel world's, each step's
    /// gradients and loss are averaged over all ranks before the update, so every rank
    /// applies the same one.
    pub fn with_strategy(mut self, strategy: Box<dyn Strategy<AB::InnerBackend>>) -> Self {
        self.strategy = strategy;
        self
    }

    /// How this trainer shares its steps.
    pub fn strategy(&self) -> &dyn Strategy<AB::InnerBackend> {
        self.strategy.as_ref()
    }

    /// A trainer that continues at step `iter` with saved optimizer moments (see
    /// [`Optimizer::state`]) and step count.
    pub fn resume(
        model: LanguageModel<AB>,
        config: &TrainConfig,
        iter: usize,
        moments: &std::collections::BTreeMap<String, NamedTensor>,
        optimizer_steps: u64,
    ) -> Result<Self, TrainError> {
        let lengths = crate::optim::param_lengths(&model);
        let mut trainer = Trainer::new(model, config);
        let device = trainer.model().device();
        trainer
            .optim
            .load_state(moments, optimizer_steps, &lengths, &device)?;
        trainer.iter = iter;
        Ok(trainer)
    }

    /// Continues 16-bit training from a checkpoint's f32 `weights` (see
    /// [`crate::Precision::load_masters`]) and loss scaler: the master copies are the saved
    /// weights, and the model holds their rounding. Nothing changes in f32 training.
    pub fn with_saved_precision(
        mut self,
        weights: &std::collections::BTreeMap<String, NamedTensor>,
        scaler: Option<LossScaler>,
    ) -> Self {
        let model = self
            .model
            .take()
            .expect("the model is back after each step");
        self.model = Some(self.optim.precision_mut().load_masters(model, weights));
        if let (Some(ours), Some(saved)) = (self.scaler.as_mut(), scaler) {
            *ours = saved;
        }
        self
    }

    /// The model's weights as a checkpoint saves them: the f32 master copies where the
    /// optimizer keeps them, else the model's own.
    pub fn weights(&self) -> LanguageModel<AB::InnerBackend> {
        self.optim.precision().with_masters_of(self.model().valid())
    }

    /// The model as it is now.
    pub fn model(&self) -> &LanguageModel<AB> {
        self.model
            .as_ref()
            .expect("the model is back after each step")
    }

    /// The optimizer (its moments go into checkpoints).
    pub fn optimizer(&self) -> &Optimizer<AB::InnerBackend> {
        &self.optim
    }

    /// Steps taken so far: the next step's number.
    pub fn iter(&self) -> usize {
        self.iter
    }

    /// One optimizer step on `batch`: the gradients of its micro-batches, averaged, then
    /// AdamW at the schedule's learning rate for this step. A loss that is not finite is
    /// an error, and leaves the model as it was.
    pub fn step(&mut self, batch: &Batch<AB>) -> Result<StepOutput, TrainError> {
        Ok(self.step_and_vote(batch, false)?.0)
    }

    /// [`Trainer::step`], and a vote to stop: whether any rank asked to (`stop` here, or
    /// on another rank of a data-parallel run), so that all ranks stop after the same
    /// step.
    pub fn step_and_vote(
        &mut self,
        batch: &Batch<AB>,
        stop: bool,
    ) -> Result<(StepOutput, bool), TrainError> {
        let shards = self.shards_of(batch);
        let (config, iter) = (&self.config, self.iter);
        let model = self
            .model
            .as_ref()
            .expect("the model is back after each step");
        if model.dropout() > 0.0 {
            AB::seed(&model.device(), config.seed.wrapping_add(iter as u64));
        }
        let mut grads = GradBuffer::default();
        let mut loss_sum = 0.0f64;
        let loss_scale = self.scaler.as_ref().map(|s| s.scale);
        for (x, y) in &batch.micro_batches {
            if shards > 1 {
                let sharded = self.shard_pools.gradients(model, x, y, shards)?;
                loss_sum += sharded.loss;
                in_pool(true, || grads.accumulate_shards(sharded.grads));
            } else {
                let loss = model.loss(x.clone(), y.clone())?;
                loss_sum += quill_model::ops::scalar(loss.clone());
                let loss = match loss_scale {
                    Some(scale) => loss * scale,
                    None => loss,
                };
                grads.accumulate(model, &loss.backward());
            }
        }
        let mut micro_batches = batch.micro_batches.len().max(1);
        let mut stop = stop;
        let ranks = self.strategy.ranks();
        if ranks > 1 {
            let extra = [loss_sum as f32, f32::from(u8::from(stop))];
            let summed = grads.sum_over_ranks(ranks, &extra, |g| self.strategy.sum(g))?;
            (loss_sum, stop) = (f64::from(summed[0]), summed[1] > 0.0);
            micro_batches *= ranks;
        }
        let loss = (loss_sum / micro_batches as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { iter, loss });
        }
        let lr = learning_rate(config, iter);
        let options = StepOptions {
            lr,
            grad_clip: config.grad_clip,
            // The schedule scales Muon's rate as it scales AdamW's.
            muon_lr: config.muon_lr * lr / config.lr,
            loss_scale,
        };
        let model = self
            .model
            .take()
            .expect("the model is back after each step");
        let optim = &mut self.optim;
        let (model, grad_norm) = in_pool(shards > 1, || optim.step(model, grads, options));
        self.model = Some(model);
        self.iter += 1;
        let loss_scale = (self.scaler.as_mut()).map(|scaler| {
            let scale = scaler.scale;
            (scale, !scaler.update(grad_norm))
        });
        let output = StepOutput {
            loss,
            grad_norm,
            lr,
            loss_scale,
        };
        Ok((output, stop))
    }
}
