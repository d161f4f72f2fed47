//! The `check-config` command: validates one file and prints every problem with its key.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::{Loaded, Problem, load_text, process_env, read_config_file};

/// Exit status for a configuration with problems (`EX_CONFIG` in sysexits.h).
pub const EX_CONFIG: i32 = 78;
/// Exit status for a configuration file that cannot be read (`EX_NOINPUT` in sysexits.h).
pub const EX_NOINPUT: i32 = 66;

/// Runs `thermostat-server check-config FILE` against the process environment, printing
/// to stdout and stderr, and returns the exit status.
pub fn check_config_command(path: &Path) -> i32 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    check_config(path, &process_env, &mut stdout.lock(), &mut stderr.lock())
}

/// Validates the file at `path` and writes the result.
///
/// Returns 0 after writing `FILE: ok` and a one-line summary to `out` and any warnings to
/// `err`. Returns [`EX_CONFIG`] after writing every problem as `FILE: key: message` to
/// `err`, or [`EX_NOINPUT`] when the file cannot be read.
pub fn check_config(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let file = path.display();

    let text = match read_config_file(path) {
        Ok(text) => text,
        Err(error) => {
            write_text(err, &format!("{file}: cannot read the file: {error}\n"));
            return EX_NOINPUT;
        }
    };

    match load_text(path, &text, env) {
        Ok(loaded) => {
            write_text(out, &format!("{file}: ok\n{}\n", summary(&loaded)));
            write_text(err, &warning_lines(&file.to_string(), &loaded.warnings));
            0
        }
        Err(errors) => {
            let mut lines = String::new();
            for problem in &errors.problems {
                let _ = writeln!(lines, "{file}: {problem}");
            }
            lines.push_str(&warning_lines(&file.to_string(), &errors.warnings));
            write_text(err, &lines);
            EX_CONFIG
        }
    }
}

/// Returns the one-line summary of an accepted file.
fn summary(loaded: &Loaded) -> String {
    let config = &loaded.config;
    let count = config.thermostats.addresses.len();
    format!(
        "site {}: {count} thermostat address{}, API on {}",
        config.site.site_id,
        if count == 1 { "" } else { "es" },
        config.api.listen
    )
}

fn warning_lines(file: &str, warnings: &[Problem]) -> String {
    warnings
        .iter()
        .map(|warning| format!("{file}: warning: {warning}\n"))
        .collect()
}

/// Writes `text`, ignoring a failed write: the exit status still reports the result when
/// the terminal or pipe is gone.
fn write_text(stream: &mut dyn Write, text: &str) {
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}
