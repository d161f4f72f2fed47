//! A response before it is sent: status, content type, body and extra headers, with the
//! JSON error form `{"error": "..."}` that every failed request gets.

use std::io::{self, Read};

/// A response to send.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
    /// Extra headers such as `Allow` or `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

/// The pieces of a body that is made while it is sent.
pub type Pieces = Box<dyn Iterator<Item = String> + Send>;

/// A response body.
pub enum Body {
    Text(String),
    /// A body made piece by piece while it is sent, so that a page with lines for every
    /// thermostat is never in memory as a whole. The length is counted beforehand, so
    /// the response carries a `Content-Length`.
    Pieces {
        length: usize,
        pieces: Pieces,
    },
}

impl Body {
    /// Makes a body of `count` pieces, where `piece(k)` makes piece `k`. Each piece is made
    /// twice: once to count the length, and once while it is sent.
    pub fn in_pieces(count: usize, piece: impl Fn(usize) -> String + Send + 'static) -> Self {
        let length = (0..count).map(|index| piece(index).len()).sum();
        Body::Pieces {
            length,
            pieces: Box::new((0..count).map(piece)),
        }
    }

    /// Returns the length in bytes and a reader of the body.
    pub fn into_reader(self) -> (usize, Box<dyn Read + Send>) {
        match self {
            Body::Text(text) => (text.len(), Box::new(io::Cursor::new(text.into_bytes()))),
            Body::Pieces { length, pieces } => (length, Box::new(PieceReader::new(pieces))),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Text(text) => f.debug_tuple("Text").field(text).finish(),
            Body::Pieces { length, .. } => write!(f, "Pieces {{ length: {length} }}"),
        }
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Text(text) => f.write_str(text),
            Body::Pieces { length, .. } => write!(f, "({length} bytes sent in pieces)"),
        }
    }
}

/// Bodies sent whole compare by text; a body sent in pieces equals no other body.
impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Body::Text(a), Body::Text(b)) => a == b,
            _ => false,
        }
    }
}

impl From<String> for Body {
    fn from(text: String) -> Self {
        Body::Text(text)
    }
}

/// Reads the pieces one after the other, holding one piece at a time.
struct PieceReader {
    pieces: Pieces,
    current: Vec<u8>,
    offset: usize,
}

impl PieceReader {
    fn new(pieces: Pieces) -> Self {
        Self {
            pieces,
            current: Vec::new(),
            offset: 0,
        }
    }
}

impl Read for PieceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.pieces.next() {
                Some(piece) => {
                    self.current = piece.into_bytes();
                    self.offset = 0;
                }
                None => return Ok(0),
            }
        }
        let rest = &self.current[self.offset..];
        let count = rest.len().min(buf.len());
        buf[..count].copy_from_slice(&rest[..count]);
        self.offset += count;
        Ok(count)
    }
}

pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=utf-8";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: JSON,
            body: Body::Text(value.to_string()),
            headers: Vec::new(),
        }
    }

    /// Builds `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl AsRef<str>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.as_ref() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Turns the `(status, JSON body)` pairs of the older handlers into a reply.
impl From<(u16, String)> for Reply {
    fn from((status, body): (u16, String)) -> Self {
        Self {
            status,
            content_type: JSON,
            body: Body::Text(body),
            headers: Vec::new(),
        }
    }
}
