//! The client's request body on its way to a server, counted as it passes.
//!
//! A [`ClientBody`] is where the request's body comes from: hyper's
//! `Incoming` for an HTTP/2 stream, or a body read straight off an HTTP/1.1
//! client connection by the listener's own codec (a boxed `Body`, so this
//! leg does not depend on the listener), with an optional byte counter: the
//! access log's `bytes_in` (request body bytes received from the client).
//! Without an access log there is no counter and nothing is counted. The
//! counter is shared (`Rc`) with the request's accounting, which outlives the
//! body: it is read when the request ends, whatever became of the body.

use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body read by the client connection itself.
pub type ConnBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError>>>;

enum Source {
    Empty,
    Hyper(Incoming),
    /// Read by the HTTP/1.1 connection: when dropped unread, the connection
    /// reads and drops the rest itself.
    Conn(ConnBody),
}

pub struct ClientBody {
    inner: Source,
    counted: Option<Rc<Cell<u64>>>,
}

impl fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Source::Empty => "empty",
            Source::Hyper(_) => "hyper",
            Source::Conn(_) => "conn",
        };
        f.debug_struct("ClientBody").field("source", &kind).finish()
    }
}

impl ClientBody {
    /// No body at all.
    pub fn empty() -> Self {
        Self {
            inner: Source::Empty,
            counted: None,
        }
    }

    /// An HTTP/2 stream's body.
    pub fn hyper(inner: Incoming) -> Self {
        Self {
            inner: Source::Hyper(inner),
            counted: None,
        }
    }

    /// A body the client connection reads itself.
    pub fn conn(inner: ConnBody) -> Self {
        Self {
            inner: Source::Conn(inner),
            counted: None,
        }
    }

    /// Counts the body's data bytes into `counter` from now on.
    pub fn count_into(&mut self, counter: Option<Rc<Cell<u64>>>) {
        self.counted = counter;
    }

    /// True when the rest of an unread body must be read off by someone
    /// else than its connection (hyper's `Incoming`: its connection only
    /// reads what the body is polled for).
    pub fn needs_draining(&self) -> bool {
        matches!(self.inner, Source::Hyper(_))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Source::Empty => Poll::Ready(None),
            Source::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
            Source::Conn(b) => b.as_mut().poll_frame(cx),
        };
        if let (Some(c), Poll::Ready(Some(Ok(frame)))) = (&self.counted, &polled) {
            if let Some(data) = frame.data_ref() {
                c.set(c.get() + data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Empty => true,
            Source::Hyper(b) => b.is_end_stream(),
            Source::Conn(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Empty => SizeHint::with_exact(0),
            Source::Hyper(b) => b.size_hint(),
            Source::Conn(b) => b.size_hint(),
        }
    }
}
