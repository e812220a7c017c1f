//! [`ClientIo`]'s timers on a paused clock: a duplex pipe plays the client,
//! the test plays hyper (reads, marks the request in flight, ends it).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;

use super::{ClientIo, ConnShared};
use crate::listener::framing::FramingInspector;

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

fn http1(header: Duration, idle: Duration) -> (DuplexStream, ClientIo<DuplexStream>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let io = ClientIo::new(
        server,
        Bytes::new(),
        ConnShared::new(),
        Some(FramingInspector::new(64 * 1024)),
        header,
        idle,
        Instant::now(),
    );
    (client, io)
}

/// Reads one whole request and answers it, as hyper would.
async fn serve_one(client: &mut DuplexStream, io: &mut ClientIo<DuplexStream>) {
    client.write_all(REQUEST).await.unwrap();
    let mut buf = [0u8; 256];
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], REQUEST);
    io.shared.begin_request();
    io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    io.shared.end_request();
}

/// How long until `io` reports the end of the connection (a read of 0).
async fn time_to_close(io: &mut ClientIo<DuplexStream>) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(120), io.read(&mut buf))
        .await
        .expect("connection closed by a timeout")
        .unwrap();
    assert_eq!(n, 0, "read data instead of the end");
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_at_client_idle_shorter_than_client_header() {
    let (mut client, mut io) = http1(Duration::from_secs(10), Duration::from_secs(1));
    serve_one(&mut client, &mut io).await;
    let closed = time_to_close(&mut io).await;
    assert!(
        closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_outlives_a_shorter_client_header() {
    let (mut client, mut io) = http1(Duration::from_secs(1), Duration::from_secs(3));
    serve_one(&mut client, &mut io).await;
    let closed = time_to_close(&mut io).await;
    assert!(closed >= Duration::from_secs(3), "closed after {closed:?}");
    assert!(
        closed < Duration::from_millis(3500),
        "closed after {closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_started_next_head_is_under_client_header_not_client_idle() {
    let (mut client, mut io) = http1(Duration::from_secs(1), Duration::from_secs(10));
    serve_one(&mut client, &mut io).await;
    // Idle for 2 s with a read pending, as hyper keeps one.
    let mut buf = [0u8; 256];
    let idle = tokio::time::timeout(Duration::from_secs(2), io.read(&mut buf)).await;
    assert!(idle.is_err(), "closed while idle for less than client_idle");
    client.write_all(b"GET /next HT").await.unwrap();
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET /next HT");
    let closed = time_to_close(&mut io).await;
    assert!(
        closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
    assert!(io.shared.header_timed_out());
    let mut answer = Vec::new();
    drop(io);
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("HTTP/1.1 408"), "{answer}");
}

/// Accepts every write into an endless buffer; the flush never completes
/// (a TLS stream whose client stopped reading).
struct StuckFlush;

impl AsyncRead for StuckFlush {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for StuckFlush {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test(start_paused = true)]
async fn a_flush_that_makes_no_progress_fails_after_client_idle() {
    let mut io = ClientIo::new(
        StuckFlush,
        Bytes::new(),
        ConnShared::new(),
        None,
        Duration::from_secs(10),
        Duration::from_secs(1),
        Instant::now(),
    );
    io.write_all(b"frames").await.unwrap();
    let start = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(120), io.flush())
        .await
        .expect("the stalled flush ends");
    let err = r.expect_err("a stalled flush is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(start.elapsed() < Duration::from_millis(1500));
}
