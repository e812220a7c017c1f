//! One HTTP/1.1 connection to a server: write a request, read the answer head.
//!
//! A [`Conn`] is a [`ServerStream`] (TCP, or TLS to the server) plus its read buffer. [`Conn::send`] writes a
//! request head the proxy has already rewritten, streams the client's body
//! (as is when its length is known, chunked otherwise) while watching for an
//! early answer, and returns the first final response head. Informational
//! responses (100 Continue and friends) are skipped. The body is then read by
//! [`super::ResponseBody`], which owns the connection until the body ends.

use std::future::poll_fn;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::chunked;
use super::client_body::ClientBody;
use super::deadline::{self, Deadline, Limits, Wait};
use super::response::{self, Framing, Head};
use crate::bufpool::BufPool;
use crate::upstream::attempt::{ClientFault, Failure};
use crate::upstream::tls::{ServerStream, UpstreamTls};

/// Read buffer size for response heads (and small bodies).
const READ_CHUNK: usize = 8 * 1024;
/// A pooled connection whose buffer grew past this gets a fresh one.
const KEEP_BUFFER: usize = 64 * 1024;

thread_local! {
    /// Read buffers of this worker thread's idle server connections.
    static SPARE: BufPool = BufPool::default();
}

/// Gives `buf` room for a read: a pooled buffer when it has none.
fn refill(buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        *buf = SPARE.with(BufPool::take);
    } else {
        buf.reserve(READ_CHUNK);
    }
}

/// A connection to a server, idle or in use.
#[derive(Debug)]
pub struct Conn {
    pub(super) stream: ServerStream,
    /// Bytes read and not yet consumed.
    pub(super) buf: BytesMut,
    /// True once a response has been read on this connection.
    reused: bool,
    /// Identity of the upstream TLS client it was made with (0: plain), so a
    /// reload that changes `tls` does not reuse connections made before it.
    tls_id: usize,
    /// The exchange's timer (see [`super::deadline`]), then the body's read
    /// timer, kept across requests: moving a registered timer to a later
    /// deadline is one atomic store, where a new timer per request is an
    /// insert into and a removal from the timer wheel.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
}

/// The client's request body and how it is framed on the way out.
#[derive(Debug)]
pub enum ReqBody {
    /// No body (the head says nothing about one, or `Content-Length: 0`).
    None,
    /// The head carries `Content-Length`: bytes go out as they come.
    Length(ClientBody),
    /// The head carries `Transfer-Encoding: chunked`.
    Chunked(ClientBody),
}

impl ReqBody {
    fn take(&mut self) -> Option<(ClientBody, bool)> {
        match std::mem::replace(self, ReqBody::None) {
            ReqBody::None => None,
            ReqBody::Length(b) => Some((b, false)),
            ReqBody::Chunked(b) => Some((b, true)),
        }
    }
}

/// Whether a failed request may go out again on another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Nothing of the request was sent (connect failed, or the head could
    /// not be written to a pooled connection): any request may be sent again,
    /// its body came back in [`SendError::body`].
    Unsent,
    /// A pooled connection was closed by the server without a byte of
    /// answer after the head was written: the keep-alive race. Safe to send
    /// again only for an idempotent request without a body.
    Unanswered,
    /// The server may have acted on the request.
    No,
}

/// Why an exchange failed.
#[derive(Debug)]
pub struct SendError {
    pub failure: Failure,
    pub replay: Replay,
    /// The body, when not a byte of it was consumed.
    pub body: ReqBody,
}

impl SendError {
    fn new(failure: Failure) -> Self {
        Self {
            failure,
            replay: Replay::No,
            body: ReqBody::None,
        }
    }
}

impl Conn {
    /// Connects to the first address that accepts within `timeout` in total
    /// (TCP and, with `tls`, the handshake with `host`).
    pub async fn connect(
        addrs: impl Iterator<Item = SocketAddr>,
        host: &str,
        tls: Option<&UpstreamTls>,
        timeout: Duration,
    ) -> Result<Conn, Failure> {
        let stream = crate::upstream::tls::connect(addrs, host, tls, timeout).await?;
        Ok(Conn {
            stream,
            buf: BytesMut::new(),
            reused: false,
            tls_id: tls_id(tls),
            timer: None,
        })
    }

    /// True when this connection was made with `tls` (the same client, or
    /// plain for plain).
    pub fn made_with(&self, tls: Option<&UpstreamTls>) -> bool {
        self.tls_id == tls_id(tls)
    }

    /// Gives the read buffer back while the connection waits in the pool
    /// (it holds nothing between responses).
    pub fn park(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            SPARE.with(|p| p.give(std::mem::take(&mut self.buf)));
        }
    }

    /// True when an idle connection can carry a request: the server has not
    /// closed it and sent nothing unasked. Costs no syscall while the socket
    /// has shown no readiness since the last read.
    pub fn is_usable(&self) -> bool {
        self.stream.is_usable()
    }

    /// Prepares a connection whose response has ended for the pool. `false`
    /// when it must not be reused (the server sent more than the response).
    pub(super) fn recycle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
        self.reused = true;
        true
    }

    /// The socket and any bytes already read past the head (for tunnels).
    pub fn into_parts(self) -> (ServerStream, Bytes) {
        (self.stream, self.buf.freeze())
    }

    /// Sends one request and reads the response head, under `limits`: the
    /// server must take each piece of the request and, once the request has
    /// been sent, answer within `limits.response`; the client must send each
    /// piece of its body within `limits.client_idle` (see [`deadline`]).
    ///
    /// [`deadline`]: super::deadline
    pub async fn send(
        &mut self,
        limits: Limits,
        head: &[u8],
        body: ReqBody,
        head_request: bool,
        upgrade_request: bool,
    ) -> Result<Head, SendError> {
        let deadline = Deadline::new(limits, Instant::now());
        let mut timer = match self.timer.take() {
            Some(mut t) => {
                t.as_mut().reset(deadline.at());
                t
            }
            None => Box::pin(tokio::time::sleep_until(deadline.at())),
        };
        let exchange = self.exchange(&deadline, head, body, head_request, upgrade_request);
        let result = deadline::timed(&deadline, &mut timer, exchange).await;
        self.timer = Some(timer);
        result.unwrap_or_else(|failure| Err(SendError::new(failure)))
    }

    async fn exchange(
        &mut self,
        deadline: &Deadline,
        head: &[u8],
        mut body: ReqBody,
        head_request: bool,
        upgrade_request: bool,
    ) -> Result<Head, SendError> {
        if let Err(e) = self.stream.write_all(head).await {
            // Nothing reached a server that closed this pooled connection.
            let failure = if self.reused {
                Failure::Reset
            } else {
                Failure::ConnectError
            };
            tracing::debug!(error = %e, "writing a request head failed");
            return Err(SendError {
                failure,
                replay: if self.reused {
                    Replay::Unsent
                } else {
                    Replay::No
                },
                body,
            });
        }
        let reused = self.reused;
        let Some((incoming, chunked)) = body.take() else {
            deadline.wait(Wait::Response, Instant::now());
            return read_head(
                &mut self.stream,
                &mut self.buf,
                head_request,
                upgrade_request,
            )
            .await
            .map_err(|(failure, nothing_read)| SendError {
                failure,
                replay: if reused && nothing_read && failure == Failure::Reset {
                    Replay::Unanswered
                } else {
                    Replay::No
                },
                body: ReqBody::None,
            });
        };
        // Stream the body while watching for an early answer.
        let mut incoming = incoming;
        let mut uploading = true;
        let mut in_step = true;
        let head = {
            let (mut rd, mut wr) = self.stream.split();
            let upload = write_body(&mut wr, &mut incoming, chunked, deadline);
            let answer = read_head(&mut rd, &mut self.buf, head_request, upgrade_request);
            tokio::pin!(upload, answer);
            loop {
                tokio::select! {
                    biased;
                    sent = &mut upload, if uploading => {
                        uploading = false;
                        // The request is sent (or cannot be): the server's
                        // turn to answer starts now.
                        deadline.wait(Wait::Response, Instant::now());
                        match sent {
                            Ok(()) => {}
                            Err(Upload::Client(fault)) => {
                                return Err(SendError::new(Failure::Client(fault)))
                            }
                            // The server may still answer (e.g. 413 then close).
                            Err(Upload::Server) => in_step = false,
                        }
                    }
                    head = &mut answer => break head.map_err(|(f, _)| SendError::new(f))?,
                }
            }
        };
        if uploading || !in_step {
            // Answered before the body was all sent, or the upload broke: this
            // connection is out of step with the request, and the client is
            // still sending a body nobody will read.
            discard_rest(incoming);
            return Ok(Head {
                keep_alive: false,
                ..head
            });
        }
        Ok(head)
    }
}

fn tls_id(tls: Option<&UpstreamTls>) -> usize {
    tls.map_or(0, |t| std::ptr::from_ref(t) as usize)
}

/// Longest time spent reading and dropping a request body the server no
/// longer wants, and the longest wait for each piece of it (nginx's
/// `lingering_time` and `lingering_timeout`).
const DISCARD_FOR: Duration = Duration::from_secs(30);
const DISCARD_IDLE: Duration = Duration::from_secs(5);

/// Reads the rest of a client's request body and drops it, in the
/// background, so the client (still uploading when the server answered
/// early) gets the answer and its connection stays usable, instead of a close
/// with unread data that can turn into a reset and lose the answer
/// (RFC 9112 §9.6).
fn discard_rest(mut body: ClientBody) {
    if body.is_end_stream() || !body.needs_draining() {
        // An HTTP/1.1 client connection reads the rest itself once the
        // answer is out.
        return;
    }
    tokio::task::spawn_local(async move {
        let drain = async {
            while let Ok(Some(Ok(_))) = tokio::time::timeout(DISCARD_IDLE, body.frame()).await {}
        };
        let _ = tokio::time::timeout(DISCARD_FOR, drain).await;
    });
}

/// Why an upload stopped.
enum Upload {
    /// The client's body broke (bad framing, aborted) or stalled.
    Client(ClientFault),
    /// Writing to the server failed.
    Server,
}

/// Streams the client's body to the server. Each wait is announced to
/// `deadline`: for the client's next frame, and for the server to take each
/// piece (progress, not a whole frame, re-arms the server's limit).
async fn write_body<W>(
    wr: &mut W,
    body: &mut ClientBody,
    chunked: bool,
    deadline: &Deadline,
) -> Result<(), Upload>
where
    W: AsyncWrite + Unpin,
{
    let mut line = Vec::with_capacity(24);
    let mut trailers: Option<http::HeaderMap> = None;
    loop {
        deadline.wait(Wait::Client, Instant::now());
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|e| Upload::Client(client_fault(&*e)))?;
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                // Trailers from the client: forwarded in chunked framing (a
                // length-framed body has no place for them).
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
                continue;
            }
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            line.clear();
            chunked::size_line(data.len(), &mut line);
            let mut out = Buf::chain(Buf::chain(&line[..], &mut data), &b"\r\n"[..]);
            write_out(wr, &mut out, deadline).await?;
        } else {
            write_out(wr, &mut data, deadline).await?;
        }
        if body.is_end_stream() {
            break;
        }
    }
    if chunked {
        let mut last = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            last.extend_from_slice(name.as_str().as_bytes());
            last.extend_from_slice(b": ");
            last.extend_from_slice(value.as_bytes());
            last.extend_from_slice(b"\r\n");
        }
        last.extend_from_slice(b"\r\n");
        write_out(wr, &mut &last[..], deadline).await?;
    }
    Ok(())
}

/// Writes all of `buf`; every write that makes progress gives the server its
/// full limit again, so a server that reads a large body slowly is not cut.
/// The server's turn is announced only when a write has to wait: most writes
/// go straight into the socket buffer, and then the timer is not touched.
async fn write_out<W, B>(wr: &mut W, buf: &mut B, deadline: &Deadline) -> Result<(), Upload>
where
    W: AsyncWrite + Unpin,
    B: Buf,
{
    while buf.has_remaining() {
        let mut waiting = false;
        let n = poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); 4];
            let k = buf.chunks_vectored(&mut slices);
            let r = Pin::new(&mut *wr).poll_write_vectored(cx, slices.get(..k).unwrap_or_default());
            if r.is_pending() && !waiting {
                waiting = true;
                deadline.wait(Wait::ServerWrite, Instant::now());
            }
            r
        })
        .await
        .map_err(|_| Upload::Server)?;
        if n == 0 {
            return Err(Upload::Server);
        }
        buf.advance(n);
    }
    Ok(())
}

/// Tells a malformed body (a hostile or broken client: refused as
/// `bad_body`) from one that merely ended early (the client went away or
/// reset its stream).
fn client_fault(e: &(dyn std::error::Error + 'static)) -> ClientFault {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // The HTTP/1.1 body decoders: an invalid chunk is InvalidInput
            // or InvalidData; a connection closed mid-body is UnexpectedEof.
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            ) {
                return ClientFault::Malformed;
            }
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            // A body that broke HTTP/2's rules (a DATA length that disagrees
            // with content-length): reset by our side with PROTOCOL_ERROR.
            if !h2.is_remote() && h2.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                return ClientFault::Malformed;
            }
        }
        source = s.source();
    }
    ClientFault::Aborted
}

/// Reads until a final (non-1xx) response head is complete. `Err` carries
/// whether nothing at all was read.
async fn read_head<R>(
    rd: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
    upgrade_request: bool,
) -> Result<Head, (Failure, bool)>
where
    R: AsyncRead + Unpin,
{
    let mut nothing_read = buf.is_empty();
    if nothing_read {
        // Start again at the front of the buffer (free once the previous
        // response's frames are gone): reads then land on the same warm
        // cache lines instead of walking through the whole allocation.
        refill(buf);
    }
    loop {
        match response::parse(buf, head_request, upgrade_request) {
            Ok(Some(head))
                if head.status.is_informational() && head.framing != Framing::Upgrade =>
            {
                // 100 Continue, 103 Early Hints: not the answer.
                continue;
            }
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = ?e, "invalid response head");
                return Err((Failure::InvalidResponse, false));
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            refill(buf);
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err((Failure::Reset, nothing_read)),
            Ok(_) => nothing_read = false,
            Err(e) => {
                tracing::debug!(error = %e, "reading a response head failed");
                return Err((Failure::Reset, nothing_read));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: Limits = Limits {
        response: Duration::from_secs(1),
        client_idle: Duration::from_secs(60),
    };

    fn timer() -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep(Duration::from_secs(3600)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_reads_slowly_but_steadily_is_never_cut() {
        // 4 KiB through a 64-byte pipe read 64 bytes every 500 ms: 32 s in
        // all, each wait half of `response`.
        let (mut wr, mut rd) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0u8; 64];
            while got < 4096 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                got += rd.read(&mut buf).await.unwrap();
            }
            got
        });
        let d = Deadline::new(LIMITS, Instant::now());
        let mut t = timer();
        let mut data = Bytes::from(vec![7u8; 4096]);
        let start = Instant::now();
        let r = deadline::timed(&d, &mut t, write_out(&mut wr, &mut data, &d)).await;
        assert!(matches!(r, Ok(Ok(()))));
        assert!(start.elapsed() >= Duration::from_secs(30));
        assert_eq!(reader.await.unwrap(), 4096);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_takes_no_bytes_times_out_after_response() {
        let (mut wr, _rd) = tokio::io::duplex(64);
        let d = Deadline::new(LIMITS, Instant::now());
        // The client's turn before the write, as in an upload.
        d.wait(Wait::Client, Instant::now());
        let mut t = timer();
        let mut data = Bytes::from(vec![7u8; 4096]);
        let start = Instant::now();
        let r = deadline::timed(&d, &mut t, write_out(&mut wr, &mut data, &d)).await;
        assert_eq!(r.err(), Some(Failure::ResponseTimeout));
        assert_eq!(start.elapsed(), LIMITS.response);
    }
}
