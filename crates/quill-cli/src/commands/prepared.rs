//! The checkpoint a command runs (sample, serve, eval, bench): found (a run directory
//! stands for its `best/`), read, checked against the device's memory and the weight
//! format, and built on the backend with its matrices stored as asked.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::backend::Backend;
use quill_model::{LanguageModel, WeightFormat};
use quill_train::{Checkpoint, MemoryEstimate, Which};

use crate::backend::Prepared;

/// A checkpoint read and checked, ready to be built on a device.
pub struct PreparedModel {
    /// The checkpoint directory read.
    pub dir: PathBuf,
    /// What it holds.
    pub checkpoint: Checkpoint,
    /// How its matrices are stored for inference (`--weights`).
    pub weights: WeightFormat,
}

impl PreparedModel {
    /// The checkpoint `--checkpoint dir` names, read.
    pub fn open(dir: &Path, weights: WeightFormat) -> Result<PreparedModel> {
        let dir = super::checkpoint_dir(dir, Which::Best, "--checkpoint")?;
        let checkpoint = Checkpoint::load(&dir)?;
        Ok(PreparedModel {
            dir,
            checkpoint,
            weights,
        })
    }

    /// Checks that `target` holds the model running `rows` sequences at once, and that
    /// it stores weights as asked.
    pub fn check(&self, target: &Prepared, rows: usize) -> Result<()> {
        target.check_memory(&MemoryEstimate::sampling(
            &self.checkpoint.config.model,
            rows,
            target.dtype_bytes(),
        ))?;
        target.check_weights(self.weights)
    }

    /// The model on `device`, its matrices stored as asked.
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<LanguageModel<B>> {
        Ok((self.checkpoint.model::<B>(device)?).with_weights(self.weights)?)
    }
}
