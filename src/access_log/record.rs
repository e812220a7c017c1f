//! What one access log line says: plain data, borrowed from the request or
//! connection it describes, and the facts a request gathers on its way.
//!
//! [`HttpRecord`] and [`TcpRecord`] are built at the end of a request or
//! connection and formatted at once ([`super::format`]); they own nothing.
//! [`RequestFacts`] is what the proxy learns while it serves a request (the
//! client, the attempts, the timings) and carries to the request's end. It
//! exists only when the access log is on, so a proxy without one pays for
//! none of it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

/// One HTTP request, as logged.
#[derive(Debug, Clone)]
pub struct HttpRecord<'a> {
    /// When the request was received.
    pub time: SystemTime,
    pub listener: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    pub host: Option<&'a [u8]>,
    /// Path and query, as sent by the client.
    pub path: &'a str,
    pub protocol: &'static str,
    /// The status sent to the client (0: none was, the client went away).
    pub status: u16,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    pub upstream: Option<&'a str>,
    pub server: Option<&'a str>,
    pub tier: u32,
    pub attempts: u32,
    pub request_id: Option<&'a [u8]>,
    pub duration: Duration,
    /// Time to a usable connection in the last attempt (zero when pooled);
    /// `None` when no connection was made.
    pub connect: Option<Duration>,
    /// Time from the start of the last attempt to the server's response head.
    pub response: Option<Duration>,
    /// TLS version of the client connection, e.g. `TLSv1.3`.
    pub tls: Option<&'static str>,
    pub user_agent: Option<&'a [u8]>,
    /// False when the response was cut before its end.
    pub complete: bool,
}

/// One TCP connection, as logged.
#[derive(Debug, Clone)]
pub struct TcpRecord<'a> {
    /// When the connection was accepted.
    pub time: SystemTime,
    pub listener: &'a str,
    pub client: SocketAddr,
    pub upstream: &'a str,
    pub server: Option<&'a str>,
    /// Bytes relayed from the client to the server.
    pub bytes_in: u64,
    /// Bytes relayed from the server to the client.
    pub bytes_out: u64,
    pub duration: Duration,
    pub end: TcpEnd,
}

/// How a relayed TCP connection ended: who closed first, or what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpEnd {
    /// The client closed its side first (the other direction then finished).
    ClientClosed,
    ServerClosed,
    /// No byte either way for `client_idle`.
    IdleTimeout,
    /// No server could be connected.
    NoServer,
    ClientError(std::io::ErrorKind),
    ServerError(std::io::ErrorKind),
}

/// The HTTP version as logged.
pub fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// What the proxy learns about one request while serving it.
#[derive(Debug)]
pub struct RequestFacts {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub protocol: &'static str,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    /// The client's `X-Request-Id`, else the one the proxy sent to the server.
    pub request_id: RequestId,
    pub tls: Option<&'static str>,
    /// Request body bytes, counted as the body goes to the server.
    pub bytes_in: Rc<Cell<u64>>,
    pub attempts: u32,
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
}

/// A request id, kept without an allocation when it is short (the proxy's
/// own are 32 bytes).
#[derive(Debug, Clone)]
pub struct RequestId {
    /// Bytes used in `inline`; 0 when there is no id or it is in `long`.
    len: u8,
    inline: [u8; INLINE_ID],
    long: Option<Box<[u8]>>,
}

const INLINE_ID: usize = 48;

impl Default for RequestId {
    fn default() -> Self {
        Self {
            len: 0,
            inline: [0; INLINE_ID],
            long: None,
        }
    }
}

impl RequestId {
    pub fn set(&mut self, id: &[u8]) {
        match self.inline.get_mut(..id.len()) {
            Some(slot) => {
                slot.copy_from_slice(id);
                // Fits in `inline`, so below 256.
                self.len = id.len() as u8;
                self.long = None;
            }
            None => {
                self.len = 0;
                self.long = Some(id.into());
            }
        }
    }

    /// The id, `None` when there is none (or it is empty).
    pub fn get(&self) -> Option<&[u8]> {
        match &self.long {
            Some(l) => Some(l),
            None => self
                .inline
                .get(..usize::from(self.len))
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Header name the proxy writes its request id under (lower case, as every
/// header name in a rewritten request head).
const REQUEST_ID_LINE: &[u8] = b"\r\nx-request-id: ";

/// The `X-Request-Id` value in an encoded HTTP/1.1 request head: the id the
/// server received, whether the client sent it or the proxy made it.
pub fn request_id_in_head(head: &[u8]) -> Option<&[u8]> {
    // Built once: a searcher per call costs more than the search.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(REQUEST_ID_LINE));
    let at = FINDER.find(head)? + REQUEST_ID_LINE.len();
    let rest = head.get(at..)?;
    let end = memchr::memchr(b'\r', rest)?;
    rest.get(..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_read_from_the_encoded_head() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\nx-request-id: abc123\r\nx-b: c\r\n\r\n";
        assert_eq!(request_id_in_head(head), Some(&b"abc123"[..]));
        assert_eq!(
            request_id_in_head(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"),
            None
        );
        // A header that merely ends in the name is not it.
        let other = b"GET / HTTP/1.1\r\nmy-x-request-id: no\r\n\r\n";
        assert_eq!(request_id_in_head(other), None);
    }

    #[test]
    fn request_ids_short_and_long_are_kept_whole() {
        let mut id = RequestId::default();
        assert_eq!(id.get(), None);
        id.set(b"0123456789abcdef0123456789abcdef");
        assert_eq!(id.get(), Some(&b"0123456789abcdef0123456789abcdef"[..]));
        let long = [b'x'; 200];
        id.set(&long);
        assert_eq!(id.get(), Some(&long[..]));
        id.set(b"short");
        assert_eq!(id.get(), Some(&b"short"[..]));
        id.set(b"");
        assert_eq!(id.get(), None);
    }

    #[test]
    fn versions_are_named_as_clients_write_them() {
        assert_eq!(protocol(http::Version::HTTP_11), "HTTP/1.1");
        assert_eq!(protocol(http::Version::HTTP_10), "HTTP/1.0");
        assert_eq!(protocol(http::Version::HTTP_2), "HTTP/2");
    }
}
