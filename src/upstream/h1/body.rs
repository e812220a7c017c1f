//! A server's response body, read straight off its connection.
//!
//! [`ResponseBody`] owns the [`Conn`] while the body streams. Data frames are
//! split off the connection's read buffer without copying. Once the body has
//! ended as its framing says, and the head allowed reuse, the connection is
//! handed out by [`ResponseBody::take_reusable`] for the pool; a body cut
//! short is an error and its connection is closed.
//!
//! A body that makes no progress for `timeouts.read` fails with
//! [`BodyError::ReadTimeout`]. The timer measures only waits on the server: it
//! is armed when a read finds nothing and the caller is waiting for us, and
//! left alone while bytes flow or while the client is not asking for more.
//! It is the connection's one timer, re-armed with `reset`, never a new one
//! per chunk.

use std::future::Future;
use std::pin::pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::chunked::{self, Chunk};
use super::conn::Conn;
use super::response::{Framing, Head};

/// First read size for a body not already in the buffer.
const FIRST_READ: usize = 16 * 1024;
/// Reads grow while they fill the buffer, up to this: the relay buffer. A
/// client that does not take the data stops the reads (its connection holds
/// one frame of at most this size, plus what hyper buffers), so this bounds
/// what a slow reader costs (the TCP relay uses the same size).
const MAX_READ: usize = 64 * 1024;

/// Why a response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("server closed the connection before the body ended")]
    Truncated,
    #[error("reading the response body: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Chunked(#[from] chunked::ChunkError),
    #[error("the response body made no progress for timeouts.read")]
    ReadTimeout,
}

#[derive(Debug)]
enum State {
    Length { left: u64 },
    Chunked(chunked::Decoder),
    Close,
    Done,
}

/// The body of one response, and the connection it arrives on.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    read_size: usize,
    /// `timeouts.read`.
    read_timeout: Duration,
    /// True while the last read found nothing: the read timer runs.
    waiting: bool,
}

impl ResponseBody {
    /// The body that follows `head` on `conn`; no progress for
    /// `read_timeout` fails it.
    pub fn new(conn: Conn, head: &Head, read_timeout: Duration) -> Self {
        let state = match head.framing {
            Framing::Empty | Framing::Upgrade | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length { left: n },
            Framing::Chunked => State::Chunked(chunked::Decoder::default()),
            Framing::Close => State::Close,
        };
        Self {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
            read_size: FIRST_READ,
            read_timeout,
            waiting: false,
        }
    }

    /// True once every byte of the body has been read.
    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length { left } => SizeHint::with_exact(left),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The connection, when the body has ended and it may carry another
    /// request. Called at most once with a result.
    pub fn take_reusable(&mut self) -> Option<Conn> {
        if !self.keep_alive || !self.is_end_stream() {
            return None;
        }
        let mut conn = self.conn.take()?;
        conn.recycle().then_some(conn)
    }

    /// The next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.state {
                State::Done => return Poll::Ready(None),
                State::Length { left } => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        *left -= n as u64;
                        if *left == 0 {
                            self.state = State::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))));
                    }
                    let want = usize::try_from(*left).unwrap_or(usize::MAX);
                    if ready!(self.poll_read(cx, want))? == 0 {
                        return Poll::Ready(Some(Err(BodyError::Truncated)));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buf)? {
                    Some(Chunk::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Some(Chunk::End(trailers)) => {
                        self.state = State::Done;
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    None => {
                        if ready!(self.poll_read(cx, usize::MAX))? == 0 {
                            return Poll::Ready(Some(Err(BodyError::Truncated)));
                        }
                    }
                },
                State::Close => {
                    if !conn.buf.is_empty() {
                        let n = conn.buf.len();
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))));
                    }
                    if ready!(self.poll_read(cx, usize::MAX))? == 0 {
                        self.state = State::Done;
                        self.keep_alive = false;
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }

    /// Reads at most about `want` more bytes into the connection's buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<usize, BodyError>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let size = self.read_size.min(want.max(1));
        if conn.buf.capacity() - conn.buf.len() < size {
            conn.buf.reserve(size);
        }
        let spare = conn.buf.capacity() - conn.buf.len();
        // `read_buf`'s future keeps no state between polls: a fresh one per
        // poll is the same as polling one future repeatedly.
        let Poll::Ready(read) = pin!(conn.stream.read_buf(&mut conn.buf)).poll(cx) else {
            let wait = self.read_timeout;
            let timer = conn
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
            if !self.waiting {
                self.waiting = true;
                timer.as_mut().reset(Instant::now() + wait);
            }
            return match timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(BodyError::ReadTimeout)),
                Poll::Pending => Poll::Pending,
            };
        };
        self.waiting = false;
        let n = read?;
        if n == spare && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}
