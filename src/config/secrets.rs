//! Secrets: the database password and the tokens, read from the process environment or
//! from an environment file in the format of systemd's `EnvironmentFile=`, and never
//! printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Problem;

/// Environment variable for the PostgreSQL password.
pub const DB_PASSWORD_VAR: &str = "THERMOSTAT_DB_PASSWORD";
/// Environment variable for the token that authenticates this site to the public server.
pub const SITE_TOKEN_VAR: &str = "THERMOSTAT_SITE_TOKEN";
/// Environment variable for the OpenWeatherMap API key.
pub const WEATHER_API_KEY_VAR: &str = "THERMOSTAT_WEATHER_API_KEY";
/// Environment variable for the bearer token of the local API.
pub const API_TOKEN_VAR: &str = "THERMOSTAT_API_TOKEN";

const SECRET_VARS: [&str; 4] = [
    DB_PASSWORD_VAR,
    SITE_TOKEN_VAR,
    WEATHER_API_KEY_VAR,
    API_TOKEN_VAR,
];

const ENV_FILE_KEY: &str = "secrets.env_file";

/// A secret value. Debug and Display print `<redacted>`, and [`Secret::expose`] returns
/// the value where it must be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value. Call it only where the value is sent, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The `[secrets]` section and the secret values found for it.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// The environment file named by `secrets.env_file`, if any.
    pub env_file: Option<PathBuf>,
    /// From `THERMOSTAT_DB_PASSWORD`.
    pub database_password: Option<Secret>,
    /// From `THERMOSTAT_SITE_TOKEN`.
    pub site_token: Option<Secret>,
    /// From `THERMOSTAT_WEATHER_API_KEY`.
    pub weather_api_key: Option<Secret>,
    /// From `THERMOSTAT_API_TOKEN`.
    pub api_token: Option<Secret>,
}

/// Problems and warnings found while collecting secrets.
#[derive(Default)]
pub(super) struct Findings {
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

/// Collects the secrets from `env`, then from `env_file` for the variables that `env`
/// lacks or has empty. An empty value counts as unset.
pub(super) fn collect(
    env_file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
    findings: &mut Findings,
) -> Secrets {
    let from_file = match &env_file {
        Some(path) => read_env_file(path, findings),
        None => BTreeMap::new(),
    };

    let lookup = |name: &str| -> Option<Secret> {
        let from_process = env(name).filter(|value| !value.is_empty());
        let from_file = || {
            from_file
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        from_process.or_else(from_file).map(Secret)
    };

    Secrets {
        database_password: lookup(DB_PASSWORD_VAR),
        site_token: lookup(SITE_TOKEN_VAR),
        weather_api_key: lookup(WEATHER_API_KEY_VAR),
        api_token: lookup(API_TOKEN_VAR),
        env_file,
    }
}

/// Reads the environment file at `path`. A missing file is a warning, because systemd
/// may already have put its variables in the environment; any other read error is a
/// problem.
fn read_env_file(path: &Path, findings: &mut Findings) -> BTreeMap<String, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let message = format!(
                "{} not found; secrets are taken from the environment only",
                path.display()
            );
            findings.warnings.push(Problem::new(ENV_FILE_KEY, message));
            return BTreeMap::new();
        }
        Err(error) => {
            let message = format!("cannot read {}: {error}", path.display());
            findings.problems.push(Problem::new(ENV_FILE_KEY, message));
            return BTreeMap::new();
        }
    };

    let (values, problems) = parse_env_file(&text, path);
    findings.problems.extend(problems);

    let holds_secrets = SECRET_VARS
        .iter()
        .any(|name| values.get(*name).is_some_and(|value| !value.is_empty()));
    if holds_secrets {
        findings.warnings.extend(check_private(path, ENV_FILE_KEY));
    }
    values
}

/// Parses `KEY=VALUE` lines as systemd's `EnvironmentFile=` does: blank lines and lines
/// starting with `#` or `;` are skipped, an `export ` prefix is tolerated, and a value
/// may be wrapped in single or double quotes. A later line overrides an earlier one.
///
/// A malformed line is reported with `path` and its line number but never its text,
/// because the text may be a secret.
///
/// NOTE: systemd also joins lines ending in a backslash and accepts quoted values that
/// span several lines. Those forms are reported as malformed here.
pub fn parse_env_file(text: &str, path: &Path) -> (BTreeMap<String, String>, Vec<Problem>) {
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();

    for (index, line) in text.lines().enumerate() {
        match parse_env_line(line) {
            Ok(Some((key, value))) => {
                values.insert(key, value);
            }
            Ok(None) => {}
            Err(reason) => {
                let message = format!("{}: line {}: {reason}", path.display(), index + 1);
                problems.push(Problem::new(ENV_FILE_KEY, message));
            }
        }
    }
    (values, problems)
}

/// Parses one line into a key and value, `None` for a blank or comment line, or the
/// reason the line is malformed. The reason never contains text from the line.
fn parse_env_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
        return Ok(None);
    }

    let assignment = trimmed.strip_prefix("export ").unwrap_or(trimmed);
    let Some((key, raw_value)) = assignment.split_once('=') else {
        return Err("expected KEY=VALUE; the line is not shown because it may contain a secret");
    };

    let key = key.trim();
    if !is_variable_name(key) {
        return Err(
            "invalid variable name before '='; expected letters, digits and '_', \
                    not starting with a digit",
        );
    }

    let value = unquote(raw_value.trim())?;
    Ok(Some((key.to_string(), value)))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_');
    starts_well && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Removes one pair of surrounding quotes. Inside double quotes a backslash escapes the
/// next character, as in systemd. Single quotes keep their content as written.
fn unquote(value: &str) -> Result<String, &'static str> {
    const UNTERMINATED: &str = "unterminated quoted value; expected the value to end with \
                                the same quote it starts with";

    if let Some(inner) = value.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_string)
            .ok_or(UNTERMINATED);
    }

    let Some(inner) = value.strip_prefix('"') else {
        return Ok(value.to_string());
    };

    let mut result = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => result.push(escaped),
                None => return Err(UNTERMINATED),
            },
            '"' if chars.as_str().is_empty() => return Ok(result),
            '"' => return Err("text after the closing quote; expected the quote to end the line"),
            other => result.push(other),
        }
    }
    Err(UNTERMINATED)
}

/// Returns a warning when the file at `path` is readable by group or others. Call it only
/// for a file that contains secrets. `key` is the config key the warning is filed under.
pub(super) fn check_private(path: &Path, key: &str) -> Option<Problem> {
    use std::os::unix::fs::PermissionsExt;

    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }

    let message = format!(
        "{} contains secrets and is readable by group or others (mode {:04o}); \
         run chmod 600 {}",
        path.display(),
        mode & 0o7777,
        path.display()
    );
    Some(Problem::new(key, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_strips_double_quotes() {
        assert_eq!(unquote("\"a b\""), Ok("a b".to_string()));
    }

    #[test]
    fn unquote_keeps_escaped_quote() {
        assert_eq!(unquote(r#""a\"b""#), Ok("a\"b".to_string()));
    }

    #[test]
    fn unquote_keeps_single_quoted_backslash() {
        assert_eq!(unquote(r"'a\b'"), Ok(r"a\b".to_string()));
    }

    #[test]
    fn unquote_rejects_unterminated_quote() {
        assert!(unquote("\"abc").is_err());
    }

    #[test]
    fn unquote_rejects_text_after_quote() {
        assert!(unquote("\"abc\" def").is_err());
    }

    #[test]
    fn variable_name_rules() {
        assert!(is_variable_name("THERMOSTAT_API_TOKEN"));
        assert!(is_variable_name("_X1"));
        assert!(!is_variable_name("1X"));
        assert!(!is_variable_name("A-B"));
        assert!(!is_variable_name(""));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
    }

    #[test]
    fn secret_display_is_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(secret.to_string(), "<redacted>");
    }
}
