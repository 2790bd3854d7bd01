//! `prepare`: streaming tokenization into token files, and reading them back.

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;
use quill_data::prepare::{DatasetMeta, PrepareOptions, prepare};
use quill_data::token_file::{TokenDtype, TokenFormat};
use quill_data::{BpeTokenizer, DataError, Dataset, TokenSource, Tokenizer, TokenizerSpec};

fn options(input: &Path, out: &Path, tokenizer: &str) -> PrepareOptions {
    PrepareOptions {
        input: input.to_path_buf(),
        extensions: vec!["txt".into()],
        tokenizer: tokenizer.parse().unwrap(),
        out: out.to_path_buf(),
        val_fraction: 0.1,
        format: TokenFormat::LlmC,
        lossy: false,
        shard_tokens: None,
    }
}

fn run(options: &PrepareOptions) -> Result<DatasetMeta, DataError> {
    prepare(options, None, |_, _, _| {})
}

fn all(tokens: &impl TokenSource) -> Vec<u32> {
    let mut out = Vec::new();
    tokens
        .read_window(0, tokens.token_count(), &mut out)
        .unwrap();
    out
}

/// About 3 MiB of varied text: several chunks, so chunking must not change the ids.
fn long_text() -> String {
    let words = [
        "thou", "art", "  the", "king's", "🦀", "日本", "\t", "1234", "don't", "ÉCU",
    ];
    let mut text = String::new();
    let mut x = 7u64;
    while text.len() < 3 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let w = words[(x >> 33) as usize % words.len()];
        text.push_str(w);
        text.push_str(match (x >> 40) % 11 {
            0 => "\n",
            1 => "\n\n",
            2 => ",\n  ",
            3 => "",
            _ => " ",
        });
    }
    text
}

#[test]
fn chunked_gpt2_tokens_equal_whole_text_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let text = long_text();
    let input = dir.path().join("big.txt");
    fs::write(&input, &text).unwrap();
    let meta = run(&options(&input, &dir.path().join("ds"), "gpt2")).unwrap();
    let gpt2 = Tokenizer::gpt2();
    // nanoGPT's split: the first 90% of the bytes (here all ASCII-aligned at a char
    // boundary, moved forward if needed), each part encoded on its own.
    let mut split = (0.9 * text.len() as f64) as usize;
    while !text.is_char_boundary(split) {
        split += 1;
    }
    let train = gpt2.encode(&text[..split]).unwrap();
    let val = gpt2.encode(&text[split..]).unwrap();
    let dataset = Dataset::open(&dir.path().join("ds")).unwrap();
    // (Not assert_eq!: a failure would print megabytes of ids.)
    let first_difference = |a: &[u32], b: &[u32]| a.iter().zip(b).position(|(x, y)| x != y);
    let got = all(&dataset.split.train);
    assert!(
        got == train,
        "train differs at {:?}",
        first_difference(&got, &train)
    );
    let got = all(&dataset.split.val);
    assert!(
        got == val,
        "val differs at {:?}",
        first_difference(&got, &val)
    );
    assert_eq!(
        (meta.train_tokens, meta.val_tokens),
        (train.len() as u64, val.len() as u64)
    );
    assert_eq!(meta.sha256, quill_data::corpus::sha256_hex(text.as_bytes()));
    assert_eq!((meta.tokenizer.as_str(), meta.vocab_size), ("gpt2", 50_257));
    assert_eq!(meta.dtype, TokenDtype::Uint16);
}

#[test]
fn a_directory_tree_is_read_in_order_with_end_of_text_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    fs::create_dir_all(corpus.join("sub")).unwrap();
    fs::write(corpus.join("b.txt"), "second file\n".repeat(20)).unwrap();
    fs::write(corpus.join("sub/a.txt"), "third one\n".repeat(20)).unwrap();
    fs::write(corpus.join("a.txt"), "first file\n".repeat(20)).unwrap();
    fs::write(corpus.join("skip.md"), "not read").unwrap();
    fs::write(corpus.join(".hidden.txt"), "not read").unwrap();
    let mut opts = options(&corpus, &dir.path().join("ds"), "gpt2");
    opts.val_fraction = 0.3;
    let meta = run(&opts).unwrap();
    assert_eq!(meta.files, 3);
    let dataset = Dataset::open(&opts.out).unwrap();
    let gpt2 = Tokenizer::gpt2();
    let ids = [all(&dataset.split.train), all(&dataset.split.val)].concat();
    let text = gpt2.decode(&ids).unwrap();
    let eot = "<|endoftext|>";
    assert_eq!(
        text,
        format!(
            "{}{eot}{}{eot}{}{eot}",
            "first file\n".repeat(20),
            "second file\n".repeat(20),
            "third one\n".repeat(20)
        )
    );
    // The md extension can be asked for.
    opts.extensions = vec!["md".into()];
    opts.out = dir.path().join("md");
    opts.val_fraction = 0.5;
    assert!(matches!(run(&opts), Err(DataError::TooSmall { .. })));
}

#[test]
fn char_datasets_match_the_in_memory_split() {
    let dir = tempfile::tempdir().unwrap();
    let text = "To be, or not to be: that is the question.\n".repeat(30);
    let input = dir.path().join("t.txt");
    fs::write(&input, &text).unwrap();
    let mut opts = options(&input, &dir.path().join("ds"), "char");
    opts.format = TokenFormat::NanoGpt;
    run(&opts).unwrap();
    let prepared = Dataset::open(&opts.out).unwrap();
    let memory = Dataset::new(&text, 0.1).unwrap();
    assert_eq!(prepared.tokenizer, memory.tokenizer);
    assert_eq!(all(&prepared.split.train), all(&memory.split.train));
    assert_eq!(all(&prepared.split.val), all(&memory.split.val));
}

#[test]
fn bad_corpora_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    fs::write(&bad, b"good text\nthen \xff\xfe bad bytes\n").unwrap();
    let mut opts = options(&bad, &dir.path().join("ds"), "gpt2");
    let err = run(&opts).unwrap_err().to_string();
    assert!(
        err.contains("bad.txt: not valid UTF-8 at byte offset 15 (--lossy"),
        "{err}"
    );
    opts.lossy = true;
    opts.val_fraction = 0.3;
    let meta = run(&opts).unwrap();
    assert_eq!(meta.replaced_invalid, 2);

    let empty = dir.path().join("empty.txt");
    fs::write(&empty, "").unwrap();
    let err = run(&options(&empty, &dir.path().join("e"), "char")).unwrap_err();
    assert!(matches!(err, DataError::Empty(_)), "{err}");
    let tiny = dir.path().join("tiny.txt");
    fs::write(&tiny, "abc").unwrap();
    let err = run(&options(&tiny, &dir.path().join("t"), "char")).unwrap_err();
    assert!(err.to_string().contains("is too small"), "{err}");
    assert!(!dir.path().join("t").exists());

    // A directory that is not a dataset is never replaced.
    let precious = dir.path().join("precious");
    fs::create_dir(&precious).unwrap();
    fs::write(precious.join("thesis.tex"), "keep me").unwrap();
    let err = run(&options(&bad, &precious, "char"))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "precious holds files quill did not write (thesis.tex); use an empty directory"
        ),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(precious.join("thesis.tex")).unwrap(),
        "keep me"
    );
    // Nor is one that merely holds a `meta.json`: its format tag must be quill's.
    let app = dir.path().join("myapp");
    fs::create_dir_all(app.join("src")).unwrap();
    fs::write(app.join("meta.json"), r#"{"format": "myapp-v2"}"#).unwrap();
    fs::write(app.join("src/main.rs"), "fn main() {}").unwrap();
    let err = run(&options(&bad, &app, "char")).unwrap_err().to_string();
    assert!(
        err.contains("myapp holds files quill did not write (meta.json, src)"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(app.join("src/main.rs")).unwrap(),
        "fn main() {}"
    );
}

#[test]
fn an_interrupted_prepare_leaves_nothing_and_stale_temporaries_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    fs::write(&input, "some text to tokenize\n".repeat(100)).unwrap();
    let opts = options(&input, &dir.path().join("ds"), "gpt2");
    let stop = AtomicBool::new(true);
    let err = prepare(&opts, Some(&stop), |_, _, _| {}).unwrap_err();
    assert!(matches!(err, DataError::Interrupted), "{err}");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(dir.path()), vec!["t.txt"]);
    // What a killed prepare (pid 999999 is not running) left is removed: it carries
    // the partial marker with the dataset's tag. A directory of the same shape that
    // does not is someone else's, and stays.
    fs::create_dir(dir.path().join(".ds.tmp-999999")).unwrap();
    fs::write(
        dir.path().join(".ds.tmp-999999/.quill-partial"),
        "quill-dataset-v1",
    )
    .unwrap();
    fs::create_dir(dir.path().join(".ds.tmp-999998")).unwrap();
    fs::write(dir.path().join(".ds.tmp-999998/notes.txt"), "mine").unwrap();
    run(&opts).unwrap();
    assert_eq!(names(dir.path()), vec![".ds.tmp-999998", "ds", "t.txt"]);
    assert_eq!(
        names(&opts.out),
        vec!["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    );
}

#[test]
fn corrupted_datasets_are_rejected_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    fs::write(&input, "some text to tokenize\n".repeat(100)).unwrap();
    let opts = options(&input, &dir.path().join("ds"), "char");
    run(&opts).unwrap();
    let train = opts.out.join("train.bin");
    let bytes = fs::read(&train).unwrap();
    fs::write(&train, &bytes[..bytes.len() - 4]).unwrap();
    let err = Dataset::open(&opts.out).unwrap_err().to_string();
    assert!(err.contains("train.bin: the header says"), "{err}");
    let err = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("quill data prepare"), "{err}");
}

fn trained_bpe() -> &'static BpeTokenizer {
    static BPE: std::sync::OnceLock<BpeTokenizer> = std::sync::OnceLock::new();
    BPE.get_or_init(|| {
        let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n";
        BpeTokenizer::train(std::iter::once(text.repeat(20)), 300).unwrap()
    })
}

#[test]
fn bpe_training_and_saving() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.txt");
    let text = "the cat sat on the mat; the cat ate the rat.\n".repeat(200);
    fs::write(&input, &text).unwrap();
    let opts = options(&input, &dir.path().join("ds"), "bpe:270");
    let meta = run(&opts).unwrap();
    assert_eq!((meta.tokenizer.as_str(), meta.vocab_size), ("bpe:270", 270));
    let dataset = Dataset::open(&opts.out).unwrap();
    let ids = [all(&dataset.split.train), all(&dataset.split.val)].concat();
    assert_eq!(dataset.tokenizer.decode(&ids).unwrap(), text);
    // 13 merges learnt: fewer than half as many tokens as bytes.
    assert!(ids.len() * 2 < text.len(), "{} tokens", ids.len());
    assert!(matches!(
        "bpe:100".parse::<TokenizerSpec>().map(|_| ()),
        Ok(())
    ));
    let err = run(&options(&input, &dir.path().join("x"), "bpe:100")).unwrap_err();
    assert!(err.to_string().contains("at least 258 tokens"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn bpe_round_trips_arbitrary_text(text in any::<String>()) {
        let bpe = trained_bpe();
        let ids = bpe.encode(&text);
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| bpe.token_bytes(id).unwrap().to_vec()).collect();
        prop_assert_eq!(String::from_utf8(bytes).unwrap(), text);
    }
}
