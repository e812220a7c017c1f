//! The HTTP side of a client connection: protocol detection and hyper serving.
//!
//! A connection speaks HTTP/1.1, or HTTP/2 with prior knowledge (h2c) when its
//! first bytes are the HTTP/2 preface; those bytes are read once and replayed
//! through [`ClientIo`]. Each request goes to [`proxy::handle`]. When the
//! listener stops (reload removed it, or shutdown) the connection is asked to
//! finish gracefully: HTTP/1 closes after the response in flight, HTTP/2 sends
//! GOAWAY and lets open streams complete.

pub mod body;
pub mod headers;
pub mod proxy;
pub mod reply;
pub mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::listener::framing::FramingInspector;
use crate::listener::io::{self, ClientIo, ConnShared};
use crate::worker::Worker;
use proxy::ConnInfo;

/// Request heads above this many bytes get 431 (SPEC §3).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a connection that has sent nothing may still start its first
/// request once its listener stops.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(250);
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Runs hyper's HTTP/2 tasks on this worker thread.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Serves one accepted plain-text HTTP connection.
pub async fn serve(
    worker: Rc<Worker>,
    bind: SocketAddr,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let Some(timeouts) = worker
        .snapshot
        .peek()
        .listener(bind)
        .map(|l| l.config.timeouts)
    else {
        return;
    };
    // Read until the first bytes tell HTTP/2 preface from HTTP/1.
    let mut first = BytesMut::with_capacity(4096);
    let sniff = async {
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
    let mut sniff = pin!(tokio::time::timeout_at(
        started + timeouts.client_header,
        sniff
    ));
    let sniffed = tokio::select! {
        biased;
        r = sniff.as_mut() => r,
        _ = closing.wait_for(|s| *s) => {
            match tokio::time::timeout(STOP_GRACE, sniff.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    match sniffed {
        Ok(Ok(false)) => {}
        Ok(Ok(true)) | Ok(Err(_)) => return,
        Err(_) => {
            let _ = stream.write_all(io::timeout_response()).await;
            let _ = stream.shutdown().await;
            return;
        }
    }
    let is_h2 = first.starts_with(H2_PREFACE);
    let shared = ConnShared::new();
    let inspector = (!is_h2).then(|| FramingInspector::new(MAX_HEAD_BYTES));
    let client = ClientIo::new(
        stream,
        first.freeze(),
        shared.clone(),
        inspector,
        timeouts.client_header,
        timeouts.client_idle,
        started,
    );
    let info = Rc::new(ConnInfo {
        bind,
        peer,
        https: false,
        shared,
    });
    serve_io(worker, info, TokioIo::new(client), is_h2, stop).await;
}

/// Serves HTTP on an already wrapped client stream (plain or TLS).
pub async fn serve_io<I>(
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    io: I,
    is_h2: bool,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| proxy::handle(worker.clone(), info.clone(), req));
    if is_h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(LocalExec);
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_pending_accept_reset_streams(64)
            .max_local_error_reset_streams(256)
            .max_header_list_size(MAX_HEAD_BYTES as u32);
        let conn = builder.serve_connection(io, svc);
        let mut conn = pin!(conn);
        tokio::select! {
            biased;
            r = conn.as_mut() => log_end(r),
            _ = stop.wait_for(|s| *s) => {
                conn.as_mut().graceful_shutdown();
                log_end(conn.await);
            }
        }
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
            r = conn.as_mut() => log_end(r),
            _ = stop.wait_for(|s| *s) => {
                conn.as_mut().graceful_shutdown();
                log_end(conn.await);
            }
        }
    }
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "client connection ended with error");
    }
}
