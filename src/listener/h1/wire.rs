//! The client connection's bytes, shared by the connection loop and the
//! request body it hands out.
//!
//! A [`Wire`] owns the client stream (plain TCP or TLS), the read buffer (taken
//! from the worker's pool only while there are bytes to work on) and the
//! decoder of the current request's body. The connection loop reads heads
//! and writes responses through it; the request's [`RequestBody`] reads the
//! body through it while the request is forwarded, and sends the
//! `100 Continue` a client asked for the first time the body is wanted.
//! Both run in the connection's one task, so the `RefCell` is never borrowed
//! across an `.await` and never contended. A body belongs to one request:
//! once the loop moves on (the response is being written), a body still
//! held somewhere reads nothing more, and the loop reads and drops the rest
//! itself.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::decode::{BodyDecoder, Piece};
use crate::bufpool::{self, BufPool};
use crate::listener::context::Worker;

/// A client stream the HTTP/1.1 codec can serve.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + 'static {
    /// True when [`poll_read_ready`](Self::poll_read_ready) waits for the
    /// socket; false when it is always ready (the read itself must wait,
    /// with a buffer).
    const WAITS_WITHOUT_BUFFER: bool;

    /// Ready when a read may find bytes, without a buffer held meanwhile.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ClientStream for TcpStream {
    const WAITS_WITHOUT_BUFFER: bool = true;

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl ClientStream for TlsStream<TcpStream> {
    const WAITS_WITHOUT_BUFFER: bool = false;

    fn poll_read_ready(&self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // rustls may hold decrypted bytes the socket no longer shows, and it
        // keeps buffers of its own anyway: read with a buffer at once.
        Poll::Ready(Ok(()))
    }
}

/// The 100 Continue interim response.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// Not asked for, or already sent.
    No,
    /// Asked for (`Expect: 100-continue`) and not sent yet; bytes written so far.
    Owed(usize),
}

/// The client stream and its read state.
pub struct Wire<S> {
    io: Option<S>,
    pub buf: BytesMut,
    pub body: BodyDecoder,
    /// The request whose body may be read now; a [`RequestBody`] of another
    /// request reads nothing.
    current: u64,
    continue_: Continue,
    /// The client closed its side.
    pub eof: bool,
}

/// The wire shared between the loop and one request's body.
pub type Shared<S> = Rc<RefCell<Wire<S>>>;

impl<S: ClientStream> Wire<S> {
    pub fn new(io: S, buf: BytesMut) -> Self {
        Self {
            io: Some(io),
            buf,
            body: BodyDecoder::done(),
            current: 0,
            continue_: Continue::No,
            eof: false,
        }
    }

    /// Starts request `id`'s body.
    pub fn start_body(&mut self, id: u64, body: BodyDecoder, expect_continue: bool) {
        self.current = id;
        let wants = expect_continue && !body.is_done();
        self.body = body;
        self.continue_ = if wants {
            Continue::Owed(0)
        } else {
            Continue::No
        };
    }

    /// The loop takes the body over: any [`RequestBody`] still held reads
    /// nothing more.
    pub fn end_body_ownership(&mut self) {
        self.current = self.current.wrapping_add(1) | 1 << 63;
    }

    /// True when the client asked for `100 Continue` and never got it (the
    /// answer came first): it may or may not send the body now.
    pub fn continue_unsent(&self) -> bool {
        matches!(self.continue_, Continue::Owed(_))
    }

    /// Takes a buffer from `pool` when the wire has none with room.
    pub fn ensure_buf(&mut self, pool: &BufPool) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        } else if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(bufpool::SIZE);
        }
    }

    /// Gives the read buffer back when it holds nothing.
    pub fn release_buf(&mut self, pool: &BufPool) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            pool.give(std::mem::take(&mut self.buf));
        }
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.io {
            Some(io) => io.poll_read_ready(cx),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// Reads more bytes into the buffer (which must have room);
    /// `Ready(Ok(0))` at end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        // The read future keeps no state between polls: a fresh one per poll
        // is the same read.
        let read = pin!(io.read_buf(&mut self.buf));
        let polled = read.poll(cx);
        if let Poll::Ready(Ok(0)) = polled {
            self.eof = true;
        }
        polled
    }

    pub fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    /// Takes the stream out (an upgrade): the wire is empty afterwards.
    pub fn take_io(&mut self) -> Option<S> {
        self.io.take()
    }

    /// Writes what is left of an owed `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Continue::Owed(off) = self.continue_ {
            let rest = CONTINUE.get(off..).unwrap_or_default();
            if rest.is_empty() {
                match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.continue_ = Continue::No,
                    other => return other,
                }
                break;
            }
            match self.poll_write_vectored(cx, &[io::IoSlice::new(rest)]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.continue_ = Continue::Owed(off + n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The next piece of the current body, reading as needed. Errors:
    /// `InvalidData` for broken chunked framing, `UnexpectedEof` when the
    /// client closed mid-body.
    pub fn poll_piece(&mut self, cx: &mut Context<'_>, pool: &BufPool) -> Poll<io::Result<Piece>> {
        loop {
            if !self.buf.is_empty() || self.body.is_done() || self.body.is_failed() {
                match self.body.decode(&mut self.buf) {
                    Ok(Some(piece)) => return Poll::Ready(Ok(piece)),
                    Ok(None) => {}
                    Err(m) => {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, m.0)))
                    }
                }
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            // Only now, when the client must send more, is 100 Continue due.
            match self.poll_continue(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            self.ensure_buf(pool);
            match self.poll_fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A request body read straight off the client connection.
pub struct RequestBody<S> {
    wire: Shared<S>,
    /// For the read buffer pool.
    worker: Rc<Worker>,
    id: u64,
    /// The body ended (or failed): nothing more is read.
    ended: bool,
}

impl<S: ClientStream> RequestBody<S> {
    pub fn new(wire: Shared<S>, worker: Rc<Worker>, id: u64) -> Self {
        Self {
            wire,
            worker,
            id,
            ended: false,
        }
    }
}

impl<S: ClientStream> Body for RequestBody<S> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let Ok(mut wire) = this.wire.try_borrow_mut() else {
            // Never borrowed across a poll; an error rather than a panic.
            return Poll::Ready(Some(Err(io::Error::other("client connection busy").into())));
        };
        if wire.current != this.id {
            this.ended = true;
            return Poll::Ready(Some(Err(
                io::Error::from(io::ErrorKind::UnexpectedEof).into()
            )));
        }
        match wire.poll_piece(cx, &this.worker.bufs) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Piece::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Ok(Piece::End)) => {
                this.ended = true;
                match wire.body.take_trailers() {
                    Some(t) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    None => Poll::Ready(None),
                }
            }
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
            || self
                .wire
                .try_borrow()
                .is_ok_and(|w| w.current == self.id && w.body.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.wire.try_borrow().ok().and_then(|w| w.body.remaining()) {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
