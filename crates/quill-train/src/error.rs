//! The one error type of `quill-train`.

use std::path::PathBuf;

use quill_data::DataError;
use quill_model::ModelError;

/// Everything that can stop training, evaluation or a checkpoint load.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad setting.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// From the data pipeline.
    #[error(transparent)]
    Data(#[from] DataError),
    /// From the model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Data-parallel training: joining, a rank that stopped or differs.
    #[error("{0}")]
    Parallel(String),
    /// Another device's worker of this process failed, so this one stopped too (the
    /// other's error is the cause).
    #[error("another device's worker stopped")]
    OtherWorkerFailed,
    /// A device's worker panicked.
    #[error("a device worker panicked")]
    WorkerPanicked,
    /// An I/O error on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint that is incomplete, corrupt, or not quill's.
    #[error("{path}: not a valid quill checkpoint: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A Hugging Face checkpoint that quill cannot read or write (see [`crate::interop::hf`]).
    #[error("{path}: {reason}")]
    HuggingFace {
        /// The file or directory involved.
        path: PathBuf,
        /// What is wrong, naming the setting or tensor.
        reason: String,
    },
    /// A nanoGPT checkpoint that quill cannot read (see [`crate::interop::nanogpt`]).
    #[error("{path}: {reason}")]
    NanoGpt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A saved optimizer state that does not fit (missing or unexpected moments).
    #[error("optimizer state: {0}")]
    OptimizerState(String),
    /// `--resume` with model settings other than the checkpoint's.
    #[error(
        "{setting} is {checkpoint} in the checkpoint but {wanted} here; only training settings may change on resume"
    )]
    ResumeChangesModel {
        /// The model setting that differs.
        setting: String,
        /// Its value in the checkpoint.
        checkpoint: String,
        /// The value asked for.
        wanted: String,
    },
    /// `--init-from` with model settings other than the checkpoint's.
    #[error(
        "{setting} is {checkpoint} in the model being finetuned but {wanted} here; only training settings, dropout and a smaller block_size may change with --init-from"
    )]
    InitChangesModel {
        /// The model setting that differs.
        setting: String,
        /// Its value in the checkpoint.
        checkpoint: String,
        /// The value asked for.
        wanted: String,
    },
    /// The run would need more memory than the device has (see [`crate::MemoryEstimate`]).
    #[error("{0}")]
    OutOfMemory(String),
    /// The directory a run would write to holds something it must not replace; the
    /// message names the way out.
    #[error("{0}")]
    OutDir(String),
    /// Another process trains in the same run directory.
    #[error("{0} is in use by another `quill train` (one run directory, one trainer)")]
    Busy(PathBuf),
    /// The device failed while running work (e.g. a GPU kernel error).
    #[error("the device failed: {0}")]
    Device(String),
    /// The loss became NaN or infinite.
    #[error(
        "the loss became {loss} at iteration {iter}; stopping (the last good checkpoint is kept)"
    )]
    NonFinite {
        /// The iteration.
        iter: usize,
        /// The loss value.
        loss: f32,
    },
    /// Work stopped when asked to (an evaluation abandoned by Ctrl-C).
    #[error("interrupted")]
    Interrupted,
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
