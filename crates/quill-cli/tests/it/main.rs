//! The integration tests of quill-cli, one binary (one link of Burn) for all of them.

mod cli;
mod common;
mod directories;
mod docs_commands;
mod gpt2;
#[cfg(feature = "flex")]
mod hf_export;
mod nanogpt;
mod newcomer;
mod parallel;
mod parity;
mod resume_16_bit;
mod runs;
mod serve;
mod subword;
mod token_shards;
mod untrusted_files;
