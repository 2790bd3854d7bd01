//! A collective call run on a thread of its own, beside checks that give up on it when
//! a peer is gone or another worker of this process stopped.

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::TrainError;

/// Set when a worker of an in-process world stopped: the others stop waiting for it.
static IN_PROCESS_STOPPED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Tells the other workers of this process's in-process world that one of them stopped
/// (with an error): their collective calls end with an error instead of waiting.
pub fn stop_in_process_workers() {
    IN_PROCESS_STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The error of a worker whose in-process world was stopped by another.
pub(super) fn stopped_in_process() -> Option<TrainError> {
    IN_PROCESS_STOPPED
        .load(std::sync::atomic::Ordering::SeqCst)
        .then_some(TrainError::OtherWorkerFailed)
}

/// Why [`watch`] gave up.
pub(super) enum Waited {
    /// `timeout` passed.
    TimedOut,
    /// `check` found a reason.
    Stopped(TrainError),
}

/// Runs `work` on its own thread and waits for it, calling `check` every `every`: gives
/// up when `check` finds a reason or after `timeout`. Burn's collective calls block
/// forever when a peer is gone; the abandoned thread ends with the process.
pub(super) fn watch<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    every: Duration,
    timeout: Duration,
    check: impl Fn() -> Option<TrainError>,
) -> Result<T, Waited> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("quill-collective".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| Waited::Stopped(TrainError::Parallel(format!("collective thread: {e}"))))?;
    let start = Instant::now();
    loop {
        match rx.recv_timeout(every) {
            Ok(value) => return Ok(value),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Waited::Stopped(TrainError::Parallel(
                    "the collective call failed inside Burn".into(),
                )));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = check() {
            return Err(Waited::Stopped(why));
        }
        if start.elapsed() >= timeout {
            return Err(Waited::TimedOut);
        }
    }
}

/// Whether something accepts TCP connections at `addr`.
pub(super) fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}
