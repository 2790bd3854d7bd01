//! quill: who may connect, and how much a peer may send.
//!
//! - **The run's secret.** Every connection proves it in its upgrade request
//!   (`Authorization: Bearer SECRET`); the server answers any other request with 401
//!   before a route is served, and logs it. Set it with [`set_secret`] in every process
//!   of the run, before registering.
//! - **Transfer ids.** Tensor transfer ids are mixed with a key derived from the secret
//!   ([`transfer_key`]), so they cannot be guessed without it.
//! - **Message sizes.** A tensor message on `/data` is at most [`set_max_message_size`]
//!   bytes; every other route (orchestration, barriers) carries small messages only
//!   ([`CONTROL_LIMIT`]).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// The `log` target of the warning each refused connection gets (a program that wants
/// to show them installs a logger for it).
pub const REFUSED: &str = "burn_communication::refused";

/// quill: how long a connection may take to send its upgrade request.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// quill: the most connections open and not yet upgraded (authenticated) at once; a
/// newer one closes the one waiting longest.
pub const MAX_PENDING: usize = 256;

/// The header that carries the secret.
pub const HEADER: &str = "authorization";

/// The largest message on a control route (requests, responses, barriers).
pub const CONTROL_LIMIT: usize = 1 << 20;

/// The default largest tensor message, until [`set_max_message_size`] is called.
const DEFAULT_DATA_LIMIT: usize = 64 << 20;

static SECRET: RwLock<Option<Arc<str>>> = RwLock::new(None);
static DATA_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_DATA_LIMIT);

/// Sets (or, with `None`, clears) the secret that every connection of this process
/// sends and that every connection to it must send.
pub fn set_secret(secret: Option<&str>) {
    let mut slot = SECRET.write().unwrap_or_else(|e| e.into_inner());
    *slot = secret.map(Arc::from);
}

fn secret() -> Option<Arc<str>> {
    SECRET.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sets the largest tensor message (bytes) this process sends or accepts on `/data`.
pub fn set_max_message_size(bytes: usize) {
    DATA_LIMIT.store(bytes.max(CONTROL_LIMIT), Ordering::SeqCst);
}

/// The largest message accepted on `route` (with or without its leading `/`).
pub fn max_message_size(route: &str) -> usize {
    match route.trim_start_matches('/') {
        "data" => DATA_LIMIT.load(Ordering::SeqCst),
        _ => CONTROL_LIMIT,
    }
}

/// The header value a client sends: `Bearer SECRET`, if a secret is set.
pub(crate) fn credentials() -> Option<String> {
    secret().map(|s| format!("Bearer {s}"))
}

/// Whether a request whose `Authorization` header is `header` may connect: always when
/// no secret is set, else only with the secret (compared in constant time).
pub(crate) fn authorized(header: Option<&[u8]>) -> bool {
    let Some(expected) = credentials() else {
        return true;
    };
    let Some(given) = header else {
        return false;
    };
    let expected = expected.as_bytes();
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

/// A 64-bit key from the secret (0 without one) that transfer ids are mixed with.
pub fn transfer_key() -> u64 {
    let Some(secret) = secret() else {
        return 0;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    ("burn-communication transfer ids", &*secret).hash(&mut hasher);
    hasher.finish()
}
