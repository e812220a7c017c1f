//! One HTTP request through the proxy: route, choose, send, retry, answer.
//!
//! The snapshot is loaded once, before the first `.await`, and held until the
//! response body ends. Attempts follow SPEC §3: a connect failure moves to
//! another server for any method; a failure after sending is retried only for
//! GET/HEAD/OPTIONS without a body; a pooled connection the server closed
//! before the request was written is not a failure (the request goes out on a
//! fresh connection). Each outcome is one [`Failure`] value that feeds the
//! breaker, the metrics and the client's status code alike.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Completion, InFlight, PoolReturn, ProxyBody};
use super::headers::{self, Forwarded};
use super::{reply, upgrade};
use crate::config::types::{BalanceKind, HashKey};
use crate::listener::io::ConnShared;
use crate::listener::ratelog;
use crate::upstream::attempt::{retryable_after_send, Failure};
use crate::upstream::balance::hash_key;
use crate::upstream::pool::{self, Sender, UpstreamBody};
use crate::upstream::{Selected, Tried, Upstream};
use crate::worker::Worker;

/// What the HTTP service knows about its client connection.
pub struct ConnInfo {
    pub bind: SocketAddr,
    pub peer: SocketAddr,
    pub https: bool,
    pub shared: Arc<ConnShared>,
    /// `peer`'s IP formatted once for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
}

/// Request head kept for replaying a bodyless request on another server.
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    fn build(&self) -> Request<UpstreamBody> {
        let mut r = Request::new(Either::Right(Empty::new()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// hyper service entry point for one request.
pub async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let start = Instant::now();
    let in_flight = InFlight::new(&conn.shared);
    let verdict = conn.shared.next_verdict();
    let snapshot = worker.snapshot.load();
    let Some(listener_idx) = snapshot
        .listeners
        .iter()
        .position(|l| l.config.bind == conn.bind)
    else {
        // The listener was removed by a reload while this connection lived.
        return Ok(reply::error(StatusCode::SERVICE_UNAVAILABLE, None, true));
    };
    let mut done = Completion {
        snapshot: snapshot.clone(),
        listener: listener_idx,
        upstream: None,
        method: req.method().clone(),
        uri: req.uri().clone(),
        status: 0,
        start,
        server: None,
        bytes: 0,
        complete: false,
        _active: None,
        _in_flight: in_flight,
    };
    let Some(listener) = snapshot.listeners.get(listener_idx) else {
        return Ok(reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(done),
            true,
        ));
    };
    if let Some(reason) = verdict.reject_reason() {
        listener.state.metrics.rejected(reason);
        ratelog::log_refusal(&listener.config.name, Some(conn.peer), reason, 400);
        return Ok(reply::error(StatusCode::BAD_REQUEST, Some(done), true));
    }

    // Host for routing and X-Forwarded-Host: Host header, else :authority.
    let host_value = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let routing_host = host_value
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(headers::routing_host);
    let up_idx = listener.route(routing_host, req.uri().path());
    done.upstream = Some(up_idx);
    let Some(upstream) = snapshot.upstreams.get(up_idx) else {
        return Ok(reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(done),
            false,
        ));
    };

    let is_upgrade =
        req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
    let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, is_upgrade);
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = &host_value {
            parts.headers.insert(header::HOST, h.clone());
        }
    }
    headers::add_forwarding(
        &mut parts.headers,
        &Forwarded {
            client_ip: &conn.client_ip,
            https: conn.https,
            host: host_value.as_ref(),
        },
    );
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    let hash = request_hash(upstream, &parts.headers, conn.peer);
    let bodyless = body.is_end_stream();
    let template = (bodyless
        && !is_upgrade
        && upstream.config.retries > 0
        && retryable_after_send(&parts.method))
    .then(|| Template {
        method: parts.method.clone(),
        uri: origin_form.clone(),
        headers: parts.headers.clone(),
    });
    let mut outgoing = Request::new(Either::Left(body));
    *outgoing.method_mut() = parts.method;
    *outgoing.uri_mut() = origin_form;
    *outgoing.version_mut() = Version::HTTP_11;
    *outgoing.headers_mut() = parts.headers;

    let mut pending = Some(outgoing);
    let mut tried = Tried::default();
    let mut last: Option<Failure> = None;
    for attempt in 0..=upstream.config.retries {
        let Some(sel) = upstream.select(tried, hash) else {
            break;
        };
        let Some(req) = pending
            .take()
            .or_else(|| template.as_ref().map(Template::build))
        else {
            break;
        };
        if attempt > 0 {
            upstream.metrics.retries.inc();
        }
        tried.insert(sel.index);
        let trial = TrialGuard::new(&sel);
        let active = sel.server.begin_request();
        let sent_at = Instant::now();
        match send(&worker, upstream, &sel, req).await {
            Ok((resp, tx)) => {
                let status = resp.status().as_u16();
                if upstream.config.balance == BalanceKind::PeakEwma {
                    // Only peak_ewma reads the estimate; the update costs an exp().
                    let now = Instant::now();
                    sel.server.ewma.observe(
                        now.saturating_duration_since(sent_at),
                        crate::clock::nanos_since_origin(now),
                    );
                }
                if upstream
                    .config
                    .circuit_breaker
                    .failure_status
                    .contains(&status)
                {
                    record_failure(upstream, &sel, Failure::Status(status));
                    trial.disarm();
                    let more = attempt < upstream.config.retries
                        && template.is_some()
                        && upstream.select(tried, hash).is_some();
                    if more {
                        last = Some(Failure::Status(status));
                        continue;
                    }
                } else {
                    record_success(&sel);
                    trial.disarm();
                }
                done.server = Some(sel.server.clone());
                done._active = Some(active);
                return Ok(respond(
                    &worker,
                    upstream,
                    &sel,
                    resp,
                    tx,
                    done,
                    client_upgrade,
                ));
            }
            Err((Failure::ClientBody, _)) => {
                // The client's own body broke (malformed chunked framing, or
                // an upload cut short): nothing was learnt about the server,
                // so neither its breaker nor its error count hears of it
                // (else a client could open the breaker of a healthy server),
                // and a half-open trial slot is given back by `trial`'s drop.
                drop(trial);
                listener.state.metrics.rejected("bad_body");
                ratelog::log_refusal(&listener.config.name, Some(conn.peer), "bad_body", 400);
                return Ok(reply::error(StatusCode::BAD_REQUEST, Some(done), true));
            }
            Err((failure, returned)) => {
                record_failure(upstream, &sel, failure);
                trial.disarm();
                last = Some(failure);
                pending = returned;
                if pending.is_none() && template.is_none() {
                    break;
                }
            }
        }
    }
    let status = match last {
        None => StatusCode::SERVICE_UNAVAILABLE,
        Some(f) => f.client_status(),
    };
    Ok(reply::error(status, Some(done), false))
}

/// Sends one attempt to the selected server: pooled connections first, then a
/// fresh one. `Err` carries the request back when none of it was written.
async fn send(
    worker: &Rc<Worker>,
    upstream: &Upstream,
    sel: &Selected,
    mut req: Request<UpstreamBody>,
) -> Result<(Response<Incoming>, Sender), (Failure, Option<Request<UpstreamBody>>)> {
    let t = &upstream.config.timeouts;
    while let Some(mut tx) = worker.pool.take(sel.server.id) {
        // Usually ready at once; it may still be finishing the previous
        // exchange (e.g. a request body the server answered early). Bounded,
        // so a stuck connection is dropped rather than waited on.
        if !matches!(
            tokio::time::timeout(t.connect, tx.ready()).await,
            Ok(Ok(()))
        ) {
            continue;
        }
        match exchange(&mut tx, req, t.response).await {
            Ok(resp) => return Ok((resp, tx)),
            // Closed by the server before anything was written: not a failure.
            Err((_, Some(back))) => req = back,
            Err((f, None)) => return Err((f, None)),
        }
    }
    let mut tx = match pool::connect(sel.server.connect_order(), t.connect).await {
        Ok(tx) => tx,
        Err(f) => return Err((f, Some(req))),
    };
    match exchange(&mut tx, req, t.response).await {
        Ok(resp) => Ok((resp, tx)),
        Err((_, Some(back))) => Err((Failure::ConnectError, Some(back))),
        Err(e) => Err(e),
    }
}

async fn exchange(
    tx: &mut Sender,
    req: Request<UpstreamBody>,
    timeout: std::time::Duration,
) -> Result<Response<Incoming>, (Failure, Option<Request<UpstreamBody>>)> {
    match tokio::time::timeout(timeout, tx.try_send_request(req)).await {
        Err(_) => Err((Failure::ResponseTimeout, None)),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(mut e)) => {
            let f = Failure::from_hyper(e.error());
            Err((f, e.take_message()))
        }
    }
}

fn respond(
    worker: &Rc<Worker>,
    upstream: &Upstream,
    sel: &Selected,
    resp: Response<Incoming>,
    tx: Sender,
    mut done: Completion,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let mut resp = resp;
    done.status = resp.status().as_u16();
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client) = client_upgrade {
            // The server connection now belongs to the tunnel: `tx` is dropped.
            let server = hyper::upgrade::on(&mut resp);
            let (mut parts, _) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, true);
            upgrade::spawn_tunnel(client, server, done);
            return Response::from_parts(parts, ProxyBody::Plain { data: None });
        }
    }
    let (mut parts, body) = resp.into_parts();
    let keep_for = pool::server_keep_alive(&parts.headers)
        .map_or(upstream.config.timeouts.idle, |k| {
            k.min(upstream.config.timeouts.idle)
        });
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let conn = PoolReturn {
        worker: worker.clone(),
        server: sel.server.id,
        tx,
        keep_for,
        max_idle: upstream.config.pool.max_idle_per_server,
    };
    Response::from_parts(parts, ProxyBody::upstream(body, conn, done))
}

fn record_success(sel: &Selected) {
    if let Some(t) = sel.server.breaker.record_success(Instant::now()) {
        crate::upstream::log_breaker_transition(&sel.server, &t);
    }
}

fn record_failure(upstream: &Upstream, sel: &Selected, f: Failure) {
    sel.server.metrics.error(f.kind());
    tracing::debug!(
        upstream = %upstream.config.name,
        server = %sel.server.key.address,
        kind = f.kind(),
        "attempt failed"
    );
    if let Some(t) = sel.server.breaker.record_failure(Instant::now()) {
        crate::upstream::log_breaker_transition(&sel.server, &t);
    }
}

/// The consistent-hash key of a request, when the upstream uses one.
fn request_hash(upstream: &Upstream, headers: &HeaderMap, peer: SocketAddr) -> Option<u64> {
    match upstream.config.hash_key.as_ref()? {
        HashKey::ClientIp => Some(match peer.ip() {
            std::net::IpAddr::V4(v4) => hash_key(&v4.octets()),
            std::net::IpAddr::V6(v6) => hash_key(&v6.octets()),
        }),
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash_key(v.as_bytes())),
        HashKey::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                (k == name).then(|| hash_key(v.as_bytes()))
            }),
    }
}

/// Frees a half-open breaker's trial slot if the attempt ends without a
/// verdict (the client went away mid-wait).
struct TrialGuard<'a> {
    sel: Option<&'a Selected>,
}

impl<'a> TrialGuard<'a> {
    fn new(sel: &'a Selected) -> Self {
        Self {
            sel: sel.trial.then_some(sel),
        }
    }
    fn disarm(mut self) {
        self.sel = None;
    }
}

impl Drop for TrialGuard<'_> {
    fn drop(&mut self) {
        if let Some(sel) = self.sel {
            sel.server.breaker.on_trial_abandoned();
        }
    }
}
