//! One HTTP/1.1 client connection: heads in, responses out, in order.
//!
//! The loop reads a request head ([`head::parse`]), hands the request to
//! [`proxy::handle`] with a body that reads straight off this connection
//! ([`RequestBody`]), writes the response head ([`encode`]) and streams the
//! body, then goes for the next head — which may already be in the buffer
//! (pipelining: requests are answered one after the other, in order). It owns
//! every client timer of an HTTP/1.1 connection:
//! - `client_header`: a head must be complete within this time of its first
//!   byte (of the accept, for the first request) -> 408 and close;
//! - `client_idle`: a connection with no request for this long after its
//!   last response is closed quietly; a write that cannot progress for this
//!   long (a client that does not read) ends the connection.
//!
//! A refused head gets its 400/431 answer, is counted and logged, and the
//! connection closes. A body the server did not read (an early answer) is
//! read and dropped after the response, within limits, so the connection
//! stays usable; otherwise it closes. A `101` hands the stream to the tunnel.
//! Between requests the connection gives its read buffer back to the
//! worker's pool.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{header, Method, Request, StatusCode, Version};
use http_body::Body as _;
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, Sleep};

use super::decode::{BodyDecoder, Piece};
use super::encode::{self, Exchange, Framing};
use super::head::{self, HeadError, RequestHead};
use super::wire::{ClientStream, RequestBody, Shared, Wire};
use crate::listener::context::Worker;
use crate::listener::http::body::ProxyBody;
use crate::listener::http::headers;
use crate::listener::http::proxy::{self, ConnInfo};
use crate::listener::http::upgrade::Upgraded;
use crate::listener::io::timeout_response;
use crate::listener::ratelog;
use crate::upstream::h1::{chunked, ClientBody};

/// How long a connection that has sent nothing may still start its first
/// request once its listener stops.
const STOP_GRACE: Duration = Duration::from_millis(250);
/// Longest time spent reading and dropping a request body nobody read, and
/// the longest wait for each piece of it (nginx's `lingering_time` and
/// `lingering_timeout`).
const DISCARD_FOR: Duration = Duration::from_secs(30);
const DISCARD_IDLE: Duration = Duration::from_secs(5);
/// After a close, how long the client may still send before the socket goes
/// (so unread input does not turn the close into a reset that loses the
/// answer), and how much of it is read.
const LINGER_FOR: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// Why no request head came.
enum NoHead {
    /// The client closed, the connection idled out, or the listener stopped.
    Quiet,
    /// `client_header` passed with a head incomplete (or none at all yet).
    Timeout,
    Refused(HeadError),
}

/// What happens after a response.
#[derive(Debug, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending what nobody will read:
    /// linger so the answer is not lost to a reset.
    CloseLingering,
    /// The stream went to an upgrade tunnel.
    Gone,
}

/// One connection's loop.
pub struct Conn<S> {
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    wire: Shared<S>,
    stop: watch::Receiver<bool>,
    /// The read and write timer, moved rather than recreated.
    timer: Pin<Box<Sleep>>,
    requests: u64,
}

impl<S: ClientStream> Conn<S> {
    pub fn new(
        worker: Rc<Worker>,
        info: Rc<ConnInfo>,
        wire: Shared<S>,
        stop: watch::Receiver<bool>,
        first_deadline: Instant,
    ) -> Self {
        Self {
            worker,
            info,
            wire,
            stop,
            timer: Box::pin(tokio::time::sleep_until(first_deadline)),
            requests: 0,
        }
    }

    /// Serves requests until the connection ends. Between requests the
    /// loop waits for bytes in a small state of its own; reading a head,
    /// forwarding and answering run in a boxed state that exists only while
    /// there is a request, so an idle connection holds little. Rare paths
    /// with timers of their own (the close, a 408) are boxed for the same
    /// reason: a future is as large as its largest state.
    pub async fn run(mut self, started: Instant) {
        let mut idle_since = started;
        loop {
            let first = self.requests == 0;
            let end = match self.wait_bytes(first, idle_since).await {
                Some(end) => end,
                None => Box::pin(self.one_request(first, idle_since)).await,
            };
            match end {
                After::KeepAlive => {
                    self.release_buf();
                    idle_since = Instant::now();
                }
                After::Close => return Box::pin(self.close(false)).await,
                After::CloseLingering => return Box::pin(self.close(true)).await,
                After::Gone => return,
            }
        }
    }

    /// Waits, holding no buffer, until the next head's first bytes can be
    /// read; `Some` when the connection ends instead (idle or header time
    /// out, listener stopped). Streams that cannot wait without a buffer
    /// (TLS) and buffered bytes go straight on.
    async fn wait_bytes(&mut self, first: bool, idle_since: Instant) -> Option<After> {
        if !S::WAITS_WITHOUT_BUFFER || !self.wire.borrow().buf.is_empty() {
            return None;
        }
        // Readiness can be stale (the last read did not drain the socket's
        // readiness): only bytes actually read count.
        match poll_fn(|cx| Poll::Ready(try_read(&self.wire, &self.worker, cx))).await {
            Some(Ok(0)) | Some(Err(_)) => return Some(After::Close),
            Some(Ok(_)) => return None,
            None => {}
        }
        let t = self.info.listener.config.timeouts;
        let deadline = if first {
            idle_since + t.client_header
        } else {
            idle_since + t.client_idle
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        let mut stop = self.stop.clone();
        let (wire, worker) = (&self.wire, &self.worker);
        let read = || {
            poll_fn(move |cx| loop {
                match wire.borrow().poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                // A read that finds nothing clears the readiness: wait again.
                if let Some(r) = try_read(wire, worker, cx) {
                    return Poll::Ready(r);
                }
            })
        };
        let got = tokio::select! {
            biased;
            r = read() => r,
            () = self.timer.as_mut() => {
                return Some(if first { Box::pin(self.timed_out()).await } else { After::Close });
            }
            _ = stop.wait_for(|s| *s) => {
                // A kept-alive connection between requests closes now; the
                // first request of a new one gets a short grace.
                if !first {
                    return Some(After::Close);
                }
                // The same timer, moved to the grace: no second one in the
                // state every idle connection holds.
                let grace = Instant::now() + STOP_GRACE;
                if grace < self.timer.deadline() {
                    self.timer.as_mut().reset(grace);
                }
                tokio::select! {
                    biased;
                    r = read() => r,
                    () = self.timer.as_mut() => return Some(After::Close),
                }
            }
        };
        match got {
            Ok(0) | Err(_) => Some(After::Close),
            Ok(_) => None,
        }
    }

    /// Reads one head and serves its request.
    async fn one_request(&mut self, first: bool, idle_since: Instant) -> After {
        let t = self.info.listener.config.timeouts;
        match self
            .read_head(first, idle_since, t.client_header, t.client_idle)
            .await
        {
            Ok(head) => {
                self.requests += 1;
                self.exchange(head).await
            }
            Err(NoHead::Quiet) => After::Close,
            Err(NoHead::Timeout) => self.timed_out().await,
            Err(NoHead::Refused(e)) => {
                self.refusal(e.reason(), e.status());
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let _ = self.write_all(&mut &local_answer(status)[..]).await;
                After::CloseLingering
            }
        }
    }

    /// Answers a head that did not arrive within `client_header`: 408,
    /// counted; the slow client is cut, not waited for.
    async fn timed_out(&mut self) -> After {
        self.refusal("client_header", 408);
        let _ = self.write_all(&mut timeout_response()).await;
        After::Close
    }

    fn release_buf(&self) {
        if let Ok(mut w) = self.wire.try_borrow_mut() {
            w.release_buf(&self.worker.bufs);
        }
    }

    fn refusal(&self, reason: &'static str, status: u16) {
        let l = &self.info.listener;
        l.state.metrics.rejected(reason);
        ratelog::log_refusal(&l.config.name, Some(self.info.peer), reason, status);
    }

    /// Reads until a whole head is buffered. The first request's head is
    /// timed from the accept; a later one waits `client_idle` for its first
    /// byte, then `client_header` for the rest.
    async fn read_head(
        &mut self,
        first: bool,
        idle_since: Instant,
        header: Duration,
        idle: Duration,
    ) -> Result<RequestHead, NoHead> {
        let mut head_started: Option<Instant> = None;
        let mut stopping = false;
        loop {
            let buffered = {
                let mut w = self.wire.borrow_mut();
                if !w.buf.is_empty() {
                    match head::parse(&mut w.buf) {
                        Ok(Some(h)) => {
                            // Nothing after the head yet: the buffer is not
                            // held while the request is forwarded.
                            w.release_buf(&self.worker.bufs);
                            return Ok(h);
                        }
                        Ok(None) => {}
                        Err(e) => return Err(NoHead::Refused(e)),
                    }
                    true
                } else {
                    false
                }
            };
            // Fast path: the bytes are usually there already, and a read
            // needs no timer, stop watch or select.
            if !stopping {
                match poll_fn(|cx| Poll::Ready(try_read(&self.wire, &self.worker, cx))).await {
                    Some(Ok(0)) | Some(Err(_)) => return Err(NoHead::Quiet),
                    Some(Ok(_)) => continue,
                    None => {}
                }
            }
            if buffered && head_started.is_none() {
                // The first head's budget runs from the accept.
                head_started = Some(if first { idle_since } else { Instant::now() });
            }
            // Which limit applies now, and what its end means.
            let (deadline, timeout) = match head_started {
                Some(at) => (at + header, NoHead::Timeout),
                None if first => (idle_since + header, NoHead::Timeout),
                None => (idle_since + idle, NoHead::Quiet),
            };
            let deadline = if stopping && !buffered {
                deadline.min(Instant::now() + STOP_GRACE)
            } else {
                deadline
            };
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            let mut stop = self.stop.clone();
            let read = read_more(&self.wire, &self.worker, !buffered);
            tokio::select! {
                biased;
                r = read => match r {
                    Ok(0) => {
                        // Closed: mid-head it is a client that gave up.
                        return Err(NoHead::Quiet);
                    }
                    Ok(_) => {}
                    Err(_) => return Err(NoHead::Quiet),
                },
                () = self.timer.as_mut() => {
                    if stopping && !buffered {
                        return Err(NoHead::Quiet);
                    }
                    return Err(timeout);
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    // A kept-alive connection between requests closes now; the
                    // first request of a new one gets a short grace; a head
                    // in progress may finish.
                    if !first && !buffered {
                        return Err(NoHead::Quiet);
                    }
                    stopping = true;
                }
            }
        }
    }

    /// One request: forwarded, answered, and its leftovers dealt with.
    async fn exchange(&mut self, head: RequestHead) -> After {
        let RequestHead {
            method,
            uri,
            version,
            headers: req_headers,
            body,
            keep_alive,
            expect_continue,
        } = head;
        let ex = Exchange {
            version,
            head_request: method == Method::HEAD,
        };
        let id = self.requests;
        let has_body = body != head::BodyKind::None;
        self.wire
            .borrow_mut()
            .start_body(id, BodyDecoder::new(body), expect_continue);
        let upgrade = (version == Version::HTTP_11 && headers::is_upgrade_request(&req_headers))
            .then(oneshot::channel::<Upgraded>);
        let (upgrade_tx, upgrade_rx) = match upgrade {
            Some((tx, rx)) => (Some(tx), Some(rx)),
            None => (None, None),
        };
        let client_body = if has_body {
            ClientBody::conn(Box::pin(RequestBody::new(
                self.wire.clone(),
                self.worker.clone(),
                id,
            )))
        } else {
            ClientBody::empty()
        };
        let mut req = Request::new(client_body);
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = req_headers;
        // Boxed: the request's state is kilobytes; moved around unboxed it
        // would be copied at every step into the futures that wait on it.
        let handle = Box::pin(proxy::handle(
            self.worker.clone(),
            self.info.clone(),
            req,
            upgrade_rx,
        ));
        let Some(resp) = watch_client(&self.wire, &self.worker, handle).await else {
            // The client went away: the request is dropped wherever it was
            // (queued, connecting, waiting for the server).
            return After::Close;
        };
        // The loop owns the rest of the body from here on.
        self.wire.borrow_mut().end_body_ownership();

        let stopping = *self.stop.borrow();
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let said_close = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let upgrading = status == StatusCode::SWITCHING_PROTOCOLS && upgrade_tx.is_some();
        let exact = body.size_hint().exact();
        let framing = if upgrading {
            Framing::Empty
        } else {
            encode::framing(ex, status, &parts.headers, exact)
        };
        let body_left = {
            let w = self.wire.borrow();
            w.body.is_failed() || (!w.body.is_done() && (w.continue_unsent() || w.eof))
        };
        let close = !keep_alive || stopping || said_close || framing == Framing::Close || body_left;
        let mut out = Vec::with_capacity(256);
        encode::write_head(
            &mut out,
            ex,
            status,
            &parts.headers,
            framing,
            close && !upgrading,
        );
        drop(parts);

        if upgrading {
            if self.write_all(&mut &out[..]).await.is_err() {
                return After::Close;
            }
            let (io, early) = {
                let mut w = self.wire.borrow_mut();
                let early = w.buf.split().freeze();
                (w.take_io(), early)
            };
            if let (Some(io), Some(tx)) = (io, upgrade_tx) {
                let _ = tx.send(Upgraded {
                    io: Box::new(io),
                    early,
                });
            }
            return After::Gone;
        }
        drop(upgrade_tx);

        if self.send_body(&mut out, &mut body, framing).await.is_err() {
            return After::Close;
        }
        drop(body);
        if close {
            let unread = !self.wire.borrow().body.is_done();
            return if unread {
                After::CloseLingering
            } else {
                After::Close
            };
        }
        // Whatever the server did not read of the upload is read and dropped,
        // so the next request can be found.
        if self.discard_body().await {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    /// Writes the head in `out` and then the body, framed by `framing`.
    /// The head goes out together with the first piece of the body when
    /// that is ready at once.
    async fn send_body(
        &mut self,
        out: &mut Vec<u8>,
        body: &mut ProxyBody,
        framing: Framing,
    ) -> io::Result<()> {
        let mut head = Some(std::mem::take(out));
        let chunked = framing == Framing::Chunked;
        let mut line = Vec::new();
        loop {
            if framing == Framing::Empty {
                break;
            }
            let frame = match &head {
                // Try the first piece without waiting, to send it with the head.
                Some(_) => {
                    match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                        Poll::Ready(f) => f,
                        Poll::Pending => {
                            if let Some(h) = head.take() {
                                self.write_all(&mut &h[..]).await?;
                                self.flush().await?;
                            }
                            poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                        }
                    }
                }
                None => poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await,
            };
            let h = head.take().unwrap_or_default();
            match frame {
                None => {
                    if chunked {
                        self.write_all(&mut Buf::chain(&h[..], &b"0\r\n\r\n"[..]))
                            .await?;
                    } else {
                        self.write_all(&mut &h[..]).await?;
                    }
                    return self.flush().await;
                }
                Some(Err(_)) => {
                    // A server body that broke: the client must see an
                    // incomplete response, so the connection closes.
                    if !h.is_empty() {
                        let _ = self.write_all(&mut &h[..]).await;
                    }
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {
                        if !h.is_empty() {
                            self.write_all(&mut &h[..]).await?;
                        }
                    }
                    Ok(data) => {
                        if chunked {
                            line.clear();
                            chunked::size_line(data.len(), &mut line);
                            let mut bufs = Buf::chain(
                                Buf::chain(Buf::chain(&h[..], &line[..]), data),
                                &b"\r\n"[..],
                            );
                            self.write_all(&mut bufs).await?;
                        } else {
                            self.write_all(&mut Buf::chain(&h[..], data)).await?;
                        }
                        if body.is_end_stream() {
                            if chunked {
                                self.write_all(&mut &b"0\r\n\r\n"[..]).await?;
                            }
                            return self.flush().await;
                        }
                    }
                    Err(frame) => {
                        // Trailers end a chunked body; other framings drop them.
                        let mut tail = Vec::new();
                        if chunked {
                            tail.extend_from_slice(b"0\r\n");
                            if let Some(trailers) = frame.trailers_ref() {
                                for (name, value) in trailers {
                                    tail.extend_from_slice(name.as_str().as_bytes());
                                    tail.extend_from_slice(b": ");
                                    tail.extend_from_slice(value.as_bytes());
                                    tail.extend_from_slice(b"\r\n");
                                }
                            }
                            tail.extend_from_slice(b"\r\n");
                        }
                        self.write_all(&mut Buf::chain(&h[..], &tail[..])).await?;
                        return self.flush().await;
                    }
                },
            }
        }
        if let Some(h) = head {
            self.write_all(&mut &h[..]).await?;
        }
        self.flush().await
    }

    /// Reads and drops what is left of the request body; `false` when it
    /// cannot be (malformed, too slow, too long, or the client closed).
    async fn discard_body(&mut self) -> bool {
        if self.wire.borrow().body.is_done() {
            return true;
        }
        let until = Instant::now() + DISCARD_FOR;
        loop {
            let piece = poll_fn(|cx| {
                let mut w = self.wire.borrow_mut();
                w.poll_piece(cx, &self.worker.bufs)
            });
            match tokio::time::timeout(DISCARD_IDLE, piece).await {
                Ok(Ok(Piece::Data(_))) if Instant::now() < until => {}
                Ok(Ok(Piece::End)) => return true,
                _ => return false,
            }
        }
    }

    /// Writes all of `buf` under the write-stall limit: a write that cannot
    /// progress for `client_idle` fails.
    async fn write_all<B: Buf>(&mut self, buf: &mut B) -> io::Result<()> {
        while buf.has_remaining() {
            let n = self
                .stalled(|w, cx| {
                    let mut slices = [IoSlice::new(&[]); 8];
                    let k = buf.chunks_vectored(&mut slices);
                    w.poll_write_vectored(cx, slices.get(..k).unwrap_or_default())
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf.advance(n);
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.stalled(|w, cx| w.poll_flush(cx)).await
    }

    /// One IO operation under the write-stall limit. The timer is set only
    /// when the operation has to wait.
    async fn stalled<T>(
        &mut self,
        mut op: impl FnMut(&mut Wire<S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> io::Result<T> {
        let idle = self.info.listener.config.timeouts.client_idle;
        let mut armed = false;
        let wire = self.wire.clone();
        let worker = self.worker.clone();
        let timer = &mut self.timer;
        poll_fn(|cx| {
            let mut w = wire.borrow_mut();
            match op(&mut w, cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => {
                    // A client still sending a body nobody reads may be
                    // blocked on that before it reads this answer: take
                    // (and drop) what it sends meanwhile.
                    if !w.body.is_done() && !w.body.is_failed() && !w.eof && !w.continue_unsent() {
                        while let Poll::Ready(Ok(Piece::Data(_))) = w.poll_piece(cx, &worker.bufs) {
                        }
                    }
                    if !armed {
                        armed = true;
                        timer.as_mut().reset(Instant::now() + idle);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        tracing::debug!("client stopped reading: write timed out");
                        return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Closes our side; with `linger`, reads (and drops) what the client
    /// still sends for a short while, so the answer is not lost to a reset.
    async fn close(self, linger: bool) {
        let Conn { worker, wire, .. } = self;
        let linger = async {
            poll_fn(|cx| wire.borrow_mut().poll_shutdown(cx)).await?;
            if !linger {
                return Ok(());
            }
            let mut read = 0usize;
            while read < LINGER_BYTES {
                let n = poll_fn(|cx| {
                    let mut w = wire.borrow_mut();
                    w.buf.clear();
                    w.ensure_buf(&worker.bufs);
                    w.poll_fill(cx)
                })
                .await?;
                if n == 0 {
                    break;
                }
                read += n;
            }
            Ok::<(), io::Error>(())
        };
        let _ = tokio::time::timeout(LINGER_FOR, linger).await;
        let released = match wire.try_borrow_mut() {
            Ok(mut w) => {
                w.buf.clear();
                w.release_buf(&worker.bufs);
                true
            }
            Err(_) => false,
        };
        debug_assert!(released);
    }
}

/// Reads once. With an empty buffer it first waits for the socket to be
/// readable, so a connection waiting for its next request holds no buffer.
async fn read_more<S: ClientStream>(
    wire: &Shared<S>,
    worker: &Worker,
    empty: bool,
) -> io::Result<usize> {
    let empty = empty && S::WAITS_WITHOUT_BUFFER;
    loop {
        if empty {
            poll_fn(|cx| wire.borrow().poll_read_ready(cx)).await?;
        }
        let got = poll_fn(|cx| {
            let mut w = wire.borrow_mut();
            w.ensure_buf(&worker.bufs);
            match w.poll_fill(cx) {
                Poll::Pending if empty => {
                    // Readiness was stale: hand the buffer back and wait.
                    w.release_buf(&worker.bufs);
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => Poll::Ready(Some(r)),
            }
        })
        .await;
        if let Some(r) = got {
            return r;
        }
    }
}

/// One read attempt that does not wait: `None` when nothing can be read now
/// (a buffer taken for it goes back when it stays empty).
fn try_read<S: ClientStream>(
    wire: &Shared<S>,
    worker: &Worker,
    cx: &mut Context<'_>,
) -> Option<io::Result<usize>> {
    let mut w = wire.borrow_mut();
    if S::WAITS_WITHOUT_BUFFER && w.buf.is_empty() && w.poll_read_ready(cx).is_pending() {
        return None;
    }
    w.ensure_buf(&worker.bufs);
    match w.poll_fill(cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => {
            w.release_buf(&worker.bufs);
            None
        }
    }
}

/// Runs `handle` while watching the client: once its request body is in,
/// a client that closes its connection ends the request (`None`). Bytes that
/// arrive meanwhile (a pipelined request) stay buffered for later, up to
/// one head's worth; beyond that the client is no longer watched.
async fn watch_client<S, F>(
    wire: &Shared<S>,
    worker: &Worker,
    mut handle: Pin<Box<F>>,
) -> Option<F::Output>
where
    S: ClientStream,
    F: Future,
{
    poll_fn(|cx| {
        if let Poll::Ready(r) = handle.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        loop {
            let mut w = wire.borrow_mut();
            if !w.body.is_done() || w.eof || w.buf.len() >= head::MAX_HEAD {
                // The body is still the request's to read (watched again
                // when it is in), or there is nothing more to watch.
                break;
            }
            if w.buf.is_empty() && w.poll_read_ready(cx).is_pending() {
                break;
            }
            w.ensure_buf(&worker.bufs);
            match w.poll_fill(cx) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => {
                    w.release_buf(&worker.bufs);
                    break;
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// A short answer the connection loop writes itself (400, 431), closing.
fn local_answer(status: StatusCode) -> Vec<u8> {
    let text: &[u8] = match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => b"request header fields too large\n",
        _ => b"bad request\n",
    };
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(text);
    out
}
