//! The OpenAI completions API, as quill speaks it: the request read field by field
//! (every byte from the network is checked before use), the errors in OpenAI's shape,
//! and the response objects as typed structs (serialised only at the HTTP edge).

use axum::http::StatusCode;
use quill_model::{Penalties, SamplingOptions};
use serde::Serialize;
use serde_json::{Map, Value};

/// An error answer: `{"error": {"message", "type", "param", "code"}}`, as OpenAI's API
/// writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, and the way out.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, `server_error`).
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<&'static str>,
    /// OpenAI's error code (`invalid_api_key`, `server_overloaded`).
    pub code: Option<&'static str>,
}

/// [`ApiError`]'s body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorResponse<'a> {
    /// The error.
    pub error: ErrorDetail<'a>,
}

/// The fields of an [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail<'a> {
    /// [`ApiError::message`].
    pub message: &'a str,
    /// [`ApiError::kind`].
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// [`ApiError::param`].
    pub param: Option<&'a str>,
    /// [`ApiError::code`].
    pub code: Option<&'a str>,
}

impl ApiError {
    /// 400: the request is wrong; `param` names the field.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    /// Any other status.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }

    /// With OpenAI's error code.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The body.
    pub fn body(&self) -> ErrorResponse<'_> {
        ErrorResponse {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        }
    }

    /// 500: the model failed, or stopped.
    pub fn failed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// 503: the queue is full.
    pub fn busy() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is busy: its queue is full; retry shortly",
        )
        .code("server_overloaded")
    }
}

/// What a completion request asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// One or more prompts; each gets `n` completions.
    pub prompts: Vec<String>,
    /// Tokens to generate at most, per completion.
    pub max_tokens: usize,
    /// Completions per prompt.
    pub n: usize,
    /// Strings that end a completion (not included in its text).
    pub stop: Vec<String>,
    /// Server-sent events instead of one response.
    pub stream: bool,
    /// Usage in a last chunk of the stream (`stream_options.include_usage`).
    pub stream_usage: bool,
    /// The prompt in front of each completion's text.
    pub echo: bool,
    /// Temperature, top-k, top-p and seed (drawn at random when the request has none).
    pub options: SamplingOptions,
}

/// Limits a request must respect.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The served model's name.
    pub model: String,
    /// Other names a request may use for it (the checkpoint's path).
    pub aliases: Vec<String>,
    /// `max_tokens` at most.
    pub max_tokens: usize,
    /// Sequences in one request at most (prompts × n): the batch.
    pub max_rows: usize,
}

/// Prompts in one request at most, stop strings and their length.
const MAX_PROMPTS: usize = 64;
const MAX_STOPS: usize = 4;
const MAX_STOP_BYTES: usize = 256;

/// Reads a completion request from the bytes of its body.
pub fn completion_request(body: &[u8], limits: &Limits) -> Result<CompletionRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid(None, "the body must be a JSON object"));
    };
    let f = Fields(&fields);
    let model = f
        .string("model")?
        .ok_or_else(|| ApiError::invalid(Some("model"), "you must provide a model parameter"))?;
    if model != limits.model && !limits.aliases.contains(&model) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model '{model}' does not exist; this server serves '{}'",
                limits.model
            ),
        )
        .code("model_not_found"));
    }
    let prompts = match fields.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                Some("prompt"),
                "you must provide a prompt",
            ));
        }
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_PROMPTS => items
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid(
                    Some("prompt"),
                    "prompt must be a string or a list of strings",
                )
            })?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("prompt must hold 1 to {MAX_PROMPTS} strings"),
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid(
                Some("prompt"),
                "prompt must be a string or a list of strings",
            ));
        }
    };
    if prompts.iter().any(String::is_empty) {
        return Err(ApiError::invalid(Some("prompt"), "the prompt is empty"));
    }
    let max_tokens = f.integer("max_tokens")?.unwrap_or(16);
    if max_tokens == 0 || max_tokens as usize > limits.max_tokens {
        return Err(ApiError::invalid(
            Some("max_tokens"),
            format!(
                "max_tokens must be 1 to {} (this server's limit), got {max_tokens}",
                limits.max_tokens
            ),
        ));
    }
    let n = f.integer("n")?.unwrap_or(1);
    let rows = (n as usize).saturating_mul(prompts.len());
    if n == 0 || rows > limits.max_rows {
        return Err(ApiError::invalid(
            Some("n"),
            format!(
                "n must be at least 1, and n × prompts at most {} (the server's batch), got {n} × {}",
                limits.max_rows,
                prompts.len()
            ),
        ));
    }
    let stop = match fields.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid(Some("stop"), "stop must be a string or a list of strings")
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stop"),
                "stop must be a string or a list of strings",
            ));
        }
    };
    if stop.len() > MAX_STOPS || stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("stop takes up to {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"),
        ));
    }
    let stream = f.boolean("stream")?.unwrap_or(false);
    let stream_usage = match fields.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => Fields(o).boolean("include_usage")?.unwrap_or(false),
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stream_options"),
                "stream_options must be an object",
            ));
        }
    };
    let temperature = f.number("temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let options = SamplingOptions {
        temperature,
        top_k: f.integer("top_k")?.map(|k| k as usize),
        top_p: f.number("top_p")?,
        min_p: f.number("min_p")?,
        penalties: Penalties {
            repetition: f.number("repetition_penalty")?.unwrap_or(1.0),
            frequency: f.number("frequency_penalty")?.unwrap_or(0.0),
            presence: f.number("presence_penalty")?.unwrap_or(0.0),
        },
        seed: match f.integer("seed")? {
            Some(seed) => seed,
            None => random_seed(),
        },
        kv_cache: true,
    };
    if let Err(err) = options.validate() {
        let message = match err {
            quill_model::ModelError::Sampling(message) => message,
            other => other.to_string(),
        };
        // The message begins with the field's name.
        let param = [
            "top_k",
            "top_p",
            "min_p",
            "repetition_penalty",
            "frequency_penalty",
            "presence_penalty",
        ]
        .into_iter()
        .find(|name| message.starts_with(name));
        return Err(ApiError::invalid(param, message));
    }
    if f.integer("best_of")?.is_some_and(|b| b != n) {
        return Err(unsupported("best_of"));
    }
    if f.integer("logprobs")?.is_some() {
        return Err(unsupported("logprobs"));
    }
    if f.string("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(unsupported("suffix"));
    }
    if fields
        .get("logit_bias")
        .is_some_and(|b| !b.is_null() && b.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Err(unsupported("logit_bias"));
    }
    Ok(CompletionRequest {
        prompts,
        max_tokens: max_tokens as usize,
        n: n as usize,
        stop,
        stream,
        stream_usage,
        echo: f.boolean("echo")?.unwrap_or(false),
        options,
    })
}

fn unsupported(param: &'static str) -> ApiError {
    ApiError::invalid(
        Some(param),
        format!("{param} is not supported by quill serve"),
    )
}

/// A seed for a request that sets none (OpenAI's sampling is not repeatable without).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without the system's generator, the clock still varies from request to request.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos;
    }
    u64::from_le_bytes(bytes)
}

/// Typed reads of a request's fields: absent and `null` are `None`; a value of the
/// wrong type is a 400 naming the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &'static str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn wrong(name: &'static str, what: &str) -> ApiError {
        ApiError::invalid(Some(name), format!("{name} must be {what}"))
    }

    /// The field `name` read by `read`, or an error saying it must be `what`.
    fn typed<T>(
        &self,
        name: &'static str,
        what: &str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        (self.get(name))
            .map(|v| read(v).ok_or_else(|| Self::wrong(name, what)))
            .transpose()
    }

    fn string(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        self.typed(name, "a string", |v| v.as_str().map(str::to_string))
    }

    fn boolean(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        self.typed(name, "true or false", Value::as_bool)
    }

    fn integer(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.typed(name, "an integer ≥ 0", Value::as_u64)
    }

    fn number(&self, name: &'static str) -> Result<Option<f64>, ApiError> {
        self.typed(name, "a number", Value::as_f64)
    }
}

/// Why a completion ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    /// A stop string was reached.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens of the prompts.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

impl Usage {
    /// The usage of `prompt_tokens` read and `completion_tokens` generated.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// One choice of a completion (or of a chunk of its stream).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The text (in a chunk: the new piece).
    pub text: String,
    /// Which choice: prompt × `n` + completion.
    pub index: usize,
    /// Always null: quill does not return log-probabilities yet.
    pub logprobs: Option<()>,
    /// Why it ended; null while it goes on.
    pub finish_reason: Option<Finish>,
}

impl Choice {
    /// Choice `index` with `text`, ended for `finish` if it has.
    pub fn new(index: usize, text: impl Into<String>, finish: Option<Finish>) -> Self {
        Choice {
            text: text.into(),
            index,
            logprobs: None,
            finish_reason: finish,
        }
    }
}

/// A `text_completion` object: the whole response, or a chunk of its stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// `cmpl-…`, the same for every chunk of a stream.
    pub id: String,
    /// Always `text_completion`.
    pub object: &'static str,
    /// When the request was accepted (Unix seconds).
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices (in a chunk: those with news).
    pub choices: Vec<Choice>,
    /// Always null.
    pub system_fingerprint: Option<()>,
    /// Token counts: in the whole response, and in a stream's last chunk when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    /// Its name.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// When the server started (Unix seconds).
    pub created: u64,
    /// Always `quill`.
    pub owned_by: &'static str,
    /// The context length, in tokens.
    pub context_length: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The one model served.
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            aliases: Vec::new(),
            model: "m".into(),
            max_tokens: 100,
            max_rows: 4,
        }
    }

    fn read(body: &str) -> Result<CompletionRequest, ApiError> {
        completion_request(body.as_bytes(), &limits())
    }

    #[test]
    fn reads_every_field() {
        let r = read(
            r#"{"model": "m", "prompt": ["a", "b"], "max_tokens": 5, "n": 2, "stop": ["x", "y"],
                "stream": true, "stream_options": {"include_usage": true}, "echo": true,
                "temperature": 0.5, "top_p": 0.9, "top_k": 3, "seed": 7, "user": "ignored",
                "min_p": 0.05, "repetition_penalty": 1.2, "frequency_penalty": -0.5,
                "presence_penalty": 1.5}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            CompletionRequest {
                prompts: vec!["a".into(), "b".into()],
                max_tokens: 5,
                n: 2,
                stop: vec!["x".into(), "y".into()],
                stream: true,
                stream_usage: true,
                echo: true,
                options: SamplingOptions {
                    temperature: 0.5,
                    top_k: Some(3),
                    top_p: Some(0.9),
                    min_p: Some(0.05),
                    penalties: Penalties {
                        repetition: 1.2,
                        frequency: -0.5,
                        presence: 1.5,
                    },
                    seed: 7,
                    kv_cache: true,
                },
            }
        );
        let d = read(r#"{"model": "m", "prompt": "a", "seed": 1}"#).unwrap();
        assert_eq!(
            (d.max_tokens, d.n, d.options.temperature, d.stream),
            (16, 1, 1.0, false)
        );
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, param) in [
            (
                r#"{"model": "m", "prompt": "a", "max_tokens": "5"}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "max_tokens": 101}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "max_tokens": -1}"#,
                Some("max_tokens"),
            ),
            (r#"{"model": "m", "prompt": ""}"#, Some("prompt")),
            (r#"{"model": "m", "prompt": 3}"#, Some("prompt")),
            (r#"{"model": "m"}"#, Some("prompt")),
            (r#"{"prompt": "a"}"#, Some("model")),
            (r#"{"model": "m", "prompt": "a", "n": 5}"#, Some("n")),
            (
                r#"{"model": "m", "prompt": ["a", "b", "c"], "n": 2}"#,
                Some("n"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "temperature": 3}"#,
                Some("temperature"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "top_p": 0}"#,
                Some("top_p"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "top_k": 0}"#,
                Some("top_k"),
            ),
            (r#"{"model": "m", "prompt": "a", "stop": 1}"#, Some("stop")),
            (
                r#"{"model": "m", "prompt": "a", "stop": ["a","b","c","d","e"]}"#,
                Some("stop"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "stream": "yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "logprobs": 2}"#,
                Some("logprobs"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "presence_penalty": 2.5}"#,
                Some("presence_penalty"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "frequency_penalty": -3}"#,
                Some("frequency_penalty"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "repetition_penalty": 0}"#,
                Some("repetition_penalty"),
            ),
            (
                r#"{"model": "m", "prompt": "a", "min_p": 1.5}"#,
                Some("min_p"),
            ),
            (r#"{"model": "m", "prompt": "a""#, None),
            (r#"[1, 2]"#, None),
        ] {
            let err = read(body).unwrap_err();
            assert_eq!(
                (err.status, err.param),
                (StatusCode::BAD_REQUEST, param),
                "{body}: {err:?}"
            );
            assert_eq!(err.body().error.kind, "invalid_request_error");
        }
        let err = read(r#"{"model": "other", "prompt": "a"}"#).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::NOT_FOUND, Some("model_not_found"))
        );
    }
}
