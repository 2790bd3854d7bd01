//! The real corpus: its vocabulary and split sizes must be exactly the "Let's build GPT" notebook's.
//!
//! The corpus is looked for at `data/tinyshakespeare/input.txt` (where `quill data` and
//! CI put it), else at `../shared/data/tinyshakespeare.txt` beside the checkout. Its
//! absence fails the test: it is never skipped.

use std::path::PathBuf;

use quill_data::{CharTokenizer, Corpus, Split, TINY_SHAKESPEARE};

fn corpus_path() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        root.join(TINY_SHAKESPEARE.default_path),
        root.join("../shared/data/tinyshakespeare.txt"),
    ];
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| panic!("tiny Shakespeare not found at any of {candidates:?}"))
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
