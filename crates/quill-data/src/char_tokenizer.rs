//! The character-level tokenizer: one token per Unicode scalar value.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::DataError;

/// Maps each distinct character of a corpus to a token id.
///
/// The vocabulary is the sorted set of the corpus' characters (Unicode scalar values,
/// not bytes), so id `i` is the `i`-th smallest character: on tiny Shakespeare that is
/// the 65-character vocabulary `"\n !$&',-.3:;?ABC…xyz"`.
///
/// Serialised as JSON `{"vocab": "<the characters in id order>"}`, which is what a
/// checkpoint's `vocab.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

/// The on-disk form of a [`CharTokenizer`].
#[derive(Serialize, Deserialize)]
struct VocabFile {
    vocab: String,
}

impl TryFrom<VocabFile> for CharTokenizer {
    type Error = DataError;
    fn try_from(file: VocabFile) -> Result<Self, DataError> {
        let chars: Vec<char> = file.vocab.chars().collect();
        if chars.is_empty() {
            return Err(DataError::BadVocab("the vocabulary is empty".into()));
        }
        if chars.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DataError::BadVocab(
                "characters must be sorted and distinct".into(),
            ));
        }
        Ok(Self::from_sorted(chars))
    }
}

impl From<CharTokenizer> for VocabFile {
    fn from(tok: CharTokenizer) -> Self {
        VocabFile { vocab: tok.vocab() }
    }
}

impl CharTokenizer {
    /// Builds the vocabulary of `text`. An empty text has no vocabulary and is an error.
    pub fn from_text(text: &str) -> Result<Self, DataError> {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        if chars.is_empty() {
            return Err(DataError::BadVocab("the text is empty".into()));
        }
        Ok(Self::from_sorted(chars))
    }

    fn from_sorted(chars: Vec<char>) -> Self {
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        CharTokenizer { chars, ids }
    }

    /// Number of distinct characters.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The vocabulary as one string, in id order.
    pub fn vocab(&self) -> String {
        self.chars.iter().collect()
    }

    /// The id of `ch`, if it is in the vocabulary.
    pub fn id(&self, ch: char) -> Option<u32> {
        self.ids.get(&ch).copied()
    }

    /// The token generation starts from when there is no prompt: the newline
    /// character's id, or 0 when the vocabulary has no newline.
    pub fn start_token(&self) -> u32 {
        self.id('\n').unwrap_or(0)
    }

    /// Encodes `text`; a character outside the vocabulary is an error naming it and its
    /// position (in characters).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        text.chars()
            .enumerate()
            .map(|(position, ch)| self.id(ch).ok_or(DataError::UnknownChar { ch, position }))
            .collect()
    }

    /// Decodes ids back to text; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        ids.iter()
            .enumerate()
            .map(|(position, &id)| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .ok_or(DataError::UnknownToken {
                        id,
                        position,
                        vocab_size: self.vocab_size(),
                    })
            })
            .collect()
    }

    /// The vocabulary as JSON (the content of a checkpoint's `vocab.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a vocabulary always serialises")
    }

    /// Reads a vocabulary written by [`CharTokenizer::to_json`].
    pub fn from_json(json: &str) -> Result<Self, DataError> {
        serde_json::from_str(json).map_err(|e| DataError::BadVocab(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vocabulary_is_sorted_distinct_chars() {
        let tok = CharTokenizer::from_text("hello, world").unwrap();
        assert_eq!(tok.vocab(), " ,dehlorw");
        assert_eq!(tok.encode("hell").unwrap(), vec![4, 3, 5, 5]);
    }

    #[test]
    fn chars_are_unicode_scalars_not_bytes() {
        let tok = CharTokenizer::from_text("née—ü").unwrap();
        assert_eq!(tok.vocab_size(), 5);
        assert_eq!(tok.decode(&tok.encode("üé").unwrap()).unwrap(), "üé");
    }

    #[test]
    fn unknown_char_names_char_and_position() {
        let tok = CharTokenizer::from_text("abc").unwrap();
        let err = tok.encode("abxc").unwrap_err();
        assert!(matches!(
            err,
            DataError::UnknownChar {
                ch: 'x',
                position: 2
            }
        ));
        assert_eq!(
            err.to_string(),
            "character 'x' at position 2 is not in the vocabulary"
        );
    }

    #[test]
    fn unknown_id_is_an_error() {
        let tok = CharTokenizer::from_text("abc").unwrap();
        assert!(matches!(
            tok.decode(&[0, 3]),
            Err(DataError::UnknownToken {
                id: 3,
                position: 1,
                vocab_size: 3
            })
        ));
    }

    #[test]
    fn start_token_is_newline_or_zero() {
        // '\t' sorts before '\n', so the newline is id 1 here.
        assert_eq!(CharTokenizer::from_text("x\t\n").unwrap().start_token(), 1);
        assert_eq!(CharTokenizer::from_text("ab").unwrap().start_token(), 0);
    }

    #[test]
    fn empty_text_has_no_vocabulary() {
        assert!(CharTokenizer::from_text("").is_err());
    }

    #[test]
    fn json_round_trip_and_validation() {
        let tok = CharTokenizer::from_text("the quick brown fox\n").unwrap();
        let json = tok.to_json();
        assert_eq!(json, r#"{"vocab":"\n bcefhiknoqrtuwx"}"#);
        assert_eq!(CharTokenizer::from_json(&json).unwrap(), tok);
        assert!(CharTokenizer::from_json(r#"{"vocab":"ba"}"#).is_err());
        assert!(CharTokenizer::from_json(r#"{"vocab":""}"#).is_err());
        assert!(CharTokenizer::from_json("not json").is_err());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(text in "\\PC{1,200}") {
            let tok = CharTokenizer::from_text(&text).unwrap();
            let ids = tok.encode(&text).unwrap();
            prop_assert_eq!(ids.len(), text.chars().count());
            prop_assert!(ids.iter().all(|&i| (i as usize) < tok.vocab_size()));
            prop_assert_eq!(tok.decode(&ids).unwrap(), text);
        }
    }
}
