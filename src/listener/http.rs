//! The HTTP side of a client connection: protocol detection and hyper serving.
//!
//! A connection speaks HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when its
//! first bytes are the HTTP/2 preface; those bytes are read once and replayed
//! through [`ClientIo`]; bytes that start the preface's request line but
//! break the rest get GOAWAY(PROTOCOL_ERROR) ([`http2::is_bad_preface`]). HTTP/2
//! connections are served under the listener's limits ([`http2::configure`]).
//! Over TLS ([`serve_tls`]) ALPN decides instead, and
//! requests are marked `https`. Both paths wrap the stream in [`ClientIo`] the
//! same way ([`serve_client`]). The connection's listener (timeouts, HTTP/2
//! limits, where refusals are counted) is the one looked up at accept, for its
//! whole life. Each request goes to [`proxy::handle`]. When the
//! listener stops (reload removed it, or shutdown) the connection is asked to
//! finish gracefully: HTTP/1 closes after the response in flight, HTTP/2 sends
//! GOAWAY and lets open streams complete.

pub mod access;
pub mod body;
pub mod headers;
pub mod http2;
pub mod proxy;
pub mod reply;
pub mod stall;
pub mod upgrade;

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::types::Http2Limits;
use crate::listener::context::Worker;
use crate::listener::framing::FramingInspector;
use crate::listener::io::{self, ClientIo, ConnShared};
use crate::listener::ratelog;
use crate::snapshot::Listener;
use proxy::ConnInfo;

/// Request heads above this many bytes get 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a connection that has sent nothing may still start its first
/// request once its listener stops.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
const H2_PREFACE: &[u8] = http2::PREFACE;

/// Serves one accepted plain-text HTTP connection.
pub async fn serve(
    worker: Rc<Worker>,
    listener: Arc<Listener>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let timeouts = listener.config.timeouts;
    let Some(first) = sniff(&mut stream, started + timeouts.client_header, &stop).await else {
        return;
    };
    if http2::is_bad_preface(&first) {
        refuse_bad_preface(&listener, peer, stream).await;
        return;
    }
    let is_h2 = first.starts_with(H2_PREFACE);
    let conn = Accepted {
        listener,
        peer,
        https: false,
        tls: None,
        is_h2,
        started,
    };
    serve_client(worker, conn, stream, first.freeze(), stop).await;
}

/// Reads until the first bytes tell an HTTP/2 preface from HTTP/1 (a typical
/// request head arrives whole in that one read; hyper reads the rest). `None`
/// when the connection is done: closed or failed before a byte, stopped with
/// nothing sent, or past `deadline` (answered 408). Its own future, so none
/// of its state stays in the connection's task while the connection is served.
async fn sniff(
    stream: &mut TcpStream,
    deadline: Instant,
    stop: &watch::Receiver<bool>,
) -> Option<BytesMut> {
    let mut first = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            let n = stream.read_buf(&mut first).await?;
            let len = first.len().min(H2_PREFACE.len());
            let matches = first.get(..len) == H2_PREFACE.get(..len);
            if n == 0 || !matches || first.len() >= H2_PREFACE.len() {
                return Ok::<bool, std::io::Error>(n == 0 && first.is_empty());
            }
        }
    };
    // When the listener stops, a client that has not sent a byte yet gets a
    // short grace (it connected just before and is usually mid-send), not its
    // whole header timeout: a silent one must not hold the drain.
    let mut closing = stop.clone();
    let mut read = pin!(tokio::time::timeout_at(deadline, read));
    let sniffed = tokio::select! {
        biased;
        r = read.as_mut() => r,
        _ = closing.wait_for(|s| *s) => {
            tokio::time::timeout(STOP_GRACE, read.as_mut()).await.ok()?
        }
    };
    match sniffed {
        Ok(Ok(false)) => Some(first),
        Ok(Ok(true)) | Ok(Err(_)) => None,
        Err(_) => {
            let _ = stream.write_all(io::timeout_response()).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// Answers a plain-text connection whose HTTP/2 preface is broken with
/// GOAWAY(PROTOCOL_ERROR), as HTTP/2 requires, and closes it; counted and
/// logged as a refusal.
async fn refuse_bad_preface(listener: &Listener, peer: SocketAddr, mut stream: TcpStream) {
    listener.state.metrics.rejected("h2_protocol_error");
    ratelog::log_refusal(&listener.config.name, Some(peer), "h2_protocol_error", 0);
    let within = listener.config.timeouts.client_idle;
    let answer = http2::bad_preface_answer();
    let _ = tokio::time::timeout(within, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one HTTP connection after its TLS handshake; `is_h2` when ALPN chose
/// `h2`, `tls` the protocol version (for the access log). `started` is the
/// accept time, so the handshake and the first request head share the
/// `client_header` budget.
#[allow(clippy::too_many_arguments)]
pub async fn serve_tls<S>(
    worker: Rc<Worker>,
    listener: Arc<Listener>,
    stream: S,
    peer: SocketAddr,
    is_h2: bool,
    tls: Option<&'static str>,
    started: Instant,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Accepted {
        listener,
        peer,
        https: true,
        tls,
        is_h2,
        started,
    };
    serve_client(worker, conn, stream, Bytes::new(), stop).await;
}

/// What is known about a client connection once its protocol is decided;
/// `listener` is its listener as of the accept, kept for its whole life.
struct Accepted {
    listener: Arc<Listener>,
    peer: SocketAddr,
    https: bool,
    tls: Option<&'static str>,
    is_h2: bool,
    started: Instant,
}

/// Wraps the stream in [`ClientIo`] (timeouts, replay of `first`, and the
/// HTTP/1 framing inspector) and serves it.
async fn serve_client<S>(
    worker: Rc<Worker>,
    conn: Accepted,
    stream: S,
    first: Bytes,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = ConnShared::new();
    let inspector = (!conn.is_h2).then(|| FramingInspector::new(MAX_HEAD_BYTES));
    let timeouts = conn.listener.config.timeouts;
    let client = ClientIo::new(
        stream,
        first,
        shared.clone(),
        inspector,
        timeouts.client_header,
        timeouts.client_idle,
        conn.started,
    );
    let h2 = conn.is_h2.then_some(conn.listener.config.http2);
    let info = Rc::new(ConnInfo {
        listener: conn.listener,
        peer: conn.peer,
        https: conn.https,
        tls: conn.tls,
        shared,
        client_ip: headers::client_ip_value(conn.peer.ip()),
    });
    serve_io(worker, info, TokioIo::new(client), h2, stop).await;
}

/// Serves HTTP on an already wrapped client stream (plain or TLS): HTTP/2
/// under `h2`'s limits when given, else HTTP/1.1.
pub async fn serve_io<I>(
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    io: I,
    h2: Option<Http2Limits>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let end = ConnEnd { info: info.clone() };
    // Boxed: hyper keeps the service future inline in every connection, so an
    // unboxed one would make each idle keep-alive connection as large as the
    // whole request state machine; boxing also turns its moves into pointer
    // moves.
    let svc = service_fn(move |req| Box::pin(proxy::handle(worker.clone(), info.clone(), req)));
    if let Some(limits) = h2 {
        // A stream whose client stops taking its response ends after this.
        let idle = end.info.listener.config.timeouts.client_idle;
        // The connection's streams run in this task (see `stall`).
        let (streams, exec) = stall::Streams::new(idle);
        let mut builder = hyper::server::conn::http2::Builder::new(exec);
        http2::configure(&mut builder, limits, MAX_HEAD_BYTES as u32);
        // Boxed: HTTP/2 state is large, and most connections are HTTP/1.
        let mut conn = Box::pin(builder.serve_connection(io, svc));
        tokio::select! {
            biased;
            r = streams.alongside(conn.as_mut()) => end.log(r),
            _ = stop.wait_for(|s| *s) => {
                conn.as_mut().graceful_shutdown();
                end.log(streams.alongside(conn.as_mut()).await);
            }
        }
        drop(conn);
        streams.drain().await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.max_buf_size(MAX_HEAD_BYTES).keep_alive(true);
        let conn = builder.serve_connection(io, svc).with_upgrades();
        let mut conn = pin!(conn);
        // Connection first: hyper closes a connection it has not read from yet
        // on graceful_shutdown, so one accepted just as the listener stops must
        // get one poll to read its (already received) request, which is then
        // answered with `Connection: close`.
        tokio::select! {
            biased;
            r = conn.as_mut() => end.log(r),
            _ = stop.wait_for(|s| *s) => {
                conn.as_mut().graceful_shutdown();
                end.log(conn.await);
            }
        }
    }
}

/// Counts and logs how a client connection ended, when it ended on a refusal
/// that happened inside hyper (which answers 400/431 itself and never calls the
/// service) or in [`ClientIo`] (408).
struct ConnEnd {
    info: Rc<ConnInfo>,
}

impl ConnEnd {
    fn log(&self, r: Result<(), hyper::Error>) {
        let refusal = match &r {
            _ if self.info.shared.header_timed_out() => Some(("client_header", 408)),
            Ok(()) => None,
            Err(e) => refusal_reason(e),
        };
        match (refusal, r) {
            (Some((reason, status)), _) => {
                let l = &self.info.listener;
                l.state.metrics.rejected(reason);
                ratelog::log_refusal(&l.config.name, Some(self.info.peer), reason, status);
            }
            (None, Err(e)) => tracing::debug!(error = %e, "client connection ended with error"),
            (None, Ok(())) => {}
        }
    }
}

/// The `reason` label and the status hyper answered, for connection errors
/// that are refusals of client input (not a client that merely went away).
fn refusal_reason(e: &hyper::Error) -> Option<(&'static str, u16)> {
    if e.is_parse_too_large() {
        // hyper answers 431 (or 414 for a URI over its own limit; with our
        // 64 KiB buffer a head always overflows the buffer first).
        return Some(("head_too_large", 431));
    }
    if e.is_parse() {
        return Some(("malformed_head", 400));
    }
    let h2 = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>())?;
    if !h2.is_go_away() || h2.is_remote() {
        return None;
    }
    match h2.reason() {
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Some(("h2_flood", 0)),
        Some(h2::Reason::NO_ERROR) | None => None,
        Some(_) => Some(("h2_protocol_error", 0)),
    }
}
