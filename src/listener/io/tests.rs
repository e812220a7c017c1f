//! [`ClientIo`]'s timers on a paused clock: a duplex pipe plays the client,
//! the test plays hyper's HTTP/2 server (reads, marks a stream in flight, ends it).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;

use super::{ClientIo, ConnShared};

const FRAMES: &[u8] = b"frames";

fn h2(header: Duration, idle: Duration) -> (DuplexStream, ClientIo<DuplexStream>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let io = ClientIo::new(
        server,
        Bytes::new(),
        ConnShared::new(),
        header,
        idle,
        Instant::now(),
    );
    (client, io)
}

/// Reads one batch of frames and answers it, as hyper would.
async fn serve_one(client: &mut DuplexStream, io: &mut ClientIo<DuplexStream>) {
    client.write_all(FRAMES).await.unwrap();
    let mut buf = [0u8; 256];
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], FRAMES);
    io.shared.begin_request();
    io.write_all(b"answer").await.unwrap();
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
async fn a_silent_connection_closes_at_client_header() {
    let (_client, mut io) = h2(Duration::from_secs(2), Duration::from_secs(10));
    let closed = time_to_close(&mut io).await;
    assert!(
        closed >= Duration::from_secs(2) && closed < Duration::from_millis(2500),
        "{closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_closes_at_client_idle_shorter_than_client_header() {
    let (mut client, mut io) = h2(Duration::from_secs(10), Duration::from_secs(1));
    serve_one(&mut client, &mut io).await;
    let closed = time_to_close(&mut io).await;
    assert!(
        closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_outlives_a_shorter_client_header() {
    let (mut client, mut io) = h2(Duration::from_secs(1), Duration::from_secs(3));
    serve_one(&mut client, &mut io).await;
    let closed = time_to_close(&mut io).await;
    assert!(closed >= Duration::from_secs(3), "closed after {closed:?}");
    assert!(
        closed < Duration::from_millis(3500),
        "closed after {closed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_in_flight_keeps_the_connection_open() {
    let (mut client, mut io) = h2(Duration::from_secs(1), Duration::from_secs(1));
    client.write_all(FRAMES).await.unwrap();
    let mut buf = [0u8; 256];
    let _ = io.read(&mut buf).await.unwrap();
    io.shared.begin_request();
    let waited = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
    assert!(waited.is_err(), "closed while a response was in flight");
    io.shared.end_request();
    let closed = time_to_close(&mut io).await;
    assert!(
        closed < Duration::from_millis(1500),
        "closed after {closed:?}"
    );
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
