//! `quill serve`: a checkpoint behind an OpenAI-compatible completions API.
//!
//! - [`api`]: the requests, responses and errors of the API;
//! - [`engine`]: the decoding loop, continuous batching over the model's KV caches;
//! - this module: the HTTP server (axum's router on hyper and tokio), its routes, the
//!   API key, the playground page, and shutdown (Ctrl-C or SIGTERM: stop accepting,
//!   finish what was accepted within `--drain-timeout`, exit 0; a second signal exits
//!   at once).
//!
//! What it defends against: a client that opens connections and sends nothing, or
//! sends its header slowly, is closed after [`HEADER_TIMEOUT`]; at most
//! `--max-connections` are open at once (more are closed as they arrive); a request
//! takes its place in the bounded queue before its body is read; bodies are bounded;
//! without an API key, only requests addressed to the loopback name (`Host`) with a
//! JSON body are served, so a web page cannot make the server generate (DNS
//! rebinding, a form's `text/plain` POST).
//!
//! The model runs on the command's own thread (the engine); the server on a tokio
//! runtime of its own thread. Between them: a bounded queue of work, so that a full
//! server answers 503 instead of growing.

mod api;
mod engine;
mod log;
mod tokens;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::backend::AutodiffBackend;
use quill_data::Tokenizer;
use quill_model::WeightFormat;
use quill_train::{Checkpoint, MemoryEstimate};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::backend::{self, Job};
use crate::cli::ServeArgs;
use api::{ApiError, CompletionRequest, Finish, Limits};
use engine::{Event, Work};

/// Request bodies larger than this are refused (413).
const MAX_BODY_BYTES: usize = 1 << 20;

/// A connection that has not sent a whole request header this long after it opened
/// (or after its last response) is closed.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The playground, served at `/`: one page, no external resources.
const PLAYGROUND: &str = include_str!("playground.html");

pub fn run(args: ServeArgs) -> Result<()> {
    if args.max_batch == 0 || args.max_queue == 0 || args.max_tokens_limit == 0 {
        bail!("--max-batch, --max-queue and --max-tokens-limit must be at least 1");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(key), _) => {
            if std::env::args_os().any(|a| a.to_string_lossy().starts_with("--api-key")) {
                eprintln!(
                    "warning: --api-key on the command line is visible to every user of this machine (ps); use --api-key-file FILE or QUILL_API_KEY"
                );
            }
            Some(key.clone())
        }
        (None, Some(file)) => {
            crate::commands::warn_if_others_can_read(file, "--api-key-file");
            let text = quill_data::files::read_regular_text(file, 4096)
                .with_context(|| format!("--api-key-file {}", file.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        (None, None) => None,
    };
    if api_key.as_ref().is_some_and(|k| k.is_empty()) {
        bail!("the API key is empty");
    }
    if !args.host.is_loopback() && api_key.is_none() {
        bail!(
            "--host {} accepts connections from other machines: give an --api-key (or --api-key-file) too",
            args.host
        );
    }
    let target = backend::prepare(args.target.one()?, args.target.dtype())?;
    let dir = crate::commands::checkpoint_dir(
        &args.checkpoint,
        quill_train::Which::Best,
        "--checkpoint",
    )?;
    let checkpoint = Checkpoint::load(&dir)?;
    target.check_memory(&MemoryEstimate::sampling(
        &checkpoint.config.model,
        args.max_batch,
        target.dtype_bytes(),
    ))?;
    target.check_weights(args.weights.weights)?;
    // Bound before the model loads: a taken port is an error at once.
    let address = SocketAddr::new(args.host, args.port);
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("could not listen on {address}"))?;
    listener.set_nonblocking(true)?;
    // The run's name by default (`cpu` for runs/cpu/best); the checkpoint's path, as
    // given and as read, is accepted too.
    let model = args.model_name.clone().unwrap_or_else(|| run_name(&dir));
    let aliases = [
        args.checkpoint.display().to_string(),
        dir.display().to_string(),
    ]
    .into_iter()
    .filter(|a| *a != model)
    .collect();
    let connections = connection_limit(args.max_connections);
    target.run(ServeJob {
        checkpoint,
        weights: args.weights.weights,
        listener,
        api_key,
        limits: Limits {
            model,
            aliases,
            max_tokens: args.max_tokens_limit,
            max_rows: args.max_batch,
        },
        max_queue: args.max_queue,
        connections,
        drain: std::time::Duration::from_secs(args.drain_timeout),
        quiet: args.quiet,
    })
}

/// A short name for the model in `dir`: its run's (`cpu` for `runs/cpu/best`), or the
/// checkpoint directory's own (`gpt2` for `ckpt/gpt2`).
fn run_name(dir: &std::path::Path) -> String {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let own = name(dir);
    match own.as_deref() {
        Some("best" | "last") => dir.parent().and_then(name).or(own),
        _ => own,
    }
    .unwrap_or_else(|| "quill".into())
}

/// The most connections the server keeps: `wanted`, within what the process may open
/// (its soft file limit, raised to the hard one first, less a margin for the model's
/// own files).
fn connection_limit(wanted: usize) -> usize {
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

struct ServeJob {
    checkpoint: Checkpoint,
    weights: WeightFormat,
    listener: std::net::TcpListener,
    api_key: Option<String>,
    limits: Limits,
    max_queue: usize,
    connections: usize,
    drain: std::time::Duration,
    quiet: bool,
}

impl Job for ServeJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let model =
            (self.checkpoint.model::<B::InnerBackend>(&device)?).with_weights(self.weights)?;
        let tokenizer = Arc::new(self.checkpoint.tokenizer.clone());
        let (queue, mut work) = mpsc::unbounded_channel();
        let app = Arc::new(App {
            tokenizer: tokenizer.clone(),
            limits: self.limits.clone(),
            api_key: self.api_key,
            queue,
            places: Arc::new(Semaphore::new(self.max_queue)),
            block_size: model.block_size(),
            created: now(),
            hosts: loopback_hosts(self.listener.local_addr()?),
            quiet: self.quiet,
        });
        let address = self.listener.local_addr()?;
        let listener = self.listener;
        let limits = ServerLimits {
            connections: self.connections,
            drain: self.drain,
        };
        let server = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || serve(app, listener, limits))?;
        eprintln!(
            "serving {} on http://{address} (playground: http://{address}/, API: http://{address}/v1)",
            self.limits.model
        );
        backend::on_pool_worker(|| {
            engine::run(&model, &tokenizer, &mut work, self.limits.max_rows)
        })??;
        match server.join() {
            Ok(result) => result,
            Err(_) => bail!("the HTTP server stopped unexpectedly"),
        }
    }
}

/// What the handlers share.
struct App {
    tokenizer: Arc<Tokenizer>,
    limits: Limits,
    api_key: Option<String>,
    /// Requests in, to the engine.
    queue: mpsc::UnboundedSender<Work>,
    /// Places in the queue: a request holds one per prompt until the engine takes it
    /// into the batch; none left is a 503.
    places: Arc<Semaphore>,
    block_size: usize,
    created: u64,
    /// The host names a request's `Host` may carry when the server has no API key:
    /// the loopback names and the bound address.
    hosts: Vec<String>,
    /// No request log (`--quiet`).
    quiet: bool,
}

/// The host names (without port) of a server bound to `address`.
fn loopback_hosts(address: SocketAddr) -> Vec<String> {
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
struct ServerLimits {
    connections: usize,
    drain: std::time::Duration,
}

/// Runs the HTTP server until Ctrl-C or SIGTERM, then until every accepted request has
/// been answered, `limits.drain` at most, or a second signal. Dropping `app`
/// afterwards closes the queue, which ends the engine.
fn serve(app: Arc<App>, listener: std::net::TcpListener, limits: ServerLimits) -> Result<()> {
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

async fn models(State(app): State<Arc<App>>) -> axum::Json<Value> {
    axum::Json(json!({
        "object": "list",
        "data": [{
            "id": app.limits.model,
            "object": "model",
            "created": app.created,
            "owned_by": "quill",
            "context_length": app.block_size,
        }],
    }))
}

async fn chat_completions() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "quill serves base models, which have no chat format: use POST /v1/completions with a prompt",
    )
    .code("unknown_url")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn completions(State(app): State<Arc<App>>, body: Body) -> Response {
    match start_completion(&app, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// A request accepted into the queue: its events and what its response needs.
struct Accepted {
    request: CompletionRequest,
    events: engine::EventReceiver,
    prompt_tokens: usize,
    id: String,
    created: u64,
}

async fn start_completion(app: &App, body: Body) -> Result<Response, ApiError> {
    // A place in the queue before the body is read and tokenised: a full server reads
    // no more bodies.
    let first = app.places.clone().try_acquire_owned().map_err(|_| busy())?;
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
    let prompts = request
        .prompts
        .iter()
        .map(|p| app.tokenizer.encode(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
    let (sender, events) = engine::events();
    let more = (1..prompts.len())
        .map(|_| app.places.clone().try_acquire_owned())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| busy())?;
    let places = std::iter::once(first).chain(more);
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    for ((i, prompt), place) in prompts.into_iter().enumerate().zip(places) {
        let work = Work {
            prompt,
            rows: request.n,
            first_choice: i * request.n,
            max_tokens: request.max_tokens,
            stop: request.stop.clone(),
            options: request.options.clone(),
            events: sender.clone(),
            place: Some(place),
        };
        if app.queue.send(work).is_err() {
            return Err(failed("the model stopped".into()));
        }
    }
    let created = now();
    let accepted = Accepted {
        id: format!("cmpl-{:016x}", random_id()),
        request,
        events,
        prompt_tokens,
        created,
    };
    let prompt = accepted.prompt_tokens;
    let (mut response, completion) = match accepted.request.stream {
        true => (
            stream(accepted, app.limits.model.clone()).into_response(),
            None,
        ),
        false => {
            let body = whole(accepted, &app.limits.model).await?;
            let out = body["usage"]["completion_tokens"]
                .as_u64()
                .map(|n| n as usize);
            (body.into_response(), out)
        }
    };
    response
        .extensions_mut()
        .insert(log::Tokens { prompt, completion });
    Ok(response)
}

/// A response id independent of the request (its seed included): the standard
/// library's randomly keyed hash of a counter.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    RandomState::new().hash_one(n)
}

/// The answer of a server whose queue is full.
fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        "the server is busy: its queue is full; retry shortly",
    )
    .code("server_overloaded")
}

/// The prompt of choice `choice`, for `echo`.
fn echo_of(request: &CompletionRequest, choice: usize) -> &str {
    match request.echo {
        true => &request.prompts[choice / request.n],
        false => "",
    }
}

/// The whole response, once every choice is complete.
async fn whole(mut accepted: Accepted, model: &str) -> Result<axum::Json<Value>, ApiError> {
    let request = &accepted.request;
    let choices = request.prompts.len() * request.n;
    let mut texts: Vec<String> = (0..choices)
        .map(|c| echo_of(request, c).to_string())
        .collect();
    let mut finishes: Vec<Option<Finish>> = vec![None; choices];
    let mut completion_tokens = 0;
    while finishes.iter().any(Option::is_none) {
        match accepted.events.recv().await {
            Some(Event::Text { choice, text }) => texts[choice].push_str(&text),
            Some(Event::Finished {
                choice,
                finish,
                tokens,
            }) => {
                finishes[choice] = Some(finish);
                completion_tokens += tokens;
            }
            Some(Event::Failed(message)) => return Err(failed(message)),
            None => return Err(failed("the model stopped".into())),
        }
    }
    let choices = texts
        .iter()
        .zip(finishes)
        .enumerate()
        .map(|(i, (text, finish))| api::choice(i, text, finish))
        .collect();
    Ok(axum::Json(api::completion(
        &accepted.id,
        accepted.created,
        model,
        choices,
        Some(api::usage(accepted.prompt_tokens, completion_tokens)),
    )))
}

fn failed(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

/// Server-sent events: a chunk per piece of text, one with each choice's
/// `finish_reason`, the usage if asked for, then `data: [DONE]`.
fn stream(
    accepted: Accepted,
    model: String,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let choices = accepted.request.prompts.len() * accepted.request.n;
    // Echoed prompts go first.
    let echoes: Vec<Event> = (0..choices)
        .filter(|_| accepted.request.echo)
        .map(|choice| Event::Text {
            choice,
            text: echo_of(&accepted.request, choice).to_string(),
        })
        .collect();
    struct Progress {
        accepted: Accepted,
        model: String,
        pending: std::collections::VecDeque<Event>,
        open: usize,
        completion_tokens: usize,
        ended: bool,
    }
    let progress = Progress {
        accepted,
        model,
        pending: echoes.into(),
        open: choices,
        completion_tokens: 0,
        ended: false,
    };
    let chunk = |p: &Progress, choices: Vec<Value>, usage: Option<Value>| {
        let object = api::completion(&p.accepted.id, p.accepted.created, &p.model, choices, usage);
        SseEvent::default().data(object.to_string())
    };
    let events = futures_util::stream::unfold(progress, move |mut p| async move {
        if p.ended {
            return None;
        }
        let event = match p.pending.pop_front() {
            Some(event) => Some(event),
            None if p.open == 0 => None,
            None => p.accepted.events.recv().await,
        };
        let out = match event {
            Some(Event::Text { choice, text }) => {
                chunk(&p, vec![api::choice(choice, &text, None)], None)
            }
            Some(Event::Finished {
                choice,
                finish,
                tokens,
            }) => {
                p.open -= 1;
                p.completion_tokens += tokens;
                chunk(&p, vec![api::choice(choice, "", Some(finish))], None)
            }
            Some(Event::Failed(message)) => {
                p.ended = true;
                SseEvent::default().data(failed(message).body().to_string())
            }
            None if p.open > 0 => {
                p.ended = true;
                SseEvent::default().data(failed("the model stopped".into()).body().to_string())
            }
            None => {
                p.ended = true;
                // The usage chunk (asked for), then the end marker.
                if p.accepted.request.stream_usage {
                    let usage = api::usage(p.accepted.prompt_tokens, p.completion_tokens);
                    let usage_chunk = chunk(&p, Vec::new(), Some(usage));
                    p.pending.clear();
                    p.ended = false;
                    p.accepted.request.stream_usage = false;
                    return Some((Ok(usage_chunk), p));
                }
                SseEvent::default().data("[DONE]")
            }
        };
        Some((Ok(out), p))
    });
    Sse::new(events)
}
