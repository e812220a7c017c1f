//! The client's request body on its way to a server, counted as it passes.
//!
//! A [`ClientBody`] is hyper's `Incoming` with an optional byte counter: the
//! access log's `bytes_in` (request body bytes received from the client).
//! Without an access log there is no counter and nothing is counted. The
//! counter is shared (`Rc`) with the request's accounting, which outlives the
//! body: it is read when the request ends, whatever became of the body.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    counted: Option<Rc<Cell<u64>>>,
}

impl ClientBody {
    pub fn new(inner: Incoming, counted: Option<Rc<Cell<u64>>>) -> Self {
        Self { inner, counted }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Some(c), Poll::Ready(Some(Ok(frame)))) = (&self.counted, &polled) {
            if let Some(data) = frame.data_ref() {
                c.set(c.get() + data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
