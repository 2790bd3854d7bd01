//! quill's tokenizers in Hugging Face's format, so that an exported model arrives in
//! transformers with its tokenizer (`AutoTokenizer.from_pretrained(dir)`):
//!
//! - `tokenizer.json`, the `tokenizers` library's file, which gives the same ids as
//!   quill:
//!   - byte-level BPE (GPT-2's and trained `bpe:N`): GPT-2's byte-level pre-tokenizer
//!     and decoder, the vocabulary in Hugging Face's byte-to-character spelling, and
//!     the merges derived from the ranks as transformers derives them from a tiktoken
//!     file (every split of a token into two tokens, ordered by the token's rank: BPE
//!     that merges the lowest-ranked pair first, tiktoken's rule). `<|endoftext|>` is
//!     a special token, so that text spelling it becomes its id (quill and tiktoken's
//!     `encode_ordinary` read it as text).
//!   - characters: one token per character (a split of every character, a word-level
//!     vocabulary), ids as quill's, decoded by concatenation. A character outside the
//!     vocabulary is an error, as in quill: the vocabulary names an unknown token
//!     (`<unk>`) that it does not hold, so the library refuses to encode it.
//! - `tokenizer_config.json` (`PreTrainedTokenizerFast`, the context length, no
//!   clean-up of spaces, the special tokens) and `special_tokens_map.json`.
//!
//! The files are built as JSON and then read and written back by the `tokenizers`
//! crate, so what is saved is that library's own serialisation of a tokenizer it
//! loaded.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::bpe::END_OF_TEXT;
use crate::{CharTokenizer, DataError, Tokenizer};

/// The files [`files`] writes.
pub const FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// The unknown token a character vocabulary names but does not hold.
const UNKNOWN: &str = "<unk>";

/// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` of
/// `tokenizer` for a model of `context` positions (see the module documentation).
pub fn files(
    tokenizer: &Tokenizer,
    context: usize,
) -> Result<Vec<(&'static str, Vec<u8>)>, DataError> {
    let (model_json, special) = match tokenizer {
        Tokenizer::Char(chars) => (char_json(chars), None),
        Tokenizer::Bpe(bpe) => (bpe_json(bpe), Some(END_OF_TEXT)),
    };
    // Loaded and saved by the library itself: what it writes is what it reads.
    let text = serde_json::to_string(&model_json).expect("a JSON value serialises");
    let loaded: tokenizers::Tokenizer = text
        .parse()
        .map_err(|e| DataError::BadTokenizer(format!("tokenizer.json: {e}")))?;
    let tokenizer_json = loaded
        .to_string(true)
        .map_err(|e| DataError::BadTokenizer(format!("tokenizer.json: {e}")))?;

    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        "clean_up_tokenization_spaces": false,
    });
    let mut map = Map::new();
    if let Some(special) = special {
        let id = tokenizer.end_of_text().expect("a BPE has <|endoftext|>");
        config["add_prefix_space"] = json!(false);
        let mut entry = added_token(id, special);
        entry.as_object_mut().expect("an object").remove("id");
        config["added_tokens_decoder"] = json!({ id.to_string(): entry });
        for key in ["bos_token", "eos_token", "unk_token"] {
            config[key] = json!(special);
            map.insert(key.to_string(), json!(special));
        }
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("a JSON value serialises");
    Ok(vec![
        (FILES[0], tokenizer_json.into_bytes()),
        (FILES[1], pretty(&config)),
        (FILES[2], pretty(&Value::Object(map))),
    ])
}

/// The entry of a special token in `added_tokens`, as GPT-2's files have it.
fn added_token(id: u32, content: &str) -> Value {
    json!({
        "id": id,
        "content": content,
        "single_word": false,
        "lstrip": false,
        "rstrip": false,
        "normalized": true,
        "special": true,
    })
}

/// GPT-2's byte-level processing, as a pre-tokenizer, a post-processor or a decoder.
fn byte_level() -> Value {
    json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true })
}

fn bpe_json(bpe: &crate::BpeTokenizer) -> Value {
    let chars = byte_level_spelling();
    let spell = |bytes: &[u8]| -> String { bytes.iter().map(|&b| chars[b as usize]).collect() };
    let tokens: Vec<&[u8]> = (0..bpe.end_of_text())
        .map(|id| {
            bpe.token_bytes(id)
                .expect("ids below <|endoftext|> are tokens")
        })
        .collect();
    let rank: HashMap<&[u8], usize> = tokens.iter().enumerate().map(|(r, &t)| (t, r)).collect();
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.insert(spell(token), json!(id));
    }
    vocab.insert(END_OF_TEXT.to_string(), json!(bpe.end_of_text()));
    // transformers' tiktoken conversion: every split of a token into two tokens, by the
    // token's rank, then by the ranks of the two halves.
    let mut merges = Vec::new();
    for (r, token) in tokens.iter().enumerate() {
        let mut splits: Vec<(usize, usize)> = (1..token.len())
            .filter_map(|i| Some((*rank.get(&token[..i])?, *rank.get(&token[i..])?)))
            .collect();
        splits.sort();
        merges.extend(splits.into_iter().map(|(left, right)| (r, left, right)));
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(_, left, right)| json!([spell(tokens[left]), spell(tokens[right])]))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added_token(bpe.end_of_text(), END_OF_TEXT)],
        "normalizer": null,
        "pre_tokenizer": byte_level(),
        "post_processor": byte_level(),
        "decoder": byte_level(),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": false,
            "vocab": vocab,
            "merges": merges,
        },
    })
}

fn char_json(chars: &CharTokenizer) -> Value {
    let mut vocab = Map::new();
    for (id, c) in chars.vocab().chars().enumerate() {
        vocab.insert(c.to_string(), json!(id));
    }
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        // Every character its own piece (`[\s\S]`: any character, newlines included).
        "pre_tokenizer": {
            "type": "Split",
            "pattern": { "Regex": "[\\s\\S]" },
            "behavior": "Isolated",
            "invert": false,
        },
        "post_processor": null,
        "decoder": { "type": "Fuse" },
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": UNKNOWN },
    })
}

/// GPT-2's byte-to-character table: the printable character Hugging Face's byte-level
/// BPE writes for each byte (printable bytes stand for themselves, the others for
/// 256, 257, … in byte order).
pub(crate) fn byte_level_spelling() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    std::array::from_fn(|b| {
        let b = b as u32;
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        char::from_u32(c).expect("a valid code point")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(tokenizer: &Tokenizer) -> tokenizers::Tokenizer {
        let files = files(tokenizer, 64).unwrap();
        String::from_utf8(files[0].1.clone())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn ids(hf: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
        hf.encode(text, false).unwrap().get_ids().to_vec()
    }

    #[test]
    fn gpt2s_ids_and_text_survive() {
        let gpt2 = Tokenizer::gpt2();
        let hf = hf(&gpt2);
        for text in [
            "Hello world",
            "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
            "  two  spaces, ünïcödé and 12345 numbers's!",
        ] {
            let quill = gpt2.encode(text).unwrap();
            assert_eq!(ids(&hf, text), quill, "{text:?}");
            assert_eq!(hf.decode(&quill, false).unwrap(), text);
        }
        assert_eq!(ids(&hf, "Hello world"), [15496, 995]);
        assert_eq!(ids(&hf, END_OF_TEXT), [50_256]);
    }

    #[test]
    fn characters_keep_their_ids_and_unknown_ones_are_errors() {
        let chars: Tokenizer = CharTokenizer::from_text("\nab c!").unwrap().into();
        let hf = hf(&chars);
        let text = "ab c\n!!a";
        assert_eq!(ids(&hf, text), chars.encode(text).unwrap());
        assert_eq!(
            hf.decode(&chars.encode(text).unwrap(), false).unwrap(),
            text
        );
        assert!(hf.encode("abz", false).is_err());
        let files = files(&chars, 64).unwrap();
        assert_eq!(files[2].1, b"{}");
    }

    #[test]
    fn the_spelling_is_gpt2s() {
        let chars = byte_level_spelling();
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'!' as usize], '!');
    }
}
