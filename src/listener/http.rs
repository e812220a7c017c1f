//! The HTTP side of a client connection: protocol detection, then our
//! HTTP/1.1 codec or hyper's HTTP/2 server.
//!
//! A plain-text connection speaks HTTP/1.1, or HTTP/2 with prior knowledge
//! (h2c) when its first bytes are the HTTP/2 preface ([`sniff`] reads them
//! into a buffer from the worker's pool once the socket is readable); bytes
//! that start the preface's request line but break the rest get
//! GOAWAY(PROTOCOL_ERROR) ([`http2::is_bad_preface`]). Over TLS
//! ([`serve_tls`]) ALPN decides instead, and requests are marked `https`.
//! HTTP/1.1 goes to [`h1`](crate::listener::h1), which owns its timers and
//! framing rules; HTTP/2 is served by hyper under the listener's limits
//! ([`http2::configure`]) with the stream wrapped in [`ClientIo`] (timeouts,
//! write stall, preface replay). The connection's listener (timeouts, HTTP/2
//! limits, where refusals are counted) is the one looked up at accept, for
//! its whole life. Each request goes to [`proxy::handle`]. When the listener
//! stops (reload removed it, or shutdown) the connection is asked to finish
//! gracefully: HTTP/1.1 closes after the response in flight, HTTP/2 sends
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

use crate::listener::context::Worker;
use crate::listener::h1;
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

/// How a plain-text connection's wait for its first byte ended.
pub enum First {
    /// Its first bytes, in a buffer from the worker's pool.
    Bytes(BytesMut),
    /// Closed or failed before a byte, or the listener stopped and nothing
    /// came within the grace.
    Gone,
    /// Nothing within `client_header`.
    TimedOut,
}

/// Waits until a new plain-text connection sends its first bytes, holding no
/// buffer meanwhile: a buffer is taken from the pool only when the socket
/// says it is readable, and given back if the read finds nothing (readiness
/// can be stale: a fresh socket reports readable before any byte). When the
/// listener stops first, a client that has not sent a byte yet gets a short
/// grace (it connected just before and is usually mid-send), not its whole
/// header timeout: a silent one must not hold the drain.
pub async fn first_bytes(
    worker: &Worker,
    stream: &TcpStream,
    deadline: Instant,
    stop: &watch::Receiver<bool>,
) -> First {
    let read = async {
        loop {
            // The socket's own readiness slot: no waiter node in this state.
            std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await?;
            let mut buf = worker.bufs.take();
            match stream.try_read_buf(&mut buf) {
                Ok(_) => return Ok::<BytesMut, std::io::Error>(buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => worker.bufs.give(buf),
                Err(e) => return Err(e),
            }
        }
    };
    // One timer: the header deadline, moved to the grace once the listener
    // stops (a second timer would cost every silent connection its size).
    let mut closing = stop.clone();
    let mut read = pin!(read);
    let mut timer = pin!(tokio::time::sleep_until(deadline));
    let mut stopping = false;
    let got = loop {
        tokio::select! {
            biased;
            r = read.as_mut() => break Some(Ok(r)),
            () = timer.as_mut() => break if stopping { None } else { Some(Err(())) },
            _ = closing.wait_for(|s| *s), if !stopping => {
                stopping = true;
                let grace = Instant::now() + STOP_GRACE;
                if grace < deadline {
                    timer.as_mut().reset(grace);
                }
            }
        }
    };
    match got {
        Some(Ok(Ok(buf))) if !buf.is_empty() => First::Bytes(buf),
        Some(Ok(Ok(empty))) => {
            worker.bufs.give(empty);
            First::Gone
        }
        None | Some(Ok(Err(_))) => First::Gone,
        Some(Err(_)) => First::TimedOut,
    }
}

/// The 408 for a connection that sent nothing within `client_header`,
/// counted and logged as a refusal.
pub async fn answer_timeout(listener: &Listener, peer: SocketAddr, mut stream: TcpStream) {
    listener.state.metrics.rejected("client_header");
    ratelog::log_refusal(&listener.config.name, Some(peer), "client_header", 408);
    let within = listener.config.timeouts.client_idle;
    let _ = tokio::time::timeout(within, async {
        stream.write_all(io::timeout_response()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves one accepted plain-text HTTP connection from its first bytes
/// ([`first_bytes`]); `started` is its accept time. Decides the protocol in
/// a state that is dropped once it is known ([`decide`]), so an HTTP/1.1
/// connection's task holds only the HTTP/1.1 loop.
pub async fn serve(
    worker: Rc<Worker>,
    listener: Arc<Listener>,
    stream: TcpStream,
    peer: SocketAddr,
    first: BytesMut,
    started: Instant,
    stop: watch::Receiver<bool>,
) {
    let decided = Box::pin(decide(
        &worker, listener, stream, peer, first, started, &stop,
    ))
    .await;
    if let Some((info, stream, first)) = decided {
        Box::pin(h1::serve(worker, info, stream, first, started, stop)).await;
    }
}

/// Reads until the first bytes tell HTTP/2 from HTTP/1.1; serves HTTP/2 (and
/// answers a broken preface or a head timeout) itself, and hands an HTTP/1.1
/// connection back.
async fn decide(
    worker: &Rc<Worker>,
    listener: Arc<Listener>,
    mut stream: TcpStream,
    peer: SocketAddr,
    first: BytesMut,
    started: Instant,
    stop: &watch::Receiver<bool>,
) -> Option<(Rc<ConnInfo>, TcpStream, BytesMut)> {
    let deadline = started + listener.config.timeouts.client_header;
    let Some(first) = sniff(&mut stream, first, deadline).await else {
        answer_timeout(&listener, peer, stream).await;
        return None;
    };
    if http2::is_bad_preface(&first) {
        worker.bufs.give(first);
        refuse_bad_preface(&listener, peer, stream).await;
        return None;
    }
    let conn = Accepted {
        listener,
        peer,
        https: false,
        tls: None,
        started,
    };
    if first.starts_with(H2_PREFACE) {
        let prefix = Bytes::copy_from_slice(&first);
        let mut first = first;
        first.clear();
        worker.bufs.give(first);
        Box::pin(serve_h2(worker.clone(), conn, stream, prefix, stop.clone())).await;
        return None;
    }
    Some((conn.info(), stream, first))
}

/// Reads on while the first bytes could still be the start of the HTTP/2
/// preface, until they tell HTTP/2 from HTTP/1 (or the stream ends: the
/// HTTP/1 loop then sees the end). `None` past `deadline`.
async fn sniff(stream: &mut TcpStream, mut first: BytesMut, deadline: Instant) -> Option<BytesMut> {
    let undecided = |b: &BytesMut| {
        let len = b.len().min(H2_PREFACE.len());
        b.len() < H2_PREFACE.len() && b.get(..len) == H2_PREFACE.get(..len)
    };
    let read = async {
        while undecided(&first) {
            if stream.read_buf(&mut first).await? == 0 {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(_) => Some(first),
        Err(_) => None,
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
    S: h1::wire::ClientStream + Send,
{
    let conn = Accepted {
        listener,
        peer,
        https: true,
        tls,
        started,
    };
    if is_h2 {
        serve_h2(worker, conn, stream, Bytes::new(), stop).await;
    } else {
        let info = conn.info();
        h1::serve(worker, info, stream, BytesMut::new(), started, stop).await;
    }
}

/// What is known about a client connection once its protocol is decided;
/// `listener` is its listener as of the accept, kept for its whole life.
struct Accepted {
    listener: Arc<Listener>,
    peer: SocketAddr,
    https: bool,
    tls: Option<&'static str>,
    started: Instant,
}

impl Accepted {
    fn info(self) -> Rc<ConnInfo> {
        Rc::new(ConnInfo {
            client_ip: headers::client_ip_value(self.peer.ip()),
            listener: self.listener,
            peer: self.peer,
            https: self.https,
            tls: self.tls,
            shared: ConnShared::new(),
        })
    }
}

/// Serves HTTP/2 on hyper: the stream wrapped in [`ClientIo`] (timeouts, the
/// write-stall rule, replay of the preface bytes already read), under the
/// listener's HTTP/2 limits. When the listener stops, GOAWAY lets open
/// streams complete.
async fn serve_h2<S>(
    worker: Rc<Worker>,
    conn: Accepted,
    stream: S,
    first: Bytes,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = conn.listener.config.timeouts;
    let limits = conn.listener.config.http2;
    let started = conn.started;
    let info = conn.info();
    let client = ClientIo::new(
        stream,
        first,
        info.shared.clone(),
        timeouts.client_header,
        timeouts.client_idle,
        started,
    );
    let end = ConnEnd { info: info.clone() };
    // Boxed: hyper keeps the service future inline in every stream.
    let svc = service_fn(move |req| Box::pin(proxy::handle_h2(worker.clone(), info.clone(), req)));
    // A stream whose client stops taking its response ends after this.
    let idle = timeouts.client_idle;
    // The connection's streams run in this task (see `stall`).
    let (streams, exec) = stall::Streams::new(idle);
    let mut builder = hyper::server::conn::http2::Builder::new(exec);
    http2::configure(&mut builder, limits, MAX_HEAD_BYTES as u32);
    // Boxed: HTTP/2 state is large.
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(client), svc));
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
