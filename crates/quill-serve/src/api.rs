//! The OpenAI completions API, as quill speaks it: the request read field by field
//! (every byte from the network is checked before use), the errors in OpenAI's shape,
//! and the response objects.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quill_model::{Penalties, SamplingOptions};
use serde_json::{Map, Value, json};

/// An error answer: `{"error": {"message", "type", "param", "code"}}`, as OpenAI's API
/// writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
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

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// What a completion request asks for, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// One or more prompts; each gets `n` completions.
    pub prompts: Vec<String>,
    pub max_tokens: usize,
    pub n: usize,
    pub stop: Vec<String>,
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
    let top_p = f.number("top_p")?;
    if let Some(p) = top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("top_p must be in (0, 1], got {p}"),
        ));
    }
    let top_k = f.integer("top_k")?;
    if top_k == Some(0) {
        return Err(ApiError::invalid(Some("top_k"), "top_k must be at least 1"));
    }
    let seed = match f.integer("seed")? {
        Some(seed) => seed,
        None => random_seed(),
    };
    let min_p = f.number("min_p")?;
    let penalties = Penalties {
        repetition: f.number("repetition_penalty")?.unwrap_or(1.0),
        frequency: f.number("frequency_penalty")?.unwrap_or(0.0),
        presence: f.number("presence_penalty")?.unwrap_or(0.0),
    };
    let probe = SamplingOptions {
        min_p,
        penalties,
        ..Default::default()
    };
    if let Err(err) = probe.validate() {
        let message = match err {
            quill_model::ModelError::Sampling(message) => message,
            other => other.to_string(),
        };
        // The message begins with the field's name.
        let param = [
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
        options: SamplingOptions {
            temperature,
            top_k: top_k.map(|k| k as usize),
            top_p,
            min_p,
            penalties,
            seed,
            kv_cache: true,
        },
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

    fn string(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Self::wrong(name, "a string"))
            })
            .transpose()
    }

    fn boolean(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::wrong(name, "true or false"))
            })
            .transpose()
    }

    fn integer(&self, name: &'static str) -> Result<Option<u64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::wrong(name, "an integer ≥ 0"))
            })
            .transpose()
    }

    fn number(&self, name: &'static str) -> Result<Option<f64>, ApiError> {
        self.get(name)
            .map(|v| v.as_f64().ok_or_else(|| Self::wrong(name, "a number")))
            .transpose()
    }
}

/// Why a completion ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop string was reached.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// Token counts of a response.
pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

/// One choice of a completion (or of a chunk of its stream).
pub fn choice(index: usize, text: &str, finish: Option<Finish>) -> Value {
    json!({
        "text": text,
        "index": index,
        "logprobs": null,
        "finish_reason": finish.map(Finish::as_str),
    })
}

/// A `text_completion` object.
pub fn completion(
    id: &str,
    created: u64,
    model: &str,
    choices: Vec<Value>,
    usage: Option<Value>,
) -> Value {
    let mut object = json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "system_fingerprint": null,
    });
    if let Some(usage) = usage {
        object["usage"] = usage;
    }
    object
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
            assert_eq!(err.body()["error"]["type"], "invalid_request_error");
        }
        let err = read(r#"{"model": "other", "prompt": "a"}"#).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (StatusCode::NOT_FOUND, Some("model_not_found"))
        );
    }
}
