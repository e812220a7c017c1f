//! The client side of a connection: bytes in and out, with the client timeouts.
//!
//! [`ClientIo`] wraps an HTTP/2 client stream (h2c or h2 over TLS) for hyper
//! and owns its client-facing timers:
//! - `client_header`: a connection that has sent nothing within this time of
//!   its accept is closed;
//! - `client_idle`: a connection with no stream in flight and no bytes for
//!   this long is closed quietly; a write, flush or shutdown that cannot
//!   progress for this long (a client that never reads) fails the connection.
//!
//! It also replays the preface bytes that were read ahead to detect HTTP/2.
//! Shared with the HTTP service through [`ConnShared`]: the service marks
//! requests in flight so the idle timer never fires during a slow response.
//! HTTP/1.1 connections have their own loop with the same rules
//! (`listener::h1::conn`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";

/// State shared between a connection's IO and its HTTP service.
///
/// Atomics in an `Arc` because hyper's HTTP/2 server needs a `Send` IO; both
/// sides run on the same worker thread, so every access is uncontended.
#[derive(Default)]
pub struct ConnShared {
    /// Requests whose response has not finished yet.
    pub in_flight: AtomicUsize,
}

impl ConnShared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An HTTP/2 client stream with timeouts and read-ahead replay.
pub struct ClientIo<S> {
    inner: S,
    prefix: Bytes,
    shared: Arc<ConnShared>,
    idle_timeout: Duration,
    /// Read deadline: the first bytes' (`client_header` from accept), then
    /// idle. Moving it is a plain store; the timer is re-armed only when it
    /// fires early, so a busy connection does not touch the timer wheel on
    /// every read.
    deadline: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    closed: bool,
}

impl<S> ClientIo<S> {
    pub fn new(
        inner: S,
        prefix: Bytes,
        shared: Arc<ConnShared>,
        header_timeout: Duration,
        idle_timeout: Duration,
        started: Instant,
    ) -> Self {
        Self {
            inner,
            prefix,
            shared,
            idle_timeout,
            deadline: started + header_timeout,
            read_timer: Box::pin(tokio::time::sleep_until(started + header_timeout)),
            write_timer: None,
            closed: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// Re-arms the read deadline after bytes arrived.
    fn on_bytes(&mut self) {
        self.deadline = Instant::now() + self.idle_timeout;
        // The timer is moved lazily only towards later deadlines (when it
        // fires early); an earlier one (a client_idle shorter than
        // client_header) must move it now.
        if self.deadline < self.read_timer.deadline() {
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
        }
    }

    /// Checks the read deadline; `true` when the connection must end now.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.read_timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.deadline <= self.read_timer.deadline() {
                break;
            }
            // Fired for an older deadline: move the timer and register again.
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
        }
        if self.shared.in_flight.load(Ordering::Relaxed) > 0 {
            // A response is in progress: the client owes us nothing now.
            self.deadline = Instant::now() + self.idle_timeout;
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
            // Register the new deadline with the waker.
            let _ = self.read_timer.as_mut().poll(cx);
            return false;
        }
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            let chunk = this.prefix.split_to(n);
            buf.put_slice(&chunk);
            this.on_bytes();
            if this.prefix.is_empty() {
                // An empty slice still pins the sniff buffer: release it.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.poll_read_deadline(cx) {
                    tracing::debug!("client connection timed out");
                    this.closed = true;
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// One write, flush or shutdown attempt under the write-stall timeout:
    /// an attempt that cannot progress for `client_idle` (a client that
    /// stopped reading) fails. Flushes count as much as writes: a TLS stream
    /// takes writes into its own buffer and stalls only in the flush, and
    /// HTTP/2 flushes after every batch of frames. `writes` refuses the
    /// attempt once the connection is closed on our side; a flush or a
    /// shutdown still goes through (a TLS close_notify, the FIN).
    fn poll_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        writes: bool,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if writes && self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                let idle = self.idle_timeout;
                let timer = self
                    .write_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    tracing::debug!("client stopped reading: write timed out");
                    self.closed = true;
                    return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                }
                Poll::Pending
            }
            ready => {
                self.write_timer = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_stall(cx, true, |inner, cx| inner.poll_write(cx, data))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_stall(cx, true, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_stall(cx, false, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_stall(cx, false, |inner, cx| inner.poll_shutdown(cx))
    }
}

/// The raw 408 answer for a client that sent no complete head in time.
pub fn timeout_response() -> &'static [u8] {
    RESPONSE_408
}

#[cfg(test)]
mod tests;
