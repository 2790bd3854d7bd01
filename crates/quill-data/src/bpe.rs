//! Byte-level BPE: GPT-2's tokenizer (bundled, so it works offline) and vocabularies
//! trained on a user's corpus (`bpe:N`).
//!
//! Both split text with GPT-2's pre-tokenizing pattern and encode each piece with
//! GitHub's `bpe` crate, which produces tiktoken's ids (checked against tiktoken's
//! `gpt2` encoding in `tests/it/gpt2_vectors.rs`). Training uses Hugging Face's BPE trainer.
//! The last id of every vocabulary is `<|endoftext|>`, as in GPT-2.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, LazyLock};

use base64::prelude::{BASE64_STANDARD, Engine};
use bpe::byte_pair_encoding::{BytePairEncoding, find_hash_factor_for_dictionary};
use serde::{Deserialize, Serialize};

use crate::DataError;

/// The end-of-text marker, the last id of every BPE vocabulary.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// GPT-2's pre-tokenizing pattern, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
/// ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, with the look-ahead written as three patterns the
/// way `bpe-openai` does for OpenAI's encodings: the second one matches one extra
/// whitespace character, which the splitter drops.
const PATTERNS: [(&str, bool); 3] = [
    (
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+$",
        false,
    ),
    ("\\s+\\s", true),
    ("\\s+", false),
];

/// GPT-2's ranks: OpenAI's `r50k_base.tiktoken` (sha256 `306cd27f…d930`, the file
/// tiktoken's `gpt2` encoding is built from), gzipped.
const GPT2_RANKS_GZ: &[u8] = include_bytes!("../assets/gpt2.tiktoken.gz");
/// A hash factor under which GPT-2's tokens do not collide (the one `bpe-openai` uses).
const GPT2_HASH_FACTOR: u64 = 17_846_336_922_010_275_747;

/// Which vocabulary a [`BpeTokenizer`] holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BpeKind {
    /// GPT-2's 50,257 tokens.
    Gpt2,
    /// A vocabulary trained by [`BpeTokenizer::train`], saved beside it as `bpe.tiktoken`.
    Bpe {
        /// Tokens including `<|endoftext|>`.
        vocab_size: usize,
        /// The hash factor the encoder uses for this vocabulary.
        hash_factor: u64,
    },
}

/// A byte-level BPE tokenizer: ids `0..vocab_size - 1` are byte strings, the last id is
/// `<|endoftext|>`.
pub struct BpeTokenizer {
    kind: BpeKind,
    /// The byte strings of ids `0..vocab_size - 1`.
    tokens: Vec<Vec<u8>>,
    encoder: bpe_openai::Tokenizer,
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.tokens == other.tokens
    }
}

static GPT2: LazyLock<Arc<BpeTokenizer>> = LazyLock::new(|| {
    let mut text = String::new();
    flate2::read::GzDecoder::new(GPT2_RANKS_GZ)
        .read_to_string(&mut text)
        .expect("the bundled GPT-2 ranks decompress");
    let tokens = parse_tiktoken(&text).expect("the bundled GPT-2 ranks parse");
    let gpt2 = BpeTokenizer::build(BpeKind::Gpt2, tokens, GPT2_HASH_FACTOR);
    Arc::new(gpt2.expect("the bundled GPT-2 ranks are a byte-pair encoding"))
});

impl BpeTokenizer {
    /// GPT-2's tokenizer (built once per process, ~0.25 s).
    pub fn gpt2() -> Arc<BpeTokenizer> {
        GPT2.clone()
    }

    /// The tokenizer of `tokens`, which may come from a file: a hash factor of 0, one
    /// under which two tokens collide, or tokens that are not a byte-pair encoding
    /// (a token that does not encode to itself) are an error. The `bpe` crate checks
    /// the last two with assertions only, so they are caught here.
    fn build(
        kind: BpeKind,
        tokens: Vec<Vec<u8>>,
        hash_factor: u64,
    ) -> Result<BpeTokenizer, DataError> {
        if hash_factor == 0 {
            return Err(DataError::BadTokenizer(
                "tokenizer.json: hash_factor must be larger than 0".into(),
            ));
        }
        let dictionary = tokens.iter().cloned();
        let bpe = std::panic::catch_unwind(|| {
            BytePairEncoding::from_dictionary(dictionary, Some(hash_factor))
        })
        .map_err(|_| {
            DataError::BadTokenizer(format!(
                "bpe.tiktoken: its {} tokens are not a byte-pair encoding under hash_factor {hash_factor} (two tokens collide, or one does not encode to itself)",
                tokens.len()
            ))
        })?;
        let encoder = bpe_openai::Tokenizer::new_lookahead(bpe, &PATTERNS, false)
            .expect("GPT-2's pattern compiles");
        Ok(BpeTokenizer {
            kind,
            tokens,
            encoder,
        })
    }

    /// Trains a vocabulary of `vocab_size` tokens (at most: a small corpus may run out
    /// of pairs to merge) on `texts` with Hugging Face's BPE trainer: the 256 bytes,
    /// the merges, then `<|endoftext|>`.
    pub fn train(
        texts: impl Iterator<Item = String> + Send,
        vocab_size: usize,
    ) -> Result<BpeTokenizer, DataError> {
        use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::{
            DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
            TokenizerBuilder,
        };
        if vocab_size < 258 {
            return Err(DataError::BadTokenizer(format!(
                "bpe:{vocab_size}: a byte-level vocabulary needs at least 258 tokens (256 bytes, one merge, <|endoftext|>)"
            )));
        }
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size - 1)
            .min_frequency(0)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut hf = TokenizerBuilder::<
            BPE,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
        .build()
        .map_err(|e| DataError::BadTokenizer(e.to_string()))?;
        hf.train(&mut trainer, texts)
            .map_err(|e| DataError::BadTokenizer(format!("training failed: {e}")))?;
        let mut vocab: Vec<(String, u32)> = hf.get_vocab(false).into_iter().collect();
        vocab.sort_by_key(|&(_, id)| id);
        let chars = byte_level_chars();
        let tokens: Vec<Vec<u8>> = vocab
            .iter()
            .enumerate()
            .map(|(i, (token, id))| {
                assert_eq!(*id as usize, i, "the trainer numbers tokens densely");
                token.chars().map(|c| chars[&c]).collect()
            })
            .collect();
        BpeTokenizer::from_tokens(tokens, None)
    }

    /// A trained vocabulary from its tokens (ids `0..`, without `<|endoftext|>`).
    fn from_tokens(
        tokens: Vec<Vec<u8>>,
        hash_factor: Option<u64>,
    ) -> Result<BpeTokenizer, DataError> {
        let distinct: HashSet<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        if distinct.len() != tokens.len() || (0..=255u8).any(|b| !distinct.contains(&[b][..])) {
            return Err(DataError::BadTokenizer(
                "a byte-level vocabulary needs all 256 bytes and distinct tokens".into(),
            ));
        }
        let hash_factor =
            hash_factor.unwrap_or_else(|| find_hash_factor_for_dictionary(tokens.iter().cloned()));
        let kind = BpeKind::Bpe {
            vocab_size: tokens.len() + 1,
            hash_factor,
        };
        BpeTokenizer::build(kind, tokens, hash_factor)
    }

    /// Reads a trained vocabulary saved as [`BpeTokenizer::ranks`] writes it, with the
    /// `vocab_size` and `hash_factor` of its [`BpeKind::Bpe`].
    pub fn from_ranks(
        vocab_size: usize,
        hash_factor: u64,
        ranks: &str,
    ) -> Result<BpeTokenizer, DataError> {
        let tokens = parse_tiktoken(ranks)?;
        if tokens.len() + 1 != vocab_size {
            return Err(DataError::BadTokenizer(format!(
                "bpe.tiktoken holds {} tokens, tokenizer.json says {vocab_size} with <|endoftext|>",
                tokens.len()
            )));
        }
        BpeTokenizer::from_tokens(tokens, Some(hash_factor))
    }

    /// Which vocabulary this is.
    pub fn kind(&self) -> &BpeKind {
        &self.kind
    }

    /// Tokens, `<|endoftext|>` included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + 1
    }

    /// The id of `<|endoftext|>`.
    pub fn end_of_text(&self) -> u32 {
        self.tokens.len() as u32
    }

    /// Encodes `text` (special-token text such as `<|endoftext|>` is ordinary text here,
    /// like tiktoken's `encode_ordinary`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.encoder.encode(text)
    }

    /// The bytes of token `id`, or `None` outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        match self.tokens.get(id as usize) {
            Some(bytes) => Some(bytes),
            None if id == self.end_of_text() => Some(END_OF_TEXT.as_bytes()),
            None => None,
        }
    }

    /// The vocabulary in tiktoken's file format (`base64(token) rank` per line), which
    /// Python's tiktoken reads with `load_tiktoken_bpe`.
    pub fn ranks(&self) -> String {
        let mut out = String::new();
        for (rank, token) in self.tokens.iter().enumerate() {
            out.push_str(&BASE64_STANDARD.encode(token));
            out.push(' ');
            out.push_str(&rank.to_string());
            out.push('\n');
        }
        out
    }
}

/// Parses tiktoken's rank file: `base64(token) rank` per line, ranks `0, 1, 2, …`.
fn parse_tiktoken(text: &str) -> Result<Vec<Vec<u8>>, DataError> {
    let bad = |line: usize, what: &str| {
        DataError::BadTokenizer(format!("rank file line {}: {what}", line + 1))
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let (token, rank) = line.split_once(' ').ok_or_else(|| bad(i, "no rank"))?;
            if rank.trim().parse::<usize>() != Ok(i) {
                return Err(bad(i, "ranks must count up from 0"));
            }
            BASE64_STANDARD
                .decode(token)
                .map_err(|_| bad(i, "invalid base64"))
        })
        .collect()
}

/// GPT-2's byte-to-character table, inverted: the printable character Hugging Face's
/// byte-level BPE writes for each byte → the byte.
fn byte_level_chars() -> std::collections::HashMap<char, u8> {
    let spelling = crate::hugging_face::byte_level_spelling();
    (0..=255u8).map(|b| (spelling[b as usize], b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_knows_its_famous_ids() {
        let gpt2 = BpeTokenizer::gpt2();
        assert_eq!(gpt2.vocab_size(), 50_257);
        assert_eq!(gpt2.end_of_text(), 50_256);
        assert_eq!(gpt2.encode("Hello world"), vec![15496, 995]);
        assert_eq!(gpt2.encode("\n"), vec![198]);
        assert_eq!(gpt2.token_bytes(50_256), Some(END_OF_TEXT.as_bytes()));
        assert_eq!(gpt2.token_bytes(50_257), None);
    }

    /// A rank file with `tokens` after the 256 bytes, in tiktoken's format.
    fn ranks(tokens: &[&[u8]]) -> String {
        let bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let all = bytes
            .iter()
            .map(Vec::as_slice)
            .chain(tokens.iter().copied());
        all.enumerate()
            .map(|(i, t)| format!("{} {i}\n", BASE64_STANDARD.encode(t)))
            .collect()
    }

    /// Files from elsewhere that the `bpe` crate would stop on with an assertion are
    /// one error each.
    #[test]
    fn vocabularies_that_are_not_a_bpe_are_errors() {
        let good = ranks(&[b"ab"]);
        let factor = find_hash_factor_for_dictionary(parse_tiktoken(&good).unwrap());
        BpeTokenizer::from_ranks(258, factor, &good).unwrap();
        let err = BpeTokenizer::from_ranks(258, 0, &good).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tokenizer: tokenizer.json: hash_factor must be larger than 0"
        );
        // A token no merge of two others makes, and an empty token.
        for tokens in [&[&b"abc"[..]][..], &[b"ab", b""]] {
            let text = ranks(tokens);
            let n = tokens.len() + 257;
            let err = BpeTokenizer::from_ranks(n, factor, &text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("are not a byte-pair encoding under hash_factor"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_byte_table_is_gpt2s() {
        let chars = byte_level_chars();
        assert_eq!(chars.len(), 256);
        assert_eq!(chars[&'Ġ'], b' ');
        assert_eq!(chars[&'Ċ'], b'\n');
        assert_eq!(chars[&'!'], b'!');
    }
}
