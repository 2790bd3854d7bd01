//! The real corpus: its vocabulary and split sizes must be exactly the "Let's build GPT" notebook's.
//!
//! The corpus is put in place at `data/tinyshakespeare/input.txt` as `quill` does when
//! it is missing ([`quill_data::corpus::tiny_shakespeare`]; from `$QUILL_CORPUS`, a
//! local copy, when set). Its absence fails the test,
//! with one line saying how to put it in place: it is never skipped.

use std::path::PathBuf;

use quill_data::{CharTokenizer, Corpus, Split, TINY_SHAKESPEARE};

fn corpus_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let copy = std::env::var_os("QUILL_CORPUS").map(PathBuf::from);
    quill_data::corpus::tiny_shakespeare(&root, copy.as_deref())
        .unwrap_or_else(|e| panic!("{e} (or set QUILL_CORPUS to a copy of it)"))
}

#[test]
fn vocabulary_and_split_match_the_seed() {
    let corpus = Corpus::read_verified(&TINY_SHAKESPEARE, &corpus_path()).unwrap();
    assert_eq!(corpus.text.len(), 1_115_394);
    assert_eq!(corpus.text.chars().count(), 1_115_394);
    assert!(
        corpus
            .text
            .starts_with("First Citizen:\nBefore we proceed any further")
    );

    let tok = CharTokenizer::from_text(&corpus.text).unwrap();
    assert_eq!(tok.vocab_size(), 65);
    assert_eq!(
        tok.vocab(),
        "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    );
    assert_eq!(
        tok.encode("hii there").unwrap(),
        [46, 47, 47, 1, 58, 46, 43, 56, 43]
    );

    let split = Split::new(tok.encode(&corpus.text).unwrap(), 0.1).unwrap();
    assert_eq!(split.train.len(), 1_003_854);
    assert_eq!(split.val.len(), 111_540);
}

/// The top-level `data/` directory is part of the repository: downloads land under it,
/// git ignores everything there but its README, and the README documents the formats
/// quill reads and the default corpus.
#[test]
fn the_data_directory_is_documented_and_holds_the_default_corpus() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("data/README.md")).expect("data/README.md");
    let inside = TINY_SHAKESPEARE
        .default_path
        .strip_prefix("data/")
        .expect("the default corpus lives under data/");
    assert!(readme.contains(inside), "{inside}");
    assert!(readme.contains(TINY_SHAKESPEARE.sha256));
    for format in ["UTF-8 text file", "*.txt", "Adding a corpus"] {
        assert!(readme.contains(format), "{format}");
    }
    let gitignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    let lines: Vec<&str> = gitignore.lines().collect();
    assert!(lines.contains(&"/data/*") && lines.contains(&"!/data/README.md"));
}

/// `quill data prepare --tokenizer gpt2 --format nanogpt` writes the very files
/// nanoGPT's `data/shakespeare/prepare.py` writes (their sha256, computed with tiktoken
/// by `scripts/gpt2_vectors.py`, is in `fixtures/gpt2-vectors.json`).
#[test]
fn gpt2_shards_are_nanogpts_data_shakespeare() {
    use quill_data::prepare::{PrepareOptions, prepare};
    use quill_data::token_file::TokenFormat;

    #[derive(serde::Deserialize)]
    struct Fixture {
        shakespeare: Expected,
    }
    #[derive(serde::Deserialize)]
    struct Expected {
        train_tokens: u64,
        val_tokens: u64,
        train_bin_sha256: String,
        val_bin_sha256: String,
    }
    let expected: Fixture =
        serde_json::from_str(include_str!("../fixtures/gpt2-vectors.json")).unwrap();
    let expected = expected.shakespeare;
    let dir = tempfile::tempdir().unwrap();
    let mut options = PrepareOptions {
        input: corpus_path(),
        extensions: vec!["txt".into()],
        tokenizer: quill_data::TokenizerSpec::Gpt2,
        out: dir.path().join("nanogpt"),
        val_fraction: 0.1,
        format: TokenFormat::NanoGpt,
        lossy: false,
        shard_tokens: None,
    };
    let meta = prepare(&options, None, |_, _, _| {}).unwrap();
    assert_eq!(
        (meta.train_tokens, meta.val_tokens),
        (expected.train_tokens, expected.val_tokens)
    );
    assert_eq!((meta.train_tokens, meta.val_tokens), (301_966, 36_059));
    let sha = |name: &str| {
        quill_data::corpus::sha256_hex(&std::fs::read(options.out.join(name)).unwrap())
    };
    assert_eq!(sha("train.bin"), expected.train_bin_sha256);
    assert_eq!(sha("val.bin"), expected.val_bin_sha256);
    assert_eq!(meta.sha256, TINY_SHAKESPEARE.sha256);

    // The llm.c layout holds the same tokens after its 1 KiB header.
    options.format = TokenFormat::LlmC;
    options.out = dir.path().join("llmc");
    prepare(&options, None, |_, _, _| {}).unwrap();
    let bytes = std::fs::read(options.out.join("train.bin")).unwrap();
    assert_eq!(
        quill_data::corpus::sha256_hex(&bytes[1024..]),
        expected.train_bin_sha256
    );
}
