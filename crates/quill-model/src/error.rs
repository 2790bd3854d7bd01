//! The one error type of `quill-model`.

/// A model that cannot be built, an input it cannot take, or weights that do not fit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A configuration value is out of range.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// An input sequence is longer than the model's context.
    #[error("input has {len} tokens but the model's block_size is {block_size}")]
    TooLong {
        /// The input length.
        len: usize,
        /// The model's maximum context.
        block_size: usize,
    },
    /// An input sequence is empty.
    #[error("input has no tokens")]
    Empty,
    /// Sampling options out of range.
    #[error("invalid sampling options: {0}")]
    Sampling(String),
    /// A tensor the model needs is not among the weights given.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor whose shape differs from the model's.
    #[error("tensor {name} has shape {found:?}, the model needs {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// Its shape in the weights given.
        found: Vec<usize>,
        /// The shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor the model has no place for.
    #[error("unexpected tensor {0}")]
    UnexpectedTensor(String),
    /// Text the tokenizer cannot take, or ids it cannot give text for (the tokenizer's
    /// own message).
    #[error("{0}")]
    Tokens(String),
}

impl From<quill_data::DataError> for ModelError {
    fn from(err: quill_data::DataError) -> Self {
        ModelError::Tokens(err.to_string())
    }
}
