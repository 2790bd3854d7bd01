//! The integration tests of quill-model, one binary (one link of Burn) for all of them.

mod attention_math;
mod batching;
mod common;
mod kv_cache;
mod models;
mod ops;
mod weights;
