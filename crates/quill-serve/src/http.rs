//! The HTTP edge: axum's router on hyper and tokio, its routes and their JSON, the API
//! key, the playground page, the connection limits, and shutdown (Ctrl-C or SIGTERM:
//! stop accepting, finish what was accepted within the drain timeout; a second signal
//! exits at once). The completion logic it calls is [`crate::completion`]'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::api::{self, ApiError, Limits, ModelCard, ModelList};
use crate::completion::{CompletionStream, Completions, StreamItem};
use crate::{log, tokens};

/// Request bodies larger than this are refused (413).
pub(crate) const MAX_BODY_BYTES: usize = 1 << 20;

/// A connection that has not sent a whole request header this long after it opened
/// (or after its last response) is closed.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The playground, served at `/`: one page, no external resources.
const PLAYGROUND: &str = include_str!("playground.html");

/// The most connections the server keeps: `wanted`, within what the process may open
/// (its soft file limit, raised to the hard one first, less a margin for the model's
/// own files).
pub fn connection_limit(wanted: usize) -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write the one struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                if limit.rlim_cur < limit.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: limit.rlim_max,
                        rlim_max: limit.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        limit = raised;
                    }
                }
                let room = (limit.rlim_cur as usize).saturating_sub(64).max(1);
                if room < wanted {
                    eprintln!(
                        "note: this process may open {} files: at most {room} connections (--max-connections {wanted})",
                        limit.rlim_cur
                    );
                }
                return wanted.min(room);
            }
        }
    }
    wanted
}

/// What the handlers share.
pub(crate) struct App {
    pub(crate) completions: Completions,
    pub(crate) limits: Limits,
    pub(crate) api_key: Option<String>,
    pub(crate) block_size: usize,
    pub(crate) created: u64,
    /// The host names a request's `Host` may carry when the server has no API key:
    /// the loopback names and the bound address.
    pub(crate) hosts: Vec<String>,
    /// No request log (`--quiet`).
    pub(crate) quiet: bool,
}

/// The host names (without port) of a server bound to `address`.
pub(crate) fn loopback_hosts(address: SocketAddr) -> Vec<String> {
    let bound = match address.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "[::1]".into(),
        bound,
    ]
}

/// The host name of a `Host` header: without its port.
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        // `[::1]:8000`, `localhost:8000`; a bare `[::1]` keeps its colons.
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

/// What bounds the HTTP server's connections and its shutdown.
pub(crate) struct ServerLimits {
    pub(crate) connections: usize,
    pub(crate) drain: std::time::Duration,
}

/// Runs the HTTP server until Ctrl-C or SIGTERM, then until every accepted request has
/// been answered, `limits.drain` at most, or a second signal. Dropping `app`
/// afterwards closes the queue, which ends the engine.
pub(crate) fn serve(
    app: Arc<App>,
    listener: std::net::TcpListener,
    limits: ServerLimits,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let router = router(app);
        let open = Arc::new(Semaphore::new(limits.connections));
        let (closing, closed) = tokio::sync::watch::channel(false);
        let mut stop = std::pin::pin!(shutdown_signal());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors (or a connection reset while queued):
                    // wait a moment rather than spin.
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            // Past the limit a connection is closed at once.
            let Ok(place) = open.clone().try_acquire_owned() else {
                continue;
            };
            let router = router.clone().layer(axum::Extension(log::Client(peer)));
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut closed = closed.clone();
            tokio::spawn(async move {
                let _place = place;
                let io = hyper_util::rt::TokioIo::new(stream);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let connection = builder.serve_connection(io, service);
                let mut connection = std::pin::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => return,
                    _ = closed.wait_for(|closing| *closing) => {}
                }
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            });
        }
        drop(listener);
        let _ = closing.send(true);
        let all = u32::try_from(limits.connections).unwrap_or(u32::MAX);
        tokio::select! {
            _ = open.acquire_many(all) => {
                eprintln!("quill serve: every request answered, stopping");
            }
            _ = tokio::time::sleep(limits.drain) => {
                let left = limits.connections - open.available_permits();
                eprintln!(
                    "quill serve: {left} connections still open after {} s (--drain-timeout); stopping",
                    limits.drain.as_secs()
                );
            }
            _ = shutdown_signal() => {
                eprintln!("quill serve: a second signal: stopping now");
                std::process::exit(130);
            }
        }
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    eprintln!("quill serve: shutting down: no new connections; finishing the requests in progress");
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .layer(middleware::from_fn_with_state(app.clone(), authorize));
    let guard = middleware::from_fn_with_state(app.clone(), from_a_web_page);
    Router::new()
        .route("/", get(playground))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .merge(api)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "unknown path: quill serve answers /v1/models, /v1/completions, /tokenize, /detokenize, /health and /",
            )
        })
        .layer(guard)
        .layer(middleware::from_fn_with_state(app.clone(), log::log_request))
        .with_state(app)
}

/// Without an API key, refuses what a web page in the user's browser could send: a
/// request addressed to another name (DNS rebinding: `Host` is the attacker's domain)
/// or a POST whose body is not JSON (a form or `fetch` without a preflight).
async fn from_a_web_page(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if app.api_key.is_some() {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = host_name(host);
    if !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            format!(
                "Host {host:?} is not this server's: without an API key, quill serve answers only requests to localhost, 127.0.0.1 or [::1]"
            ),
        )
        .into_response();
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if request.method() == axum::http::Method::POST && !json {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "send the request body as JSON, with 'Content-Type: application/json'",
        )
        .into_response();
    }
    next.run(request).await
}

/// With an API key, every request under /v1 must carry `Authorization: Bearer KEY`.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| same_bytes(given.as_bytes(), key.as_bytes())) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "a valid API key is required: send 'Authorization: Bearer KEY'",
            )
            .code("invalid_api_key")
            .into_response();
        }
    }
    next.run(request).await
}

/// Equality that takes as long wherever the first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn playground(State(app): State<Arc<App>>) -> Html<String> {
    let escaped: String = app
        .limits
        .model
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect();
    let max_tokens = app.limits.max_tokens.to_string();
    let key = match app.api_key.is_some() {
        true => "required",
        false => "none",
    };
    Html(fill(
        PLAYGROUND,
        &[
            ("{{MODEL}}", &escaped),
            ("{{MAX_TOKENS}}", &max_tokens),
            ("{{KEY}}", key),
        ],
    ))
}

/// `template` with each placeholder replaced, in one pass over the template: a value
/// that holds a placeholder's name is never filled in again.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match values.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                out.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                out.push_str("{{");
                rest = &rest[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

async fn models(State(app): State<Arc<App>>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: app.limits.model.clone(),
            object: "model",
            created: app.created,
            owned_by: "quill",
            context_length: app.block_size,
        }],
    })
}

async fn chat_completions() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "quill serves base models, which have no chat format: use POST /v1/completions with a prompt",
    )
    .code("unknown_url")
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    match start_completion(&app, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn start_completion(app: &App, body: Body) -> Result<Response, ApiError> {
    // A place in the queue before the body is read and tokenised: a full server reads
    // no more bodies.
    let first = app.completions.place()?;
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    let request = api::completion_request(&bytes, &app.limits)?;
    let accepted = app.completions.start(request, first)?;
    let prompt = accepted.prompt_tokens;
    let (mut response, completion) = match accepted.request.stream {
        true => (sse(accepted.stream()).into_response(), None),
        false => {
            let body = accepted.whole().await?;
            let out = body.usage.map(|u| u.completion_tokens);
            (axum::Json(body).into_response(), out)
        }
    };
    response
        .extensions_mut()
        .insert(log::Tokens { prompt, completion });
    Ok(response)
}

/// A completion's stream as server-sent events: each item's JSON, then `data: [DONE]`.
fn sse(
    stream: CompletionStream,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        let data = match stream.next().await? {
            StreamItem::Chunk(chunk) => serde_json::to_string(&chunk),
            StreamItem::Error(error) => serde_json::to_string(&error.body()),
            StreamItem::Done => Ok("[DONE]".to_string()),
        };
        let data = data.expect("the API's structs serialise");
        Some((Ok(SseEvent::default().data(data)), stream))
    });
    Sse::new(events)
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
