//! `quill serve`: a checkpoint behind quill-serve's OpenAI-compatible API. This command
//! reads the flags and the key, checks the memory, binds the port, loads the model on
//! the chosen backend, and runs the server ([`quill_serve::Server`]).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use quill_serve::{Limits, Server, ServerConfig};

use super::prepared::PreparedModel;

use crate::backend::{self, Job};
use crate::cli::ServeArgs;

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
    let prepared = PreparedModel::open(&args.checkpoint, args.weights.weights)?;
    prepared.check(&target, args.max_batch)?;
    let dir = &prepared.dir;
    // Bound before the model loads: a taken port is an error at once.
    let address = SocketAddr::new(args.host, args.port);
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("could not listen on {address}"))?;
    listener.set_nonblocking(true)?;
    // The run's name by default (`cpu` for runs/cpu/best); the checkpoint's path, as
    // given and as read, is accepted too.
    let model = args.model_name.clone().unwrap_or_else(|| run_name(dir));
    let aliases = [
        args.checkpoint.display().to_string(),
        dir.display().to_string(),
    ]
    .into_iter()
    .filter(|a| *a != model)
    .collect();
    let config = ServerConfig {
        limits: Limits {
            model,
            aliases,
            max_tokens: args.max_tokens_limit,
            max_rows: args.max_batch,
        },
        api_key,
        max_queue: args.max_queue,
        connections: quill_serve::connection_limit(args.max_connections),
        drain: std::time::Duration::from_secs(args.drain_timeout),
        quiet: args.quiet,
    };
    target.run(ServeJob {
        prepared,
        listener,
        config,
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

struct ServeJob {
    prepared: PreparedModel,
    listener: std::net::TcpListener,
    config: ServerConfig,
}

impl Job for ServeJob {
    type Output = ();
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        let model = self.prepared.model::<B::InnerBackend>(&device)?;
        let name = self.config.limits.model.clone();
        let tokenizer = self.prepared.checkpoint.tokenizer.clone();
        let server = Server::start(self.listener, tokenizer, model.block_size(), self.config)?;
        let address = server.address();
        eprintln!(
            "serving {name} on http://{address} (playground: http://{address}/, API: http://{address}/v1)"
        );
        backend::on_pool_worker(|| server.run_engine(&model))?
    }
}
