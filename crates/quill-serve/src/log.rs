//! The request log: one line per request on stderr — client, method, path, status,
//! tokens in and out, milliseconds — as llama-server and most HTTP servers print;
//! `--quiet` turns it off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::App;

/// The address a connection came from, put on each of its requests.
#[derive(Debug, Clone, Copy)]
pub struct Client(pub SocketAddr);

/// The tokens a completion read and wrote, put on its response for the log (`None`:
/// streamed, counted as they go).
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: usize,
    /// Generated tokens, when the whole response was built before it was sent.
    pub completion: Option<usize>,
}

/// Logs each request once its response starts:
/// `127.0.0.1:50412 POST /v1/completions 200 in 5 out 100 tokens 84 ms`.
pub async fn log_request(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.quiet {
        return next.run(request).await;
    }
    let start = Instant::now();
    let client =
        (request.extensions().get::<Client>()).map_or_else(|| "-".to_string(), |c| c.0.to_string());
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    let tokens = match response.extensions().get::<Tokens>() {
        Some(Tokens {
            prompt,
            completion: Some(out),
        }) => format!(" in {prompt} out {out} tokens"),
        Some(Tokens { prompt, .. }) => format!(" in {prompt} tokens, streamed"),
        None => String::new(),
    };
    eprintln!(
        "{client} {method} {path} {}{tokens} {:.0} ms",
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1e3
    );
    response
}
