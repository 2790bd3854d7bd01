//! Every quill model GPT-2 can express leaves as a Hugging Face model with its
//! tokenizer: quill's side of `scripts/hf_export_fixture.py`. For characters, GPT-2's
//! BPE and a trained `bpe:512`, the `cpu` preset (`bias = false`) trains a few steps;
//! the export's `tokenizer.json` gives quill's ids on the validation text (the ids
//! `AutoTokenizer` gave, by their hash), and `quill sample --temperature 0` gives the
//! 100 tokens transformers' greedy `generate` gave, on logits within 1e-4 of its own.
use crate::common;

use std::fs;
use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use burn_flex::Flex;
use common::{quill, stdout, tiny_shakespeare};
use quill_train::Checkpoint;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn expectations() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-export.json");
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_sha256(ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The logits of `ids` under the checkpoint in `dir`, in float32 on the CPU.
fn logits(dir: &Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let checkpoint = Checkpoint::load(dir).unwrap();
    let device = Default::default();
    let model = checkpoint.model::<Flex>(&device).unwrap();
    let input = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, ids.len()]),
        &device,
    );
    let out = model.forward(input).unwrap();
    let [_, t, v] = out.dims();
    let values = out.into_data().to_vec::<f32>().unwrap();
    (0..t)
        .map(|p| values[p * v..(p + 1) * v].to_vec())
        .collect()
}

fn logsumexp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

#[test]
fn transformers_reads_every_tokenizer_and_samples_what_quill_samples() {
    let corpus = tiny_shakespeare();
    let expected = expectations();
    let text = fs::read(&corpus).unwrap();
    let val_text = std::str::from_utf8(&text[text.len() * 9 / 10..]).unwrap();
    let prompt = expected["prompt"].as_str().unwrap();
    let new_tokens = expected["max_new_tokens"].to_string();
    let block = expected["block_size"].to_string();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let corpus = corpus.to_str().unwrap();
    for (name, model) in expected["models"].as_object().unwrap() {
        let tokenizer = model["tokenizer"].as_str().unwrap();
        let steps = model["max_iters"].to_string();
        let (data, run, hf) = (
            format!("data/{name}"),
            format!("runs/{name}"),
            format!("hf/{name}"),
        );
        stdout(&quill(
            &[
                "data",
                "prepare",
                "--data",
                corpus,
                "--tokenizer",
                tokenizer,
                "--out",
                &data,
            ],
            cwd,
        ));
        #[rustfmt::skip]
        stdout(&quill(
            &[
                "train", "--preset", "cpu", "--data", &data, "--max-iters", &steps,
                "--block-size", &block, "--eval-interval", &steps, "--eval-iters", "2",
                "--final-eval-iters", "2", "--sample-tokens", "0", "--out", &run,
            ],
            cwd,
        ));
        let last = format!("{run}/last");
        stdout(&quill(
            &[
                "export",
                "--format",
                "hf",
                "--checkpoint",
                &last,
                "--out",
                &hf,
            ],
            cwd,
        ));
        for file in [
            "config.json",
            "model.safetensors",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            assert!(cwd.join(&hf).join(file).is_file(), "{name}: {file}");
        }

        // The exported tokenizer, as the `tokenizers` library reads it, gives quill's
        // ids, which are the ids transformers gave.
        let hf_tokenizer =
            tokenizers::Tokenizer::from_file(cwd.join(&hf).join("tokenizer.json")).unwrap();
        let ids = hf_tokenizer
            .encode(val_text, false)
            .unwrap()
            .get_ids()
            .to_vec();
        let checkpoint = Checkpoint::load(&cwd.join(&last)).unwrap();
        assert_eq!(
            ids,
            checkpoint.tokenizer.encode(val_text).unwrap(),
            "{name}"
        );
        assert_eq!(ids.len() as u64, model["val_tokens"].as_u64().unwrap());
        assert_eq!(ids_sha256(&ids), model["val_ids_sha256"].as_str().unwrap());
        assert_eq!(hf_tokenizer.decode(&ids, false).unwrap(), val_text);

        // quill's greedy continuation is transformers'.
        #[rustfmt::skip]
        let greedy = stdout(&quill(
            &[
                "sample", "--checkpoint", &last, "--prompt", prompt, "--temperature", "0",
                "--max-new-tokens", &new_tokens,
            ],
            cwd,
        ));
        let continuation = &greedy[prompt.len()..greedy.len() - 1];
        assert_eq!(
            continuation,
            model["greedy_text"].as_str().unwrap(),
            "{name}: greedy text"
        );

        // The logits on the prompt and the continuation.
        let all: Vec<u32> = [u32s(&model["prompt_ids"]), u32s(&model["greedy_ids"])].concat();
        assert_eq!(
            checkpoint.tokenizer.encode(prompt).unwrap(),
            u32s(&model["prompt_ids"])
        );
        let rows = logits(&cwd.join(&last), &all);
        let probe = u32s(&model["probe_ids"]);
        let mut worst: f64 = 0.0;
        for (k, position) in model["positions"].as_array().unwrap().iter().enumerate() {
            let row = &rows[position.as_u64().unwrap() as usize];
            let lse = model["logsumexp"][k].as_f64().unwrap();
            assert!((logsumexp(row) - lse).abs() < 1e-4, "{name}: logsumexp {k}");
            let argmax = (0..row.len())
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            assert_eq!(argmax as u64, model["argmax"][k].as_u64().unwrap());
            for (j, &id) in probe.iter().enumerate() {
                let want = model["logits"][k][j].as_f64().unwrap();
                let got = row[id as usize] as f64;
                worst = worst.max((got - want).abs());
                assert!(
                    (got - want).abs() < 1e-4,
                    "{name}: logit of {id} at {position}: {got} vs {want}"
                );
            }
        }
        eprintln!("{name}: largest logit difference from transformers {worst:.2e}");
    }
}
