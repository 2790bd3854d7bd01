//! The integration tests of quill-train, one binary (one link of Burn) for all of them.

mod common;
mod hf_gpt2;
mod muon;
mod nanogpt;
mod old_checkpoint;
mod optim;
mod precision;
mod shards;
#[cfg(feature = "plot")]
mod train;
