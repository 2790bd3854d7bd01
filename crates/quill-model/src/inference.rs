//! Text in, text out: prompts, stop sequences and streaming on top of
//! [`crate::generate`], for `quill sample`, `quill serve` and the samples a training run
//! shows.

use std::time::{Duration, Instant};

use crate::{LanguageModel, ModelError, SamplingOptions, generate};
use burn::tensor::backend::Backend;
use quill_data::{StreamDecoder, Tokenizer};

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
    /// Penalties, temperature, top-k, top-p, min-p, seed.
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
    on_token: impl FnMut(usize, &str),
) -> Result<Vec<String>, ModelError> {
    Ok(sample(model, tokenizer, request, on_token)?.texts)
}

/// What [`sample`] gives: the continuations and the time they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// The continuations, as [`sample_texts`] returns them.
    pub texts: Vec<String>,
    /// Where the time went.
    pub timings: SampleTimings,
}

/// The two phases of generation, as llama.cpp reports them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SampleTimings {
    /// Prompt tokens over all samples (the prompt's pass reads each once).
    pub prompt_tokens: usize,
    /// The prompt's pass, which also gives every sample its first new token.
    pub prompt: Duration,
    /// Tokens generated after the first, over all samples.
    pub decoded_tokens: usize,
    /// The steps that generated them.
    pub decoding: Duration,
}

/// [`sample_texts`], also timing the prompt's pass and the decoding steps.
pub fn sample<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    request: &SampleRequest,
    mut on_token: impl FnMut(usize, &str),
) -> Result<Samples, ModelError> {
    if request.num_samples == 0 {
        return Err(ModelError::Sampling(
            "num_samples must be at least 1".into(),
        ));
    }
    let prompt = match tokenizer.encode(&request.prompt)? {
        ids if ids.is_empty() => vec![tokenizer.start_token()],
        ids => ids,
    };
    let mut texts = vec![String::new(); request.num_samples];
    let mut done = vec![false; request.num_samples];
    let mut decoders = vec![StreamDecoder::default(); request.num_samples];
    let mut timings = SampleTimings {
        prompt_tokens: prompt.len() * request.num_samples,
        ..Default::default()
    };
    let (start, mut prompt_done) = (Instant::now(), false);
    generate(
        model,
        &vec![prompt; request.num_samples],
        request.max_new_tokens,
        &request.options,
        |next| {
            match prompt_done {
                false => (timings.prompt, prompt_done) = (start.elapsed(), true),
                true => {
                    timings.decoding = start.elapsed() - timings.prompt;
                    timings.decoded_tokens += next.len();
                }
            }
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
    Ok(Samples { texts, timings })
}

/// The text of one generated sequence as an OpenAI-style completion returns it: whole
/// characters, cut before the first occurrence of any stop string (which is not part
/// of the text), and streamed without ever showing text that a stop string could
/// still remove (a suffix that begins one is held back until it cannot).
#[derive(Debug, Clone, Default)]
pub struct StopText {
    decoder: StreamDecoder,
    text: String,
    /// Bytes of `text` handed out so far.
    shown: usize,
    stops: Vec<String>,
    stopped: bool,
}

impl StopText {
    /// Text that ends at the first of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        StopText {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Default::default()
        }
    }

    /// Adds token `id`; returns the text that can be shown now (often empty: an
    /// incomplete character, a possible start of a stop string, or a stop reached).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, ModelError> {
        if self.stopped {
            return Ok(String::new());
        }
        let piece = self.decoder.push(tokenizer, id)?;
        self.text.push_str(&piece);
        Ok(self.release(false))
    }

    /// Ends the text (no more tokens): what was held back and is not a stop.
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let rest = self.decoder.finish();
        self.text.push_str(&rest);
        self.release(true)
    }

    /// Whether a stop string was reached.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The text so far (all of it once stopped or finished).
    pub fn text(&self) -> &str {
        &self.text[..self.shown]
    }

    /// Cuts at the first stop string, or holds back the longest suffix that begins
    /// one (none when `at_end`); returns what becomes visible.
    fn release(&mut self, at_end: bool) -> String {
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min();
        let visible = match first_stop {
            Some(at) => {
                self.stopped = true;
                self.text.truncate(at);
                at
            }
            None if at_end => self.text.len(),
            None => (self.shown..self.text.len())
                .filter(|&i| self.text.is_char_boundary(i))
                .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.text[i..])))
                .unwrap_or(self.text.len()),
        };
        let out = self.text[self.shown..visible.max(self.shown)].to_string();
        self.shown = visible.max(self.shown);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BigramConfig, ModelConfig};
    use burn_flex::Flex;

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
    fn stop_text_cuts_before_the_stop_and_holds_back_what_may_begin_one() {
        let tok: Tokenizer = quill_data::CharTokenizer::from_text("\nabc ")
            .unwrap()
            .into();
        let id = |c: char| tok.encode(&c.to_string()).unwrap()[0];
        let stops = ["ca".to_string(), "bb".to_string()];
        let mut text = StopText::new(&stops);
        let shown: Vec<String> = "abcbcab"
            .chars()
            .map(|c| text.push(&tok, id(c)).unwrap())
            .collect();
        // "c" and "b" wait until the next character rules "ca" / "bb" out; "ca" stops.
        assert_eq!(shown, ["a", "", "b", "c", "b", "", ""]);
        assert!(text.stopped());
        assert_eq!(text.text(), "abcb");
        assert_eq!(text.finish(), "");

        let mut text = StopText::new(&stops);
        let shown: String = "acab"
            .chars()
            .map(|c| text.push(&tok, id(c)).unwrap())
            .collect();
        assert_eq!((shown.as_str(), text.stopped()), ("a", true));

        let mut text = StopText::new(&stops);
        assert_eq!(
            text.push(&tok, id('a')).unwrap() + &text.push(&tok, id('c')).unwrap(),
            "a"
        );
        assert_eq!(text.finish(), "c", "at the end nothing is held back");
        assert_eq!((text.text(), text.stopped()), ("ac", false));
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
