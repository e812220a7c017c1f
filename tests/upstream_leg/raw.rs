//! Byte-exact ends of the upstream leg: a scripted server for responses no
//! real server would send, and a client socket that sees exactly what tandem
//! writes back.
//!
//! [`RawServer`] accepts on `127.0.0.1:0`, reads each request head (and a
//! `Content-Length` body unless told not to), records the head, and writes
//! whatever [`Reply`] its script returns for the n-th request it has seen
//! (counted across all connections). It counts accepted connections, so a
//! test can tell a reused server connection from a fresh one. Every loop is
//! capped and every read bounded; the server stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Caps that keep a misbehaving test from looping or buffering forever.
const MAX_CONNECTIONS: usize = 64;
const MAX_REQUESTS_PER_CONNECTION: usize = 64;
const MAX_HEAD: usize = 1024 * 1024;
/// Longest a [`RawClient`] waits for one answer, and a lingering close drains.
const IO_LIMIT: Duration = Duration::from_secs(10);

/// What a [`RawServer`] does with its connection after writing a reply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Wait for the next request on the same connection.
    KeepAlive,
    /// Drop the socket at once (a FIN, or a RST when request bytes are unread).
    Close,
    /// Shut down the write side, then drain what the peer still sends (up to
    /// [`IO_LIMIT`]) before closing, as nginx's lingering close does.
    Linger,
}

/// One scripted answer.
pub struct Reply {
    bytes: Vec<u8>,
    read_body: bool,
    then: Then,
}

impl Reply {
    /// Writes `bytes` after the whole request was read and keeps the connection.
    pub fn keep(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            read_body: true,
            then: Then::KeepAlive,
        }
    }

    /// Writes `bytes` after the whole request was read, then closes.
    pub fn close(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            then: Then::Close,
            ..Self::keep(bytes)
        }
    }

    /// Answers right after the request head, leaving its body unread.
    pub fn before_body(mut self) -> Self {
        self.read_body = false;
        self
    }

    pub fn then(mut self, then: Then) -> Self {
        self.then = then;
        self
    }
}

/// A complete `200 OK` with a `Content-Length` body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

type Script = dyn Fn(usize) -> Reply + Send + Sync;

/// A scripted HTTP/1.1 server; see the module docs.
pub struct RawServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Starts a server answering request `n` (0-based, over all connections)
    /// with `script(n)`.
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let (acc, hs) = (accepted.clone(), heads.clone());
        let task = tokio::spawn(async move {
            // Owned here so that aborting this task aborts every connection.
            let mut conns = JoinSet::new();
            for _ in 0..MAX_CONNECTIONS {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve(s, script.clone(), hs.clone()));
            }
            while conns.join_next().await.is_some() {}
        });
        Self {
            addr,
            accepted,
            heads,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The request heads received so far, in order, each with its final CRLF CRLF.
    pub fn heads(&self) -> Vec<Vec<u8>> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut s: TcpStream, script: Arc<Script>, heads: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        let Some(end) = read_until_head_end(&mut s, &mut buf).await else {
            return;
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let n = {
            let mut hs = heads.lock().unwrap();
            hs.push(head.clone());
            hs.len() - 1
        };
        let reply = script(n);
        if reply.read_body {
            let len = content_length(&head).unwrap_or(0);
            while buf.len() < len {
                match s.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            buf.drain(..len);
        }
        if s.write_all(&reply.bytes).await.is_err() {
            return;
        }
        match reply.then {
            Then::KeepAlive => {}
            Then::Close => return,
            Then::Linger => {
                let _ = s.shutdown().await;
                let mut sink = [0u8; 64 * 1024];
                let drain = async { while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {} };
                let _ = tokio::time::timeout(IO_LIMIT, drain).await;
                return;
            }
        }
    }
}

/// Reads until `buf` holds a complete head; returns the index just past its
/// blank line, or `None` on EOF, error or an oversized head.
async fn read_until_head_end(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match s.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header lines of a head (without the start line), as (lowercase name, value).
pub fn header_lines(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    let text = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    text.split(|&b| b == b'\n')
        .skip(1)
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
            Some((name, l[colon + 1..].trim_ascii().to_vec()))
        })
        .collect()
}

fn content_length(head: &[u8]) -> Option<usize> {
    header_lines(head)
        .into_iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| std::str::from_utf8(&v).ok()?.parse().ok())
}

/// A response as a [`RawClient`] read it off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One client connection that writes exact bytes and parses what comes back.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one response head (which may be a 1xx). Cancel-safe: bytes read
    /// before a cancellation stay buffered for the next call.
    pub async fn head(&mut self) -> (u16, Vec<(String, Vec<u8>)>) {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.buf.len() < MAX_HEAD, "response head too large");
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "closed before a response head: {:?}", self.text());
        };
        let head: Vec<u8> = self.buf.drain(..end).collect();
        let status_line = head.split(|&b| b == b'\r').next().unwrap();
        let status = std::str::from_utf8(status_line)
            .unwrap()
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        (status, header_lines(&head))
    }

    /// Reads a final response (skipping 1xx), its body framed by
    /// Content-Length, chunked coding, or — for `to_head` — nothing.
    pub async fn response(&mut self, to_head: bool) -> RawResponse {
        tokio::time::timeout(IO_LIMIT, self.response_unbounded(to_head))
            .await
            .expect("no complete response in time")
    }

    async fn response_unbounded(&mut self, to_head: bool) -> RawResponse {
        let (status, headers) = loop {
            let (status, headers) = self.head().await;
            if !(100..200).contains(&status) {
                break (status, headers);
            }
        };
        let mut r = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if to_head || status == 204 || status == 304 {
            return r;
        }
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        if chunked {
            r.body = self.chunked_body().await;
        } else {
            let len: usize = std::str::from_utf8(r.header("content-length").expect("framing"))
                .unwrap()
                .parse()
                .unwrap();
            r.body = self.exactly(len).await;
        }
        r
    }

    async fn exactly(&mut self, len: usize) -> Vec<u8> {
        while self.buf.len() < len {
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "closed inside a body");
        }
        self.buf.drain(..len).collect()
    }

    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return line[..i].to_vec();
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "closed inside a chunked body");
        }
    }

    async fn chunked_body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await;
            let size = std::str::from_utf8(&line).unwrap();
            let size = size.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                // Trailers, if any, end with an empty line.
                while !self.line().await.is_empty() {}
                return body;
            }
            body.extend(self.exactly(size).await);
            assert!(self.line().await.is_empty(), "chunk not followed by CRLF");
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}
