//! The tokenizers a dataset or checkpoint can use, behind one type: characters
//! ([`CharTokenizer`]), GPT-2's BPE, or a BPE trained on the corpus ([`BpeTokenizer`]).
//!
//! A tokenizer is saved as files beside the data it tokenized (a prepared dataset, a
//! checkpoint):
//!
//! | tokenizer | files |
//! |---|---|
//! | `char` | `vocab.json`: `{"vocab": "<the characters in id order>"}` |
//! | `gpt2` | `tokenizer.json`: `{"kind": "gpt2"}` (the ranks are bundled in the binary) |
//! | `bpe:N` | `tokenizer.json`: `{"kind": "bpe", "vocab_size": N, "hash_factor": …}` and `bpe.tiktoken`, the ranks in tiktoken's format |

use std::fmt;
use std::path::Path;
use std::str::FromStr;
#[cfg(feature = "subword")]
use std::sync::Arc;

#[cfg(feature = "subword")]
use crate::bpe::{BpeKind, BpeTokenizer};
use crate::{CharTokenizer, DataError};

/// The character tokenizer's file.
pub const VOCAB_FILE: &str = "vocab.json";
/// A BPE tokenizer's description.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// A trained BPE tokenizer's ranks.
pub const RANKS_FILE: &str = "bpe.tiktoken";

/// Which tokenizer to build: `char`, `gpt2` or `bpe:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// One token per character of the corpus.
    Char,
    /// GPT-2's byte-level BPE.
    Gpt2,
    /// A byte-level BPE of this many tokens, trained on the corpus.
    Bpe(usize),
}

impl FromStr for TokenizerSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        match s {
            "char" => Ok(TokenizerSpec::Char),
            "gpt2" => Ok(TokenizerSpec::Gpt2),
            _ => s
                .strip_prefix("bpe:")
                .and_then(|n| n.parse().ok())
                .map(TokenizerSpec::Bpe)
                .ok_or_else(|| {
                    DataError::BadTokenizer(format!(
                        "unknown tokenizer {s:?}; use char, gpt2 or bpe:VOCAB_SIZE (e.g. bpe:8192)"
                    ))
                }),
        }
    }
}

impl fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerSpec::Char => write!(f, "char"),
            TokenizerSpec::Gpt2 => write!(f, "gpt2"),
            TokenizerSpec::Bpe(n) => write!(f, "bpe:{n}"),
        }
    }
}

/// A tokenizer of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    /// Characters.
    Char(CharTokenizer),
    /// Byte-level BPE (GPT-2's or trained).
    #[cfg(feature = "subword")]
    Bpe(Arc<BpeTokenizer>),
}

impl From<CharTokenizer> for Tokenizer {
    fn from(tok: CharTokenizer) -> Self {
        Tokenizer::Char(tok)
    }
}

impl Tokenizer {
    /// GPT-2's tokenizer.
    #[cfg(feature = "subword")]
    pub fn gpt2() -> Tokenizer {
        Tokenizer::Bpe(BpeTokenizer::gpt2())
    }

    /// `char`, `gpt2` or `bpe:N`.
    pub fn name(&self) -> String {
        self.spec().to_string()
    }

    /// The kind of tokenizer this is, as `--tokenizer` names it.
    pub fn spec(&self) -> TokenizerSpec {
        match self {
            Tokenizer::Char(_) => TokenizerSpec::Char,
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => match bpe.kind() {
                BpeKind::Gpt2 => TokenizerSpec::Gpt2,
                BpeKind::Bpe { vocab_size, .. } => TokenizerSpec::Bpe(*vocab_size),
            },
        }
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(tok) => tok.vocab_size(),
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => bpe.vocab_size(),
        }
    }

    /// The character tokenizer, if this is one.
    pub fn as_char(&self) -> Option<&CharTokenizer> {
        match self {
            Tokenizer::Char(tok) => Some(tok),
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(_) => None,
        }
    }

    /// The id of `<|endoftext|>` (BPE tokenizers), which separates documents.
    pub fn end_of_text(&self) -> Option<u32> {
        match self {
            Tokenizer::Char(_) => None,
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => Some(bpe.end_of_text()),
        }
    }

    /// Encodes `text`; only the character tokenizer can meet text it cannot encode.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        match self {
            Tokenizer::Char(tok) => tok.encode(text),
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => Ok(bpe.encode(text)),
        }
    }

    /// The UTF-8 bytes of `ids`; an id outside the vocabulary is an error.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, DataError> {
        match self {
            Tokenizer::Char(tok) => Ok(tok.decode(ids)?.into_bytes()),
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => {
                let mut out = Vec::new();
                for (position, &id) in ids.iter().enumerate() {
                    let bytes = bpe.token_bytes(id).ok_or(DataError::UnknownToken {
                        id,
                        position,
                        vocab_size: bpe.vocab_size(),
                    })?;
                    out.extend_from_slice(bytes);
                }
                Ok(out)
            }
        }
    }

    /// Decodes `ids` to text; byte sequences that are not UTF-8 (a character cut
    /// between tokens) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The token generation starts from when there is no prompt: the newline's id
    /// (GPT-2: 198), or 0 when a character vocabulary has no newline.
    pub fn start_token(&self) -> u32 {
        match self {
            Tokenizer::Char(tok) => tok.start_token(),
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => bpe.encode("\n")[0],
        }
    }

    /// The files that save this tokenizer (see the module table).
    pub fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        match self {
            Tokenizer::Char(tok) => vec![(VOCAB_FILE, tok.to_json().into_bytes())],
            #[cfg(feature = "subword")]
            Tokenizer::Bpe(bpe) => {
                let kind = serde_json::to_vec(bpe.kind()).expect("a kind serialises");
                let mut files = vec![(TOKENIZER_FILE, kind)];
                if matches!(bpe.kind(), BpeKind::Bpe { .. }) {
                    files.push((RANKS_FILE, bpe.ranks().into_bytes()));
                }
                files
            }
        }
    }

    /// Reads the tokenizer saved in `dir` by [`Tokenizer::files`].
    pub fn read(dir: &Path) -> Result<Tokenizer, DataError> {
        let read = |name: &str| {
            let path = dir.join(name);
            crate::files::read_regular_text(&path, crate::files::TOKENIZER_LIMIT)
                .map_err(|e| DataError::io(path, e))
        };
        if dir.join(TOKENIZER_FILE).exists() {
            return read_subword(dir, read);
        }
        Ok(Tokenizer::Char(CharTokenizer::from_json(&read(
            VOCAB_FILE,
        )?)?))
    }
}

/// The BPE tokenizer saved in `dir` (`tokenizer.json`, and `bpe.tiktoken` when trained).
#[cfg(feature = "subword")]
fn read_subword(
    _dir: &Path,
    read: impl Fn(&str) -> Result<String, DataError>,
) -> Result<Tokenizer, DataError> {
    let bad = |e: String| DataError::BadTokenizer(format!("{TOKENIZER_FILE}: {e}"));
    let kind: BpeKind =
        serde_json::from_str(&read(TOKENIZER_FILE)?).map_err(|e| bad(e.to_string()))?;
    Ok(match kind {
        BpeKind::Gpt2 => Tokenizer::gpt2(),
        BpeKind::Bpe {
            vocab_size,
            hash_factor,
        } => Tokenizer::Bpe(Arc::new(BpeTokenizer::from_ranks(
            vocab_size,
            hash_factor,
            &read(RANKS_FILE)?,
        )?)),
    })
}

/// Without the `subword` feature a BPE tokenizer cannot be read.
#[cfg(not(feature = "subword"))]
fn read_subword(
    dir: &Path,
    _read: impl Fn(&str) -> Result<String, DataError>,
) -> Result<Tokenizer, DataError> {
    Err(DataError::BadTokenizer(format!(
        "{}: a subword tokenizer; quill-data was built without its subword feature",
        dir.join(TOKENIZER_FILE).display()
    )))
}

/// Turns tokens into text as they are generated: bytes of a character split across
/// tokens are held back until the character is complete, so a terminal never sees
/// broken UTF-8. Bytes that can never become UTF-8 come out as U+FFFD.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds `id`'s bytes; returns the text that is complete now (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, DataError> {
        self.pending.extend(tokenizer.decode_bytes(&[id])?);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return Ok(out);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).expect("valid"));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(out);
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// The held-back bytes of an unfinished character, as U+FFFD (empty if none).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for s in ["char", "gpt2", "bpe:512"] {
            assert_eq!(s.parse::<TokenizerSpec>().unwrap().to_string(), s);
        }
        for bad in ["bpe", "bpe:x", "word", ""] {
            let err = bad.parse::<TokenizerSpec>().unwrap_err().to_string();
            assert!(err.contains("use char, gpt2 or bpe:VOCAB_SIZE"), "{err}");
        }
    }

    #[test]
    #[cfg(feature = "subword")]
    fn stream_decoding_holds_back_split_characters() {
        let gpt2 = Tokenizer::gpt2();
        // An emoji is several byte tokens in GPT-2: the stream prints it only once whole.
        let text = "hi 🦀 ok";
        let ids = gpt2.encode(text).unwrap();
        assert!(ids.len() > 4);
        let mut decoder = StreamDecoder::default();
        let pieces: Vec<String> = ids
            .iter()
            .map(|&id| decoder.push(&gpt2, id).unwrap())
            .collect();
        assert!(pieces.iter().any(String::is_empty));
        assert_eq!(pieces.concat() + &decoder.finish(), text);
        // A lone continuation byte can never become text.
        let Tokenizer::Bpe(bpe) = &gpt2 else {
            unreachable!()
        };
        let lone = (0..256)
            .find(|&id| bpe.token_bytes(id) == Some(&[0x80][..]))
            .unwrap();
        let mut decoder = StreamDecoder::default();
        assert_eq!(decoder.push(&gpt2, lone).unwrap(), "\u{FFFD}");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    #[cfg(feature = "subword")]
    fn files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for tok in [
            Tokenizer::Char(CharTokenizer::from_text("abc\n").unwrap()),
            Tokenizer::gpt2(),
        ] {
            let sub = dir.path().join(tok.name());
            std::fs::create_dir(&sub).unwrap();
            for (name, bytes) in tok.files() {
                std::fs::write(sub.join(name), bytes).unwrap();
            }
            assert_eq!(Tokenizer::read(&sub).unwrap(), tok);
        }
    }

    #[test]
    #[cfg(feature = "subword")]
    fn start_tokens_are_newlines() {
        assert_eq!(Tokenizer::gpt2().start_token(), 198);
        let chars = Tokenizer::Char(CharTokenizer::from_text("a\nb").unwrap());
        assert_eq!(chars.start_token(), 0);
    }
}
