//! # quill-data
//!
//! Everything quill knows about text before it becomes a tensor:
//!
//! - [`corpus`]: read a UTF-8 corpus (a file, or every `*.txt` of a directory), and
//!   verify the default tiny Shakespeare corpus; `download` (feature `download`) fetches
//!   it.
//! - [`dataset`]: a corpus tokenized and split, [`Dataset`], in memory or memory-mapped
//!   from a prepared directory.
//! - [`prepare`]: tokenize a corpus once, as a stream, into token files
//!   (`quill data prepare`).
//! - [`token_file`]: llm.c-format and nanoGPT-format token files, memory-mapped.
//! - [`atomic`]: atomic writes of files and directories, and the clean-up after killed
//!   writers.
//! - [`tokenizer`]: [`Tokenizer`], one of the character-level [`CharTokenizer`]
//!   ([`char_tokenizer`]) or a byte-level [`BpeTokenizer`] ([`bpe`]: GPT-2's, or one
//!   trained on the corpus).
//! - [`batch`]: the train/val [`Split`] and the seeded [`BatchSampler`] that draws
//!   `(x, y)` training batches.
//! - [`hugging_face`]: the tokenizers in Hugging Face's format, for exported models.
//! - [`shards`]: corpora kept as many token files (llm.c's shards), read as one.
//! - [`rng`]: the small, seedable, serialisable random generator used by the batch
//!   sampler and by sampling from models, so runs can be resumed exactly.
//!
//! ```
//! use quill_data::{CharTokenizer, Split};
//!
//! let text = "hello world, hello quill\n".repeat(8);
//! let tok = CharTokenizer::from_text(&text).unwrap();
//! let ids = tok.encode(&text).unwrap();
//! assert_eq!(tok.decode(&ids).unwrap(), text);
//! let split = Split::new(ids, 0.1).unwrap();
//! assert_eq!(split.train.len() + split.val.len(), text.chars().count());
//! ```

pub mod atomic;
pub mod batch;
#[cfg(feature = "subword")]
pub mod bpe;
pub mod char_tokenizer;
pub mod corpus;
pub mod dataset;
#[cfg(feature = "download")]
pub mod download;
pub mod error;
pub mod files;
#[cfg(feature = "subword")]
pub mod hugging_face;
pub mod prepare;
pub mod rng;
pub mod shards;
#[cfg(feature = "subword")]
pub mod source;
pub mod token_file;
pub mod tokenizer;

pub use batch::{BatchSampler, Shard, Split, TokenSource, Tokens};
#[cfg(feature = "subword")]
pub use bpe::BpeTokenizer;
pub use char_tokenizer::CharTokenizer;
pub use corpus::{Corpus, TINY_SHAKESPEARE};
pub use dataset::Dataset;
pub use error::DataError;
pub use rng::Rng;
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerSpec};
