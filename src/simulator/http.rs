//! The small slice of HTTP/1.x a thermostat speaks: parsing one request head with
//! size limits, and writing a `Connection: close` response. No chunked encoding,
//! no keep-alive, like the real single-threaded server.

use std::fmt;

/// Largest request head (request line and headers) the device reads, in bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// Largest request body the device reads, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The parsed request line and the headers the device cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The path without any query string.
    pub path: String,
    pub content_length: usize,
    /// Bytes of the buffer the head took, including the blank line.
    pub head_len: usize,
}

/// Failure to read a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    HeadTooLarge,
    BodyTooLarge(usize),
    Malformed(String),
    /// `Transfer-Encoding: chunked`, which the device does not support.
    Chunked,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HeadTooLarge => write!(f, "request head exceeds {MAX_HEAD_BYTES} bytes"),
            Self::BodyTooLarge(length) => write!(
                f,
                "Content-Length {length} exceeds the {MAX_BODY_BYTES}-byte body limit"
            ),
            Self::Malformed(detail) => write!(f, "malformed request: {detail}"),
            Self::Chunked => f.write_str("chunked transfer encoding is not supported"),
        }
    }
}

impl std::error::Error for RequestError {}

/// Parses the request head at the start of `buffer`. Returns `Ok(None)` while the
/// blank line that ends the head has not arrived. Accepts CRLF or bare LF lines.
pub fn parse_head(buffer: &[u8]) -> Result<Option<RequestHead>, RequestError> {
    let Some(head_len) = find_head_end(buffer) else {
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(RequestError::HeadTooLarge);
        }
        return Ok(None);
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(RequestError::HeadTooLarge);
    }

    let text = std::str::from_utf8(&buffer[..head_len])
        .map_err(|_| RequestError::Malformed("request head is not UTF-8".to_string()))?;
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let (method, path) = parse_request_line(request_line)?;

    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| {
                RequestError::Malformed(format!("invalid Content-Length {value:?}"))
            })?;
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            return Err(RequestError::Chunked);
        }
    }
    if content_length > MAX_BODY_BYTES {
        return Err(RequestError::BodyTooLarge(content_length));
    }

    Ok(Some(RequestHead {
        method,
        path,
        content_length,
        head_len,
    }))
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    let crlf = buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = buffer
        .windows(2)
        .position(|window| window == b"\n\n")
        .map(|at| at + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_request_line(line: &str) -> Result<(String, String), RequestError> {
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed(format!(
            "invalid request line {:?}",
            line.chars().take(80).collect::<String>()
        )));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(RequestError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }

    let path = target.split('?').next().unwrap_or(target);
    Ok((method.to_ascii_uppercase(), path.to_string()))
}

/// Builds a complete response with `Connection: close`.
pub fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The HTML page real units send for an unknown path, which sends the browser home.
pub const NOT_FOUND_HTML: &str = "<html><head><title>404 Not Found</title>\
    <meta http-equiv=\"refresh\" content=\"0;url=/\"></head>\
    <body>Not Found</body></html>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_post_head() {
        let raw = b"POST /tstat?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 12\r\n\r\n{\"tmode\":1}";
        let head = parse_head(raw).expect("valid head").expect("complete head");
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/tstat");
        assert_eq!(head.content_length, 12);
        assert_eq!(&raw[head.head_len..], b"{\"tmode\":1}");
    }

    #[test]
    fn accepts_bare_lf() {
        let head = parse_head(b"GET /sys HTTP/1.0\nHost: a\n\n").expect("valid head");
        assert_eq!(head.map(|head| head.path), Some("/sys".to_string()));
    }

    #[test]
    fn incomplete_head_waits() {
        assert_eq!(parse_head(b"GET /tstat HTTP/1.1\r\nHost"), Ok(None));
    }

    #[test]
    fn rejects_oversized_and_chunked() {
        let huge = vec![b'a'; MAX_HEAD_BYTES + 1];
        assert_eq!(parse_head(&huge), Err(RequestError::HeadTooLarge));
        let big_body = format!(
            "POST /tstat HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert!(matches!(
            parse_head(big_body.as_bytes()),
            Err(RequestError::BodyTooLarge(_))
        ));
        let chunked = b"POST /tstat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(chunked), Err(RequestError::Chunked));
    }

    #[test]
    fn rejects_bad_request_line() {
        assert!(matches!(
            parse_head(b"HELLO\r\n\r\n"),
            Err(RequestError::Malformed(_))
        ));
        let bad_length = b"POST /tstat HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        assert!(matches!(
            parse_head(bad_length),
            Err(RequestError::Malformed(_))
        ));
    }

    #[test]
    fn response_has_length_and_close() {
        let text = String::from_utf8(response(200, "application/json", "{\"success\":0}"))
            .expect("ASCII response");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 13\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"success\":0}"));
    }
}
