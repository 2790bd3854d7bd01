//! The connections a data-parallel run refused (they did not prove the run's secret),
//! reported on stderr as they happen: `warning: refused a connection to /data from
//! 10.0.0.7:51234: it did not prove the run's secret`. Nothing else is logged.

use burn_communication::websocket::guard::REFUSED;

struct Refusals;

impl log::Log for Refusals {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.target() == REFUSED && metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("warning: {}", record.args());
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
