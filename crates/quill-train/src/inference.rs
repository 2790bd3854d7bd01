//! Text in, text out: prompts, stop sequences and streaming on top of
//! [`quill_model::generate`].

use burn::tensor::backend::Backend;
use quill_data::{StreamDecoder, Tokenizer};
use quill_model::{LanguageModel, SamplingOptions, generate};

use crate::TrainError;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// Text to continue; empty starts from the newline token (or token 0 when the
    /// vocabulary has no newline).
    pub prompt: String,
    /// Tokens to generate per sample at most.
    pub max_new_tokens: usize,
    /// Samples, generated as one batch.
    pub num_samples: usize,
    /// Temperature, top-k, top-p, seed.
    pub options: SamplingOptions,
    /// Stop a sample once its continuation contains this text (which is kept).
    pub stop: Option<String>,
}

impl SampleRequest {
    /// One sample of `max_new_tokens` tokens after the newline token, at temperature 1
    /// (what training shows at each evaluation).
    pub fn from_newline(max_new_tokens: usize, seed: u64) -> Self {
        SampleRequest {
            prompt: String::new(),
            max_new_tokens,
            num_samples: 1,
            options: SamplingOptions {
                seed,
                ..Default::default()
            },
            stop: None,
        }
    }
}

/// Generates `request.num_samples` continuations of the prompt. `on_token(row, text)`
/// receives the new text of each still-running sample as it is generated: a character
/// that spans several tokens arrives once it is complete.
/// Returns the continuations (without the prompt), each cut after its stop text.
pub fn sample_texts<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    request: &SampleRequest,
    mut on_token: impl FnMut(usize, &str),
) -> Result<Vec<String>, TrainError> {
    if request.num_samples == 0 {
        return Err(TrainError::Config("num_samples must be at least 1".into()));
    }
    let prompt = match tokenizer.encode(&request.prompt)? {
        ids if ids.is_empty() => vec![tokenizer.start_token()],
        ids => ids,
    };
    let mut texts = vec![String::new(); request.num_samples];
    let mut done = vec![false; request.num_samples];
    let mut decoders = vec![StreamDecoder::default(); request.num_samples];
    generate(
        model,
        &vec![prompt; request.num_samples],
        request.max_new_tokens,
        &request.options,
        |next| {
            for (row, &id) in next.iter().enumerate() {
                if done[row] {
                    continue;
                }
                let piece = decoders[row]
                    .push(tokenizer, id)
                    .expect("the model only emits vocabulary ids");
                if piece.is_empty() {
                    continue;
                }
                texts[row].push_str(&piece);
                on_token(row, &piece);
                done[row] = request
                    .stop
                    .as_ref()
                    .is_some_and(|s| texts[row].ends_with(s.as_str()));
            }
            !done.iter().all(|&d| d)
        },
    )?;
    for (row, decoder) in decoders.iter_mut().enumerate() {
        let rest = decoder.finish();
        if !done[row] && !rest.is_empty() {
            texts[row].push_str(&rest);
            on_token(row, &rest);
        }
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;
    use quill_model::{BigramConfig, ModelConfig};

    fn setup() -> (LanguageModel<Flex>, Tokenizer) {
        let tokenizer = quill_data::CharTokenizer::from_text("\nabc ")
            .unwrap()
            .into();
        let config = ModelConfig::Bigram(BigramConfig {
            vocab_size: 5,
            block_size: 4,
            n_embd: 3,
        });
        (config.init(0, &Default::default()).unwrap(), tokenizer)
    }

    fn request(prompt: &str, stop: Option<&str>) -> SampleRequest {
        SampleRequest {
            prompt: prompt.into(),
            max_new_tokens: 30,
            num_samples: 3,
            options: SamplingOptions {
                seed: 4,
                ..Default::default()
            },
            stop: stop.map(str::to_string),
        }
    }

    #[test]
    fn streams_every_character_and_honours_the_stop_text() {
        let (model, tok) = setup();
        let mut streamed = vec![String::new(); 3];
        let texts = sample_texts(&model, &tok, &request("ab", None), |row, s| {
            streamed[row].push_str(s)
        })
        .unwrap();
        assert_eq!(texts, streamed);
        assert!(texts.iter().all(|t| t.chars().count() == 30));

        let stopped = sample_texts(&model, &tok, &request("ab", Some("c")), |_, _| {}).unwrap();
        for (full, cut) in texts.iter().zip(&stopped) {
            match full.find('c') {
                Some(i) => assert_eq!(cut, &full[..=i]),
                None => assert_eq!(cut, full),
            }
        }
    }

    #[test]
    fn empty_prompt_starts_from_newline_and_unknown_chars_are_errors() {
        let (model, tok) = setup();
        let empty = sample_texts(&model, &tok, &request("", None), |_, _| {}).unwrap();
        let newline = sample_texts(&model, &tok, &request("\n", None), |_, _| {}).unwrap();
        assert_eq!(empty, newline);
        let err = sample_texts(&model, &tok, &request("abz", None), |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "character 'z' at position 2 is not in the vocabulary"
        );
    }
}
