//! The boundary between quill and the libraries below it: a panic raised inside Burn,
//! CubeCL, wgpu or a driver becomes the one-line `error: …` every failure gets, never a
//! backtrace.
//!
//! [`install_hook`] replaces the default panic message with a record of the first panic
//! (its message and where it was raised); [`catch`] runs work and turns a panic into an
//! error carrying that record. Setting `RUST_BACKTRACE` brings the default report back,
//! for developers.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use anyhow::{Result, anyhow};

/// The first panic since the last [`catch`] began (a panic on another thread, e.g. a
/// device's server thread, is often the cause of the one that reaches us).
static FIRST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the quiet panic hook (once, at startup).
pub fn install_hook() {
    let verbose = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let message = payload_text(info.payload());
        let message = match info.location() {
            Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
            None => message,
        };
        if let Ok(mut first) = FIRST_PANIC.lock() {
            first.get_or_insert(message);
        }
        if verbose {
            default(info);
        }
    }));
}

/// Runs `work`; a panic inside it becomes an error `{context}: {first panic's message}`.
pub fn catch<T>(context: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    if let Ok(mut first) = FIRST_PANIC.lock() {
        *first = None;
    }
    panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let recorded = FIRST_PANIC.lock().ok().and_then(|mut first| first.take());
        let message = recorded.unwrap_or_else(|| payload_text(payload.as_ref()));
        Err(anyhow!("{context}: {}", one_line(&message)))
    })
}

/// A panic payload's text (`panic!` gives a `String` or a `&str`).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// `message` on one line, shortened to a readable length.
fn one_line(message: &str) -> String {
    const MAX: usize = 300;
    let flat = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_one_line_error() {
        install_hook();
        let err = catch("the device failed", || -> Result<()> {
            panic!("No possible adapter\n  available")
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("the device failed: No possible adapter available (at "),
            "{err}"
        );
        assert!(!err.contains('\n'));
        assert_eq!(catch("x", || Ok(3)).unwrap(), 3);
        assert_eq!(
            catch("x", || -> Result<()> { Err(anyhow!("plain")) })
                .unwrap_err()
                .to_string(),
            "plain"
        );
        assert_eq!(one_line(&"a ".repeat(400)).chars().count(), 301);
    }
}
