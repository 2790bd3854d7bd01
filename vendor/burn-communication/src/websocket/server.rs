use std::net::SocketAddr;

use crate::{
    base::{CommunicationChannel, CommunicationError, Message, ProtocolServer},
};
use crate::websocket::guard;
use axum::{
    Router,
    extract::{
        ConnectInfo, State, WebSocketUpgrade,
        ws::{self, WebSocket},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt;

#[derive(Clone, Debug)]
pub struct WsServer {
    /// quill: the address to listen on (0.21.0 always listened on every interface).
    host: String,
    port: u16,
    router: Router<()>,
}

pub struct WsServerChannel {
    inner: WebSocket,
}

impl WsServer {
    /// quill: a server listening on `host` (an IP address or a name), port `port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            router: Router::new(),
        }
    }
}

impl ProtocolServer for WsServer {
    type Channel = WsServerChannel;
    type Error = WsServerError;

    async fn serve<F>(self, shutdown: F) -> Result<(), Self::Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // quill: a library does not install a global logger (0.21.0 installed one that
        // printed every connection to standard output).

        // quill: the address asked for, not every interface.
        let host = self.host.trim_matches(['[', ']']);
        log::info!("Starting server on {host} port {}", self.port);

        let listener = tokio::net::TcpListener::bind((host, self.port)).await?;

        // quill: connections are served here rather than by axum::serve, which has no
        // header-read timeout and no bound: a connection that has not sent its upgrade
        // request within guard::HEADER_TIMEOUT is closed, and at most
        // guard::MAX_PENDING connections may be open and not yet upgraded (a stranger
        // holding thousands of idle sockets exhausted the file descriptors). Past that
        // bound the connection waiting longest is closed: a rank upgrades within
        // milliseconds of connecting, so a flood of idle ones cannot keep it out.
        let pending: std::sync::Arc<
            std::sync::Mutex<std::collections::VecDeque<(u64, std::sync::Arc<tokio::sync::Notify>)>>,
        > = Default::default();
        let mut next_id = 0u64;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        log::warn!(target: guard::REFUSED, "could not accept a connection: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let (id, close) = (next_id, std::sync::Arc::new(tokio::sync::Notify::new()));
            next_id += 1;
            {
                let mut waiting = pending.lock().unwrap_or_else(|e| e.into_inner());
                if waiting.len() >= guard::MAX_PENDING
                    && let Some((_, oldest)) = waiting.pop_front()
                {
                    oldest.notify_one();
                    log::warn!(
                        target: guard::REFUSED,
                        "closed a connection that had not proved the run's secret: {} were waiting (the newest from {peer})",
                        guard::MAX_PENDING
                    );
                }
                waiting.push_back((id, close.clone()));
            }
            let service = hyper_util::service::TowerToHyperService::new(
                self.router.clone().layer(axum::Extension(ConnectInfo(peer))),
            );
            let pending = pending.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(guard::HEADER_TIMEOUT);
                // Resolves once the connection is upgraded (or closed); closed early
                // when newer connections push it out of the waiting ones.
                tokio::select! {
                    _ = builder.serve_connection(io, service).with_upgrades() => {}
                    _ = close.notified() => {}
                }
                let mut waiting = pending.lock().unwrap_or_else(|e| e.into_inner());
                waiting.retain(|(other, _)| *other != id);
            });
        }

        Ok(())
    }

    fn route<C, Fut>(mut self, path: &str, callback: C) -> Self
    where
        C: FnOnce(WsServerChannel) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Format path: should start with a /
        let path = if path.starts_with("/") {
            path.to_owned()
        } else {
            format!("/{path}")
        };

        // quill: a connection that does not prove the run's secret is refused before
        // anything is served; messages are bounded by the route's limit.
        let limit = guard::max_message_size(&path);
        let route = path.clone();
        let method = get(
            move |ws: WebSocketUpgrade,
                  headers: HeaderMap,
                  axum::Extension(ConnectInfo(peer)): axum::Extension<ConnectInfo<SocketAddr>>,
                  _: State<()>| async move {
                let given = headers.get(guard::HEADER).map(|v| v.as_bytes());
                if !guard::authorized(given) {
                    log::warn!(
                        target: guard::REFUSED,
                        "refused a connection to {route} from {peer}: it did not prove the run's secret"
                    );
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let response: Response = ws
                    .max_message_size(limit)
                    .max_frame_size(limit)
                    .on_upgrade(async move |socket| {
                        callback(WsServerChannel { inner: socket }).await;
                    });
                response
            },
        );

        self.router = self.router.route(&path, method);

        self
    }
}

impl CommunicationChannel for WsServerChannel {
    type Error = WsServerError;

    async fn send(&mut self, message: Message) -> Result<(), WsServerError> {
        self.inner.send(ws::Message::Binary(message.data)).await?;

        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Message>, WsServerError> {
        match self.inner.next().await {
            Some(next) => match next {
                Ok(ws::Message::Binary(data)) => Ok(Some(Message { data })),
                Ok(ws::Message::Close(_close_frame)) => Ok(None),
                Err(err) => Err(WsServerError::Axum(err)),
                msg => Err(WsServerError::UnknownMessage(format!("{msg:?}"))),
            },
            // quill: the stream ended (the peer is gone): closed, as a Close frame is.
            None => Ok(None),
        }
    }

    async fn close(&mut self) -> Result<(), WsServerError> {
        let reason = "Peer is closing".to_string();

        self.inner
            .send(ws::Message::Close(Some(ws::CloseFrame {
                code: 1000, // code: Normal
                reason: reason.clone().into(),
            })))
            .await?;

        Ok(())
    }
}

#[derive(Debug)]
pub enum WsServerError {
    Io(std::io::Error),
    Axum(axum::Error),
    UnknownMessage(String),
    Other(String),
}

impl CommunicationError for WsServerError {}

impl From<std::io::Error> for WsServerError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<axum::Error> for WsServerError {
    fn from(err: axum::Error) -> Self {
        Self::Axum(err)
    }
}
