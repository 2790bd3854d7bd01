//! `POST /tokenize` and `POST /detokenize`, as llama-server has them: text to the
//! model's token ids (and, with `with_pieces`, each token's text), and ids to text.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::http::App;

/// `{"content": TEXT, "with_pieces": bool}` → `{"tokens": [id, …]}`, or with pieces
/// `{"tokens": [{"id": id, "piece": TEXT}, …]}`. A piece that is not whole UTF-8 (a
/// part of a character's bytes) is given as its bytes, `{"id": id, "piece": [b, …]}`,
/// as llama-server gives it.
pub async fn tokenize(
    State(app): State<Arc<App>>,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let fields = object(body).await?;
    let content = match fields.get("content") {
        Some(Value::String(text)) => text,
        _ => {
            return Err(ApiError::invalid(
                Some("content"),
                "content must be a string",
            ));
        }
    };
    let pieces = match fields.get("with_pieces") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("with_pieces"),
                "with_pieces must be true or false",
            ));
        }
    };
    let ids = (app.completions.tokenizer.encode(content))
        .map_err(|e| ApiError::invalid(Some("content"), e.to_string()))?;
    let tokens: Vec<Value> = match pieces {
        false => ids.iter().map(|&id| json!(id)).collect(),
        true => ids
            .iter()
            .map(|&id| {
                let bytes = app
                    .completions
                    .tokenizer
                    .decode_bytes(&[id])
                    .unwrap_or_default();
                let piece = match String::from_utf8(bytes) {
                    Ok(text) => json!(text),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect(),
    };
    Ok(axum::Json(json!({ "tokens": tokens })))
}

/// `{"tokens": [id, …]}` → `{"content": TEXT}`; an id outside the vocabulary is a 400
/// naming it.
pub async fn detokenize(
    State(app): State<Arc<App>>,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    let fields = object(body).await?;
    let Some(Value::Array(values)) = fields.get("tokens") else {
        return Err(ApiError::invalid(
            Some("tokens"),
            "tokens must be a list of token ids",
        ));
    };
    let ids = values
        .iter()
        .map(|v| v.as_u64().and_then(|id| u32::try_from(id).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| ApiError::invalid(Some("tokens"), "tokens must be a list of token ids"))?;
    let content = (app.completions.tokenizer.decode(&ids))
        .map_err(|e| ApiError::invalid(Some("tokens"), e.to_string()))?;
    Ok(axum::Json(json!({ "content": content })))
}

/// The body as a JSON object, within the server's body limit.
async fn object(body: Body) -> Result<serde_json::Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, crate::http::MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!(
                    "the request body is larger than {} bytes",
                    crate::http::MAX_BODY_BYTES
                ),
            )
        })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::invalid(None, "the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(
            None,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}
