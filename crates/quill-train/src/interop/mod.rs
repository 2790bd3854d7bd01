//! Checkpoints of other tools, to and from quill's.

pub mod hf;
pub mod nanogpt;
