//! The response body sent to clients, and what happens when it ends.
//!
//! A [`ProxyBody`] is either a server's streamed body or a short local one
//! (errors the proxy makes itself). Either way it carries a [`Completion`] that
//! records the request exactly once — metrics, access log (`access`), in-flight counts —
//! when the body ends or is dropped (a client that went away). A server body
//! also carries its pooled connection, returned the moment the body reports end
//! of stream so the next request reuses it.
//!
//! A server body that stalls (`timeouts.read`) fails here once: counted as
//! `read_timeout` and as a breaker failure of its server, and the error makes
//! hyper close the HTTP/1.1 connection or reset the h2 stream. A body that
//! ends records its server's success here (not at the head), so a good head
//! never resets the failure count its stalled body then adds. On HTTP/2 the
//! body also tells the stream's [`Progress`] when a frame waits for the
//! client, so a stream whose client takes nothing is ended (see `stall`).

use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::access::Captured;
use super::stall::Progress;
use crate::listener::context::Worker;
use crate::listener::io::ConnShared;
use crate::snapshot::Snapshot;
use crate::upstream::attempt::{self, Failure};
use crate::upstream::h1::body::BodyError;
use crate::upstream::h1::{Conn, ResponseBody};
use crate::upstream::state::ActiveGuard;
use crate::upstream::ServerState;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to give back to this thread's pool once the body is done.
pub struct PoolReturn {
    pub worker: Rc<Worker>,
    pub server: Arc<ServerState>,
    pub keep_for: Duration,
    pub max_idle: usize,
}

impl PoolReturn {
    fn give_back(self, conn: Conn) {
        self.worker
            .pool
            .put(&self.server, conn, self.keep_for, self.max_idle);
    }
}

/// Marks a request in flight on its client connection until dropped.
pub struct InFlight(Arc<ConnShared>);

impl InFlight {
    pub fn new(shared: &Arc<ConnShared>) -> Self {
        shared.begin_request();
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// Everything needed to account for one request when it ends.
pub struct Completion {
    pub snapshot: Arc<Snapshot>,
    pub listener: usize,
    /// Upstream index, when the request got as far as routing.
    pub upstream: Option<usize>,
    pub status: u16,
    pub start: Instant,
    pub server: Option<Arc<ServerState>>,
    pub bytes: u64,
    pub complete: bool,
    /// Access log facts (with the method and target); `None` when the
    /// access log is off.
    pub log: Option<Box<Captured>>,
    pub _active: Option<ActiveGuard>,
    pub _in_flight: InFlight,
}

impl Drop for Completion {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let listener = self.snapshot.listeners.get(self.listener);
        if let Some(m) = listener
            .zip(self.upstream)
            .and_then(|(l, u)| l.route_metrics.get(u))
            .and_then(Option::as_ref)
        {
            m.duration.observe(elapsed.as_secs_f64());
            m.count(self.status);
        }
        if let Some(facts) = self.log.take() {
            super::access::write(self, &facts, elapsed);
        }
    }
}

/// The server body ended: its connection goes back to the pool (when it may
/// be reused), the server's success is recorded when it was left for the end
/// (`succeed`), and the request is accounted as complete.
fn finish(
    inner: &mut ResponseBody,
    conn: &mut Option<PoolReturn>,
    done: &mut Option<Completion>,
    succeed: &mut bool,
) {
    if let Some(ret) = conn.take() {
        if let Some(c) = inner.take_reusable() {
            ret.give_back(c);
        }
    }
    if let Some(mut d) = done.take() {
        if std::mem::take(succeed) {
            if let Some(server) = d.server.as_ref() {
                attempt::record_success(server, Instant::now());
            }
        }
        d.complete = true;
    }
}

/// The body of a response to a client.
pub enum ProxyBody {
    Upstream {
        inner: ResponseBody,
        conn: Option<PoolReturn>,
        done: Option<Completion>,
        /// The HTTP/2 stream's progress; `None` on HTTP/1.1.
        stream: Option<Rc<Progress>>,
        /// Record the server's success when the body has ended.
        succeed: bool,
    },
    Local {
        data: Option<Bytes>,
        done: Option<Completion>,
    },
    /// No accounting (admin API, 101 responses accounted elsewhere).
    Plain { data: Option<Bytes> },
}

impl ProxyBody {
    /// A server's body; `succeed` records the server's success (breaker)
    /// once the body has ended.
    pub fn upstream(
        inner: ResponseBody,
        conn: PoolReturn,
        done: Completion,
        succeed: bool,
    ) -> Self {
        let stream = Progress::current();
        if let Some(p) = &stream {
            // The head is with hyper; the body's turn comes when the client
            // has taken it.
            p.handed_out();
        }
        let mut body = ProxyBody::Upstream {
            inner,
            conn: Some(conn),
            done: Some(done),
            stream,
            succeed,
        };
        body.check_end();
        body
    }

    /// Returns the connection and completes accounting once the server body
    /// has ended (immediately for empty bodies, which hyper never polls).
    fn check_end(&mut self) {
        if let ProxyBody::Upstream {
            inner,
            conn,
            done,
            stream,
            succeed,
        } = self
        {
            if inner.is_end_stream() {
                finish(inner, conn, done, succeed);
                if let Some(p) = stream {
                    p.taken();
                }
            }
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this {
            ProxyBody::Upstream {
                inner,
                conn,
                done,
                stream,
                succeed,
            } => {
                if let Some(p) = stream.as_ref() {
                    p.taken();
                }
                match inner.poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(d), Some(data)) = (done.as_mut(), frame.data_ref()) {
                            d.bytes += data.len() as u64;
                        }
                        if let Some(p) = stream.as_ref() {
                            p.handed_out();
                        }
                        this.check_end();
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The server connection broke mid-body: never pool it.
                        conn.take();
                        if let BodyError::ReadTimeout = e {
                            if let Some(server) = done.as_ref().and_then(|d| d.server.as_ref()) {
                                tracing::debug!(
                                    server = %server.key.address,
                                    "response body made no progress for timeouts.read"
                                );
                                attempt::record_against(
                                    server,
                                    Failure::ReadTimeout,
                                    Instant::now(),
                                );
                            }
                        }
                        done.take();
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        finish(inner, conn, done, succeed);
                        Poll::Ready(None)
                    }
                }
            }
            ProxyBody::Local { data, done } => match data.take() {
                Some(b) => {
                    if let Some(d) = done.as_mut() {
                        d.bytes = b.len() as u64;
                        d.complete = true;
                    }
                    done.take();
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                None => {
                    if let Some(mut d) = done.take() {
                        d.complete = true;
                    }
                    Poll::Ready(None)
                }
            },
            ProxyBody::Plain { data } => Poll::Ready(data.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Local { data, .. } | ProxyBody::Plain { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Local { data, .. } | ProxyBody::Plain { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Completion` moves with the response body through every layer of
    /// hyper (several copies per request) and sits in every HTTP/2 stream's
    /// task: the access log's facts are boxed, made only when it is on.
    #[test]
    fn the_accounting_that_travels_with_every_response_stays_small() {
        assert!(std::mem::size_of::<Completion>() <= 128);
        assert!(std::mem::size_of::<ProxyBody>() <= 384);
    }
}
