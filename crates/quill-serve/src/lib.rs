//! quill's server: a language model behind an OpenAI-compatible completions API, with
//! continuous batching, streaming, a playground page and `/tokenize`.
//!
//! - [`api`]: the requests (read field by field: every byte from the network is checked
//!   before use), the typed responses and the errors, in OpenAI's shapes;
//! - [`completion`]: a completion from request to response, apart from HTTP: queued for
//!   the engine, gathered whole or streamed ([`completion::CompletionStream`], a state
//!   machine with an explicit end);
//! - [`engine`]: the decoding loop, continuous batching over the model's KV caches; it
//!   knows token ids and text, not HTTP;
//! - `http`: the HTTP edge (axum's router on hyper and tokio), the only place JSON is
//!   written; `log`: the request log; `tokens`: `/tokenize` and `/detokenize`.
//!
//! What it defends against: a client that opens connections and sends nothing, or
//! sends its header slowly, is closed after 10 s; at most
//! [`ServerConfig::connections`] are open at once (more are closed as they arrive); a
//! request takes its place in the bounded queue before its body is read; bodies are
//! bounded (1 MiB); without an API key, only requests addressed to the loopback name
//! (`Host`) with a JSON body are served, so a web page cannot make the server generate
//! (DNS rebinding, a form's `text/plain` POST).
//!
//! The model runs on the caller's thread ([`Server::run_engine`]); the HTTP server on a
//! tokio runtime of its own thread ([`Server::start`]). Between them: a bounded queue
//! of work, so that a full server answers 503 instead of growing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use quill_data::Tokenizer;
use quill_model::LanguageModel;
use tokio::sync::{Semaphore, mpsc};

pub mod api;
pub mod completion;
pub mod engine;
mod http;
mod log;
mod tokens;

pub use api::Limits;
pub use http::connection_limit;

/// How a server answers: its name for the model and the limits of a request
/// ([`Limits`]), its key, and the bounds on its queue and connections.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name, its aliases, and the most tokens and sequences of a request.
    pub limits: Limits,
    /// `Authorization: Bearer KEY` required under `/v1` (and the loopback check off).
    pub api_key: Option<String>,
    /// Prompts waiting for the batch at most; more are answered 503.
    pub max_queue: usize,
    /// Connections open at once at most ([`connection_limit`] fits it to the process).
    pub connections: usize,
    /// How long to finish accepted requests after a shutdown signal.
    pub drain: Duration,
    /// No request log.
    pub quiet: bool,
}

/// A running HTTP server, waiting for its engine.
#[derive(Debug)]
pub struct Server {
    thread: JoinHandle<Result<()>>,
    work: mpsc::UnboundedReceiver<engine::Work>,
    tokenizer: Arc<Tokenizer>,
    address: SocketAddr,
    max_rows: usize,
}

impl Server {
    /// Serves on `listener` (bound, non-blocking) from a thread of its own, for a model
    /// of `block_size` tokens of context that reads `tokenizer`'s ids.
    pub fn start(
        listener: std::net::TcpListener,
        tokenizer: Tokenizer,
        block_size: usize,
        config: ServerConfig,
    ) -> Result<Server> {
        let tokenizer = Arc::new(tokenizer);
        let address = listener.local_addr()?;
        let (queue, work) = mpsc::unbounded_channel();
        let max_rows = config.limits.max_rows;
        let app = Arc::new(http::App {
            completions: completion::Completions {
                tokenizer: tokenizer.clone(),
                model: config.limits.model.clone(),
                queue,
                places: Arc::new(Semaphore::new(config.max_queue)),
            },
            limits: config.limits,
            api_key: config.api_key,
            block_size,
            created: completion::now(),
            hosts: http::loopback_hosts(address),
            quiet: config.quiet,
        });
        let limits = http::ServerLimits {
            connections: config.connections,
            drain: config.drain,
        };
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || http::serve(app, listener, limits))?;
        Ok(Server {
            thread,
            work,
            tokenizer,
            address,
            max_rows,
        })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Decodes for the server's requests on this thread until the server stops (after
    /// a shutdown signal and the drain), then waits for it.
    pub fn run_engine<B: Backend>(mut self, model: &LanguageModel<B>) -> Result<()> {
        engine::run(model, &self.tokenizer, &mut self.work, self.max_rows)?;
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the HTTP server stopped unexpectedly"),
        }
    }
}
