//! The integration tests of quill-data, one binary (one link of Burn) for all of them.

mod gpt2_vectors;
mod prepare;
mod tinyshakespeare;
