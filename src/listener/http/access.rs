//! What the HTTP proxy tells the access log about a request.
//!
//! [`capture`] takes the facts known when a request arrives (method, target,
//! client, host, user agent, protocol, TLS) into the request's
//! [`Completion`] — only when the request's snapshot has an `access_log`, so
//! a proxy without one builds nothing, and boxed, so it costs a request that
//! is logged one allocation and one that is not a null pointer (the
//! `Completion` travels inside the response body through every move of it). The proxy adds what it learns on the way through the small
//! methods on [`Completion`] below (attempts, timings, the request id the
//! server saw, the body counter); [`write`] turns it all into one line when
//! the request ends (`Completion`'s drop). Tested end to end by
//! `tests/access_log.rs`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderValue, Method, Request, Uri};
use tokio::time::Instant;

use super::body::Completion;
use super::proxy::ConnInfo;
use crate::access_log::record::{self, HttpRecord, RequestFacts, RequestId};
use crate::snapshot::Snapshot;

static X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// What the access log keeps of a request until it ends.
pub struct Captured {
    pub facts: RequestFacts,
    pub method: Method,
    pub uri: Uri,
}

/// The facts of a request that has just arrived, when it is to be logged.
pub fn capture<B>(snapshot: &Snapshot, conn: &ConnInfo, req: &Request<B>) -> Option<Box<Captured>> {
    snapshot.config.access_log.as_ref()?;
    let headers = req.headers();
    let host = headers.get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let mut request_id = RequestId::default();
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        request_id.set(id.as_bytes());
    }
    let facts = RequestFacts {
        time: SystemTime::now(),
        client: conn.peer,
        protocol: record::protocol(req.version()),
        host,
        user_agent: headers.get(header::USER_AGENT).cloned(),
        request_id,
        tls: conn.tls,
        bytes_in: Rc::new(Cell::new(0)),
        attempts: 0,
        connect: None,
        response: None,
    };
    Some(Box::new(Captured {
        facts,
        method: req.method().clone(),
        uri: req.uri().clone(),
    }))
}

impl Completion {
    /// Counter of request body bytes for the access log, when it is on.
    pub fn body_counter(&self) -> Option<Rc<Cell<u64>>> {
        self.log.as_ref().map(|l| l.facts.bytes_in.clone())
    }

    /// The request id the server receives: the one in the rewritten head
    /// (the client's, or the one the proxy added).
    pub fn request_id_from(&mut self, head: &[u8]) {
        if let Some(l) = self.log.as_mut() {
            if let Some(id) = record::request_id_in_head(head) {
                l.facts.request_id.set(id);
            }
        }
    }

    /// An attempt to a server begins.
    pub fn attempt_started(&mut self) {
        if let Some(l) = self.log.as_mut() {
            l.facts.attempts += 1;
            l.facts.connect = None;
            l.facts.response = None;
        }
    }

    /// The attempt under way ended: `connect` is the time to a usable
    /// connection (zero when pooled, `None` without one); `answered` is the
    /// attempt's start when a response head came (its time is taken here, so
    /// a proxy without an access log reads no clock for it).
    pub fn attempt_ended(&mut self, connect: Option<Duration>, answered: Option<Instant>) {
        if let Some(l) = self.log.as_mut() {
            l.facts.connect = connect;
            l.facts.response = answered.map(|since| since.elapsed());
        }
    }
}

/// Writes the line of a request that ended after `elapsed`.
pub fn write(done: &Completion, captured: &Captured, elapsed: Duration) {
    let facts = &captured.facts;
    let snapshot = &done.snapshot;
    let (Some(config), Some(listener)) = (
        snapshot.config.access_log.as_ref(),
        snapshot.listeners.get(done.listener),
    ) else {
        return;
    };
    let upstream = done.upstream.and_then(|i| snapshot.upstreams.get(i));
    let server = done.server.as_ref();
    let record = HttpRecord {
        time: facts.time,
        listener: &listener.config.name,
        client: facts.client,
        method: captured.method.as_str(),
        host: facts.host.as_ref().map(HeaderValue::as_bytes),
        path: captured
            .uri
            .path_and_query()
            .map_or_else(|| captured.uri.path(), |pq| pq.as_str()),
        protocol: facts.protocol,
        status: done.status,
        bytes_in: facts.bytes_in.get(),
        bytes_out: done.bytes,
        upstream: upstream.map(|u| u.config.name.as_str()),
        server: server.map(|s| s.key.address.as_str()),
        tier: upstream
            .zip(server)
            .map_or(0, |(u, s)| crate::access_log::server_tier(u, s)),
        attempts: facts.attempts,
        request_id: facts.request_id.get(),
        duration: elapsed,
        connect: facts.connect,
        response: facts.response,
        tls: facts.tls,
        user_agent: facts.user_agent.as_ref().map(HeaderValue::as_bytes),
        complete: done.complete,
    };
    crate::access_log::http(config.format, &record);
}
