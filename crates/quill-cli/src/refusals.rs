//! The connections a data-parallel run refused (they did not prove the run's secret, or
//! too many were waiting to), reported on stderr: the first one as it happens,
//! `warning: refused a connection to /data from 10.0.0.7:51234: it did not prove the
//! run's secret`, then at most one line every [`EVERY`] with the count since (a stranger
//! cannot flood the run's log). Nothing else is logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn_communication::websocket::guard::REFUSED;

/// The least time between two lines about refused connections.
const EVERY: Duration = Duration::from_secs(10);

/// When the last line was printed, and how many refusals came since.
static SINCE: Mutex<Option<(Instant, u64)>> = Mutex::new(None);

struct Refusals;

impl log::Log for Refusals {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == REFUSED && metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut since = SINCE.lock().unwrap_or_else(|e| e.into_inner());
        match since.as_mut() {
            Some((last, count)) if last.elapsed() < EVERY => *count += 1,
            Some((last, count)) => {
                let more = std::mem::take(count);
                *last = Instant::now();
                match more {
                    0 => eprintln!("warning: {}", record.args()),
                    more => eprintln!(
                        "warning: {} (and {more} more connections refused since the last warning)",
                        record.args()
                    ),
                }
            }
            None => {
                *since = Some((Instant::now(), 0));
                eprintln!("warning: {}", record.args());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger (once per process; a second call does nothing).
pub fn install() {
    if log::set_logger(&Refusals).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}
