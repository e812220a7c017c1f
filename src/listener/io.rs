//! The client side of a connection: bytes in and out, with the client timeouts.
//!
//! [`ClientIo`] wraps the accepted stream (plain TCP or TLS) for hyper and owns
//! every client-facing timer, because hyper's own header timeout closes the
//! connection without the 408 a slow client must get:
//! - `client_header`: a request head must arrive in full within this time of its
//!   first byte (or of accept, for the first request) -> `408` and close;
//! - `client_idle`: a keep-alive connection with no request in flight and no
//!   bytes for this long after its last response is closed quietly, whatever
//!   `client_header` is (a client that starts the next head is under
//!   `client_header` again); a write, flush or shutdown that cannot progress
//!   for this long (a client that never reads) fails the connection, for
//!   HTTP/1.1, h2c and h2 over TLS alike.
//!
//! It also feeds the HTTP/1 [`FramingInspector`] and replays bytes that were
//! read ahead to detect the HTTP/2 preface. Shared with the HTTP service through
//! [`ConnShared`]: the service marks requests in flight so the idle timer never
//! fires during a slow response, and takes the inspector's verdicts.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::{FramingInspector, Verdict};

const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 16\r\nconnection: close\r\n\r\nrequest timeout\n";

/// State shared between a connection's IO and its HTTP service.
///
/// Atomics in an `Arc` because hyper's upgrade support needs a `Send` IO; both
/// sides run on the same worker thread, so every access is uncontended.
#[derive(Default)]
pub struct ConnShared {
    /// Requests whose response has not finished yet.
    pub in_flight: AtomicUsize,
    /// Requests the service has taken a verdict for.
    requests: AtomicU64,
    /// Heads the inspector has finished.
    heads: AtomicU64,
    /// 1 + index of the head that was refused, 0 when none (after a refused
    /// head the inspector stops, so there is at most one).
    flagged: AtomicU64,
    flagged_kind: AtomicU8,
    /// Set when the connection was answered 408 (`client_header`), so the
    /// connection's end can be counted as a refusal.
    header_timed_out: AtomicBool,
}

impl ConnShared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The framing verdict of the next request, in arrival order.
    pub fn next_verdict(&self) -> Verdict {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        if self.flagged.load(Ordering::Relaxed) == index + 1 {
            match self.flagged_kind.load(Ordering::Relaxed) {
                1 => Verdict::ContentLengthAndTransferEncoding,
                _ => Verdict::BareLf,
            }
        } else {
            Verdict::Clean
        }
    }

    fn record(&self, v: Verdict) {
        let index = self.heads.fetch_add(1, Ordering::Relaxed);
        let kind = match v {
            Verdict::Clean => return,
            Verdict::ContentLengthAndTransferEncoding => 1,
            Verdict::BareLf => 2,
        };
        if self.flagged.load(Ordering::Relaxed) == 0 {
            self.flagged_kind.store(kind, Ordering::Relaxed);
            self.flagged.store(index + 1, Ordering::Relaxed);
        }
    }

    /// True when [`ClientIo`] answered this connection 408.
    pub fn header_timed_out(&self) -> bool {
        self.header_timed_out.load(Ordering::Relaxed)
    }

    pub fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Phase {
    Open,
    /// Writing the 408 response; offset into `RESPONSE_408`.
    Rejecting(usize),
    Closed,
}

/// A client stream with timeouts, read-ahead replay and framing inspection.
pub struct ClientIo<S> {
    inner: S,
    prefix: Bytes,
    shared: Arc<ConnShared>,
    /// HTTP/1 only: follows request boundaries (see `framing`).
    inspector: Option<FramingInspector>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Read deadline: header or idle, whichever applies now. Moving it is a
    /// plain store; the timer is re-armed only when it fires early, so a busy
    /// connection does not touch the timer wheel on every read.
    deadline: Instant,
    read_timer: Pin<Box<Sleep>>,
    /// True once any request has been seen (the first gets the header timeout
    /// from accept; later ones wait idle first).
    first_request_pending: bool,
    /// True when `read_timer` currently measures a head in progress.
    timing_head: bool,
    write_timer: Option<Pin<Box<Sleep>>>,
    phase: Phase,
    /// Whether a 408 may be written raw on this connection (HTTP/1 only).
    can_reject: bool,
}

impl<S> ClientIo<S> {
    pub fn new(
        inner: S,
        prefix: Bytes,
        shared: Arc<ConnShared>,
        inspector: Option<FramingInspector>,
        header_timeout: Duration,
        idle_timeout: Duration,
        started: Instant,
    ) -> Self {
        let can_reject = inspector.is_some();
        Self {
            inner,
            prefix,
            shared,
            inspector,
            header_timeout,
            idle_timeout,
            deadline: started + header_timeout,
            read_timer: Box::pin(tokio::time::sleep_until(started + header_timeout)),
            first_request_pending: true,
            timing_head: true,
            write_timer: None,
            phase: Phase::Open,
            can_reject,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> ClientIo<S> {
    /// Re-arms the read deadline after bytes arrived.
    fn on_bytes(&mut self, data: &[u8]) {
        if let Some(i) = &mut self.inspector {
            i.feed(data);
            while let Some(v) = i.take_verdict() {
                self.shared.record(v);
            }
        }
        if self.head_in_progress() {
            if !self.timing_head {
                self.timing_head = true;
                self.deadline = Instant::now() + self.header_timeout;
            }
        } else {
            self.first_request_pending = false;
            self.timing_head = false;
            self.deadline = Instant::now() + self.idle_timeout;
        }
        // The timer is moved lazily only towards later deadlines (when it
        // fires early). A deadline that moved earlier — header to a shorter
        // idle time after a request, or idle to a shorter header time when
        // the next head starts — must move the timer now, or the connection
        // would live until the older, later deadline.
        if self.deadline < self.read_timer.deadline() {
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
        }
    }

    fn head_in_progress(&self) -> bool {
        self.inspector
            .as_ref()
            .is_some_and(FramingInspector::head_in_progress)
    }

    /// Checks the read deadline; `Some` when the connection must end now.
    fn poll_read_deadline(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        loop {
            if self.read_timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            if self.deadline <= self.read_timer.deadline() {
                break;
            }
            // Fired for an older deadline: move the timer and register again.
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
        }
        let head = self.timing_head && (self.first_request_pending || self.head_in_progress());
        if self.shared.in_flight.load(Ordering::Relaxed) > 0 && !head {
            // A response is in progress: the client owes us nothing now.
            self.deadline = Instant::now() + self.idle_timeout;
            let d = self.deadline;
            self.read_timer.as_mut().reset(d);
            // Register the new deadline with the waker.
            let _ = self.read_timer.as_mut().poll(cx);
            return None;
        }
        Some(if head { "client_header" } else { "client_idle" })
    }

    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Phase::Rejecting(off) = self.phase {
            let rest = RESPONSE_408.get(off..).unwrap_or_default();
            if rest.is_empty() {
                let _ = Pin::new(&mut self.inner).poll_flush(cx)?;
                let _ = Pin::new(&mut self.inner).poll_shutdown(cx);
                self.phase = Phase::Closed;
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => self.phase = Phase::Closed,
                Poll::Ready(Ok(n)) => self.phase = Phase::Rejecting(off + n),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.phase {
            Phase::Open => {}
            Phase::Rejecting(_) => {
                // EOF once the 408 is out: hyper sees an incomplete head and
                // ends the connection without writing anything of its own.
                return this.poll_reject(cx);
            }
            Phase::Closed => return Poll::Ready(Ok(())),
        }
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            let chunk = this.prefix.split_to(n);
            buf.put_slice(&chunk);
            this.on_bytes(&chunk);
            if this.prefix.is_empty() {
                // An empty slice still pins the sniff buffer: release it, it
                // would otherwise cost every idle connection its size.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if !new.is_empty() {
                    this.on_bytes(new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_read_deadline(cx) {
                None => Poll::Pending,
                Some(which) => {
                    tracing::debug!(timeout = which, "client connection timed out");
                    if which == "client_header" && this.can_reject {
                        this.shared.header_timed_out.store(true, Ordering::Relaxed);
                        this.phase = Phase::Rejecting(0);
                        this.poll_reject(cx)
                    } else {
                        this.phase = Phase::Closed;
                        Poll::Ready(Ok(()))
                    }
                }
            },
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
        if writes && !matches!(self.phase, Phase::Open) {
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
                    self.phase = Phase::Closed;
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
