//! Request bodies: the size limit (413), the JSON content type (415), JSON syntax (400)
//! and the settings each control route takes (400 naming the field). Pure except for
//! [`read_limited`], which reads from the request.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::control::SettingsChange;

use super::reply::Reply;

/// Largest request body accepted. A settings change is under 100 bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The settings of `POST /api/thermostats/{id}/temperature`.
pub const TEMPERATURE_FIELDS: [&str; 3] = ["t_heat", "t_cool", "hold"];
/// The settings of `POST /api/thermostats/{id}/mode`.
pub const MODE_FIELDS: [&str; 2] = ["tmode", "fmode"];
/// The settings of `POST /api/thermostats/{id}/settings`: all of them, in one change.
pub const SETTINGS_FIELDS: [&str; 5] = ["tmode", "t_heat", "t_cool", "fmode", "hold"];

/// Rejects a chunked body with 411: its length is unknown until it is read on a worker,
/// where a client that stalls would hold the worker.
pub fn check_length_known(transfer_encoding: Option<&str>) -> Result<(), Reply> {
    match transfer_encoding {
        Some(_) => Err(Reply::error(
            411,
            "chunked request bodies are not accepted: send Content-Length",
        )
        .with_header("Connection", "close")),
        None => Ok(()),
    }
}

/// Rejects a body whose declared `Content-Length` is over the limit before reading it.
pub fn check_declared_length(content_length: Option<usize>) -> Result<(), Reply> {
    match content_length {
        Some(length) if length > MAX_BODY_BYTES => Err(too_large(length)),
        _ => Ok(()),
    }
}

fn too_large(length: usize) -> Reply {
    Reply::error(
        413,
        format!("request body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes"),
    )
    .with_header("Connection", "close")
}

/// Requires `application/json` (parameters such as `charset` allowed) on a non-empty body.
pub fn check_content_type(content_type: Option<&str>, body_length: usize) -> Result<(), Reply> {
    if body_length == 0 {
        return Ok(());
    }
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if media_type.as_deref() == Some("application/json") {
        return Ok(());
    }
    let found = content_type.map_or("none".to_string(), super::routes::printable);
    Err(Reply::error(
        415,
        format!("unsupported Content-Type {found}: send the body as application/json"),
    ))
}

/// Maximum time to receive a whole body, checked between reads.
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Reads the body, at most [`MAX_BODY_BYTES`] (413 beyond, for a chunked body too), and
/// gives up with 408 once `deadline` passes between two reads or a read times out.
pub fn read_limited(reader: &mut dyn Read, deadline: Instant) -> Result<Vec<u8>, Reply> {
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            return Err(too_slow());
        }
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(body),
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(too_slow());
            }
            Err(error) => {
                return Err(Reply::error(
                    400,
                    format!("cannot read the request body: {error}"),
                ));
            }
        };

        body.extend_from_slice(&chunk[..read]);
        if body.len() > MAX_BODY_BYTES {
            return Err(too_large(body.len()));
        }
    }
}

fn too_slow() -> Reply {
    Reply::error(
        408,
        format!(
            "request body not received within {} s: send the whole body at once",
            BODY_DEADLINE.as_secs()
        ),
    )
    .with_header("Connection", "close")
}

/// Parses a JSON body; an empty body is `{}` when `empty_is_object` is set.
pub fn parse_json(body: &[u8], empty_is_object: bool) -> Result<serde_json::Value, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        if empty_is_object {
            return Ok(serde_json::json!({}));
        }
        return Err(Reply::error(400, "missing JSON body: send a JSON object"));
    }
    serde_json::from_slice(body).map_err(|error| {
        Reply::error(
            400,
            format!(
                "malformed JSON body at line {} column {}: {error}",
                error.line(),
                error.column()
            ),
        )
    })
}

/// Validates the settings of a control route: only the route's `fields` are accepted,
/// each checked and rounded by [`SettingsChange::from_json`].
pub fn parse_change(value: &serde_json::Value, fields: &[&str]) -> Result<SettingsChange, Reply> {
    let object = value.as_object().ok_or_else(|| {
        Reply::error(400, format!("expected a JSON object with {}", list(fields)))
    })?;
    if let Some(name) = object.keys().find(|name| !fields.contains(&name.as_str())) {
        return Err(Reply::error(
            400,
            format!(
                "unknown field {}: this route takes {}{}",
                super::routes::printable(name),
                list(fields),
                other_route_hint(name)
            ),
        ));
    }
    if object.is_empty() {
        return Err(Reply::error(
            400,
            format!("no setting to change: give {}", list(fields)),
        ));
    }
    SettingsChange::from_json(value).map_err(|error| Reply::error(400, error.to_string()))
}

fn list(fields: &[&str]) -> String {
    match fields {
        [] => String::new(),
        [only] => only.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

fn other_route_hint(name: &str) -> &'static str {
    if MODE_FIELDS.contains(&name) {
        "; set tmode and fmode with POST /api/thermostats/{id}/mode"
    } else if TEMPERATURE_FIELDS.contains(&name) {
        "; set t_heat, t_cool and hold with POST /api/thermostats/{id}/temperature"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_length_over_limit_is_413() {
        let reply = check_declared_length(Some(2 * 1024 * 1024)).expect_err("2 MB");
        assert_eq!(reply.status, 413);
    }

    #[test]
    fn chunked_body_is_411() {
        let reply = check_length_known(Some("chunked")).expect_err("chunked");
        assert_eq!(reply.status, 411);
    }

    #[test]
    fn declared_length_at_limit_accepted() {
        assert!(check_declared_length(Some(MAX_BODY_BYTES)).is_ok());
    }

    #[test]
    fn chunked_body_over_limit_is_413() {
        let big = vec![b' '; MAX_BODY_BYTES + 10];
        let deadline = Instant::now() + BODY_DEADLINE;
        let reply = read_limited(&mut big.as_slice(), deadline).expect_err("too big");
        assert_eq!(reply.status, 413);
    }

    #[test]
    fn body_after_deadline_is_408() {
        let past = Instant::now() - Duration::from_secs(1);
        let reply = read_limited(&mut b"{}".as_slice(), past).expect_err("too late");
        assert_eq!(reply.status, 408);
    }

    #[test]
    fn body_within_limit_read_whole() {
        let deadline = Instant::now() + BODY_DEADLINE;
        assert_eq!(
            read_limited(&mut b"{}".as_slice(), deadline),
            Ok(b"{}".to_vec())
        );
    }

    #[test]
    fn json_with_charset_accepted() {
        assert!(check_content_type(Some("Application/JSON; charset=utf-8"), 10).is_ok());
    }

    #[test]
    fn form_body_is_415() {
        let reply =
            check_content_type(Some("application/x-www-form-urlencoded"), 10).expect_err("form");
        assert_eq!(reply.status, 415);
    }

    #[test]
    fn missing_content_type_is_415() {
        assert_eq!(check_content_type(None, 10).map_err(|r| r.status), Err(415));
    }

    #[test]
    fn empty_body_needs_no_content_type() {
        assert!(check_content_type(None, 0).is_ok());
    }

    #[test]
    fn malformed_json_is_400_with_position() {
        let reply = parse_json(br#"{"t_heat": 70"#, false).expect_err("malformed");
        assert_eq!(reply.status, 400);
        assert!(
            reply.body.to_string().contains("line 1 column"),
            "{}",
            reply.body
        );
    }

    #[test]
    fn empty_body_is_400_for_control() {
        assert_eq!(parse_json(b"", false).map_err(|r| r.status), Err(400));
    }

    #[test]
    fn empty_body_is_object_for_scan() {
        assert_eq!(parse_json(b" ", true), Ok(json!({})));
    }

    #[test]
    fn setpoint_200_names_t_heat() {
        let reply = parse_change(&json!({"t_heat": 200}), &TEMPERATURE_FIELDS).expect_err("200");
        assert!(reply.body.to_string().contains("t_heat"), "{}", reply.body);
    }

    #[test]
    fn temperature_route_rejects_tmode() {
        let reply = parse_change(&json!({"tmode": 1}), &TEMPERATURE_FIELDS).expect_err("tmode");
        assert!(reply.body.to_string().contains("/mode"), "{}", reply.body);
    }

    #[test]
    fn temperature_change_rounded() {
        let change = parse_change(&json!({"t_heat": 70.3, "hold": true}), &TEMPERATURE_FIELDS)
            .expect("valid");
        assert_eq!(change.t_heat, Some(70.5));
    }

    #[test]
    fn empty_object_is_400() {
        let reply = parse_change(&json!({}), &MODE_FIELDS).expect_err("empty");
        assert!(
            reply.body.to_string().contains("tmode or fmode"),
            "{}",
            reply.body
        );
    }

    #[test]
    fn array_body_is_400() {
        assert_eq!(
            parse_change(&json!([1]), &MODE_FIELDS).map_err(|r| r.status),
            Err(400)
        );
    }
}
