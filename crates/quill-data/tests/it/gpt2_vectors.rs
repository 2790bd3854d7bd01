//! GPT-2's tokenizer against OpenAI's tiktoken: `fixtures/gpt2-vectors.json` holds the
//! ids tiktoken 0.14.0's `gpt2` encoding gives (`encode_ordinary`) for tricky strings
//! and 400 seeded random ones, made by `scripts/gpt2_vectors.py`.

use quill_data::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    tiktoken: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("../fixtures/gpt2-vectors.json")).unwrap()
}

#[test]
fn gpt2_ids_equal_tiktokens() {
    let fixture = fixture();
    assert_eq!(fixture.tiktoken, "0.14.0");
    assert_eq!(fixture.vectors.len(), 429);
    let gpt2 = Tokenizer::gpt2();
    let mut wrong = Vec::new();
    for v in &fixture.vectors {
        if gpt2.encode(&v.text).unwrap() != v.ids {
            wrong.push(v.text.clone());
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} differ: {wrong:?}",
        wrong.len(),
        fixture.vectors.len()
    );
}

#[test]
fn gpt2_decodes_tiktokens_ids_back_to_the_text() {
    let gpt2 = Tokenizer::gpt2();
    for v in fixture().vectors {
        assert_eq!(gpt2.decode(&v.ids).unwrap(), v.text);
    }
}
