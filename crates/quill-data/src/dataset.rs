//! A tokenized corpus: the vocabulary and the train/val split.

use crate::{CharTokenizer, DataError, Split};

/// A tokenized corpus: the vocabulary and the train/val split.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The vocabulary.
    pub tokenizer: CharTokenizer,
    /// Token ids, split.
    pub split: Split,
}

impl Dataset {
    /// Builds the vocabulary of `text` and splits it.
    pub fn new(text: &str, val_fraction: f64) -> Result<Dataset, DataError> {
        let tokenizer = CharTokenizer::from_text(text)?;
        Dataset::with_tokenizer(text, tokenizer, val_fraction)
    }

    /// Tokenizes `text` with a checkpoint's vocabulary, which must equal the text's own.
    pub fn with_tokenizer(
        text: &str,
        tokenizer: CharTokenizer,
        val_fraction: f64,
    ) -> Result<Dataset, DataError> {
        let own = CharTokenizer::from_text(text)?;
        if own != tokenizer {
            return Err(DataError::VocabMismatch {
                data: own.vocab_size(),
                checkpoint: tokenizer.vocab_size(),
            });
        }
        let split = Split::new(tokenizer.encode(text)?, val_fraction)?;
        Ok(Dataset { tokenizer, split })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_vocabulary_must_be_the_texts_own() {
        let text = "abcabcabcabc";
        let dataset = Dataset::new(text, 0.25).unwrap();
        assert_eq!((dataset.split.train.len(), dataset.split.val.len()), (9, 3));
        let other = CharTokenizer::from_text("abcd").unwrap();
        let err = Dataset::with_tokenizer(text, other, 0.25).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the data's vocabulary (3 characters) differs from the checkpoint's (4 characters)"
        );
    }
}
