//! A logger for integration tests that keeps every line in memory and copies it to
//! stderr, so a test can check what the daemon logged: a fault reported once, a clear
//! refusal, no secret.

use std::sync::{Mutex, Once};

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        eprintln!("{line}");
        LINES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }

    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

/// Installs the capture for this test binary, once, at `level` and above. Each line
/// reads `LEVEL target: message`.
pub fn install(level: log::LevelFilter) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in this test binary");
        log::set_max_level(level);
    });
}

/// Returns every captured line that contains `text` (all of them for `""`).
pub fn lines_containing(text: &str) -> Vec<String> {
    LINES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .filter(|line| line.contains(text))
        .cloned()
        .collect()
}

/// Drops the lines captured so far.
pub fn clear() {
    LINES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clear();
}
