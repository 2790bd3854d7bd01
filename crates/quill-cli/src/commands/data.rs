//! `quill data`: what the "Let's build GPT" notebook prints about its corpus.

use anyhow::Result;

use crate::cli::DataArgs;

pub fn run(args: DataArgs) -> Result<()> {
    let (corpus, dataset) = super::load_dataset(&args.source, None, args.val_fraction)?;
    let n_chars = corpus.text.chars().count();
    let vocab = dataset.tokenizer.vocab();
    let (train_tokens, val_tokens) = (dataset.split.train.len(), dataset.split.val.len());
    let report = serde_json::json!({
        "n_chars": n_chars,
        "vocab": vocab,
        "vocab_size": dataset.tokenizer.vocab_size(),
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
    });
    super::print_report(args.json, &report, |_| {
        println!("length of dataset in characters: {n_chars}");
        println!(
            "first 100 characters:\n{}",
            corpus.text.chars().take(100).collect::<String>()
        );
        println!("vocabulary: {vocab}");
        println!("vocab_size: {}", dataset.tokenizer.vocab_size());
        println!("train tokens: {train_tokens}, val tokens: {val_tokens}");
    })
}
