//! A logger for integration tests that run the daemon in the test process. It keeps
//! every line at info and above and copies it to stderr, so a test can look for a
//! message or check that a secret is missing.

use std::sync::{Mutex, MutexGuard, Once};

static LOG_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLog;

impl log::Log for CaptureLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        eprintln!("{line}");
        lines().push(line);
    }

    fn flush(&self) {}
}

static CAPTURE: CaptureLog = CaptureLog;

fn lines() -> MutexGuard<'static, Vec<String>> {
    LOG_LINES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the capturing logger once per test process.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// Returns the captured lines that contain `text`, oldest first.
pub fn lines_containing(text: &str) -> Vec<String> {
    lines()
        .iter()
        .filter(|line| line.contains(text))
        .cloned()
        .collect()
}
