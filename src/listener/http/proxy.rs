//! One HTTP request through the proxy: route -> head -> attempts -> respond.
//!
//! The snapshot is loaded once, before the first `.await`, and held until the
//! response body ends. `handle` routes, `prepare` writes the outgoing head
//! once, `forward` drives the attempts and `respond` wraps the answer. Which
//! server next, what a failure means (breaker, metrics, EWMA, the client's
//! status) and whether the request may be sent again are decided by
//! [`Attempts`](crate::upstream::attempts::Attempts); this module owns only
//! the IO: pooled or fresh connections, sending, and the client's answer.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Completion, InFlight, PoolReturn, ProxyBody};
use super::headers::{self, Forwarded, OutFraming, Outgoing};
use super::upgrade::{self, ClientUpgrade};
use super::{access, reply};
use crate::config::types::HashKey;
use crate::listener::context::Worker;
use crate::listener::io::ConnShared;
use crate::listener::ratelog;
use crate::snapshot::{Listener, Snapshot};
use crate::upstream::attempt::{self, retryable_after_send, ClientFault, Failure};
use crate::upstream::attempts::{may_resend, Outcome, Verdict};
use crate::upstream::balance::hash_key;
use crate::upstream::h1::{
    ClientBody, Conn, Framing, Head, Limits, Replay, ReqBody, ResponseBody, SendError,
};
use crate::upstream::{Selected, Upstream};

/// What the HTTP service knows about its client connection.
pub struct ConnInfo {
    /// The listener as of the connection's accept: its timeouts and where
    /// refusals are counted hold for the connection's whole life.
    pub listener: Arc<Listener>,
    pub peer: SocketAddr,
    pub https: bool,
    /// TLS version of the connection (`TLSv1.3`), for the access log.
    pub tls: Option<&'static str>,
    pub shared: Arc<ConnShared>,
    /// `peer`'s IP formatted once for `X-Forwarded-For`.
    pub client_ip: HeaderValue,
}

/// Index in `snapshot` of the listener at `current`'s bind, for this
/// request's routes and route metrics; `None` when a reload removed it.
fn routes_of(snapshot: &Snapshot, current: &Arc<Listener>) -> Option<usize> {
    let bind = current.config.bind;
    snapshot
        .listeners
        .iter()
        .position(|l| l.config.bind == bind)
}

/// hyper's HTTP/2 service entry point for one stream.
pub async fn handle_h2(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    Ok(handle(worker, conn, req.map(ClientBody::hyper), None).await)
}

/// One request, from either connection kind: the HTTP/1.1 codec (which
/// passes the client's side of an upgrade when the request asks for one) or
/// hyper's HTTP/2 server ([`handle_h2`]).
pub async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    req: Request<ClientBody>,
    client_upgrade: Option<ClientUpgrade>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let in_flight = InFlight::new(&conn.shared);
    let snapshot = worker.snapshot.load();
    // Routes and their upstreams are per request, from this request's
    // generation (a reload's routes apply to the next request on a kept-alive
    // connection); the listener's own settings stay the connection's.
    let Some(listener_idx) = routes_of(&snapshot, &conn.listener) else {
        // The listener was removed by a reload while this connection lived.
        return reply::error(StatusCode::SERVICE_UNAVAILABLE, None, true);
    };
    let mut done = Completion {
        snapshot: snapshot.clone(),
        listener: listener_idx,
        upstream: None,
        status: 0,
        start,
        server: None,
        bytes: 0,
        complete: false,
        log: access::capture(&snapshot, &conn, &req),
        _active: None,
        _in_flight: in_flight,
    };
    let Some(routes) = snapshot.listeners.get(listener_idx) else {
        return reply::error(StatusCode::SERVICE_UNAVAILABLE, Some(done), true);
    };
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
    let up_idx = routes.route(routing_host, req.uri().path());
    done.upstream = Some(up_idx);
    let Some(upstream) = snapshot.upstreams.get(up_idx) else {
        return reply::error(StatusCode::SERVICE_UNAVAILABLE, Some(done), false);
    };

    let prepared = prepare(
        &conn,
        upstream,
        host_value.as_ref(),
        req,
        client_upgrade,
        &mut done,
    );
    forward(&worker, &conn, upstream, prepared, done).await
}

/// The request as every attempt sends it: the outgoing head written once,
/// its body, the consistent-hash key, and the client's side of an upgrade.
struct Prepared {
    exchange: Exchange,
    body: ReqBody,
    hash: Option<u64>,
    client_upgrade: Option<ClientUpgrade>,
}

fn prepare(
    conn: &ConnInfo,
    upstream: &Upstream,
    host_value: Option<&HeaderValue>,
    req: Request<ClientBody>,
    client_upgrade: Option<ClientUpgrade>,
    done: &mut Completion,
) -> Prepared {
    let listener = &conn.listener;
    let is_upgrade = client_upgrade.is_some()
        && req.version() == Version::HTTP_11
        && headers::is_upgrade_request(req.headers());
    let (parts, mut body) = req.into_parts();
    let bodyless = body.is_end_stream();
    let framing = if parts.headers.contains_key(header::CONTENT_LENGTH) {
        OutFraming::Length
    } else if !bodyless {
        OutFraming::Chunked
    } else if expects_body(&parts.method) {
        OutFraming::ZeroLength
    } else {
        OutFraming::None
    };
    // The head is written once and sent as is by every attempt.
    let mut head = Vec::with_capacity(512);
    headers::encode_request_head(
        &Outgoing {
            method: &parts.method,
            target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            headers: &parts.headers,
            upgrade: is_upgrade,
            framing,
        },
        &Forwarded {
            client_ip: &conn.client_ip,
            https: conn.https,
            host: host_value,
        },
        &mut head,
    );
    done.request_id_from(&head);
    let hash = request_hash(upstream, &parts.headers, conn.peer);
    let exchange = Exchange {
        head,
        head_request: parts.method == Method::HEAD,
        upgrade: is_upgrade,
        connected: Cell::new(None),
        // A request without a body that may be repeated after it was sent.
        replayable: bodyless && !is_upgrade && retryable_after_send(&parts.method),
        limits: Limits {
            response: upstream.config.timeouts.response,
            client_idle: listener.config.timeouts.client_idle,
        },
    };
    body.count_into(done.body_counter());
    let body = match framing {
        _ if bodyless => ReqBody::None,
        OutFraming::Chunked => ReqBody::Chunked(body),
        _ => ReqBody::Length(body),
    };
    Prepared {
        exchange,
        body,
        hash,
        client_upgrade,
    }
}

/// The attempts of one request: [`Attempts`](crate::upstream::attempts)
/// decides, this sends and answers.
async fn forward(
    worker: &Rc<Worker>,
    conn: &ConnInfo,
    upstream: &Upstream,
    p: Prepared,
    mut done: Completion,
) -> Response<ProxyBody> {
    let Prepared {
        exchange,
        body,
        hash,
        client_upgrade,
    } = p;
    let listener = &conn.listener;
    let mut body = Some(body);
    let mut attempts = upstream.attempts(hash, exchange.replayable);
    // The first attempt may wait in the queue (max_requests_per_server).
    attempts.queued(upstream.acquire(hash).await);
    while let Some(mut sel) = attempts.next() {
        let Some(req_body) = body.take() else {
            break;
        };
        let active = sel.begin();
        let sent_at = Instant::now();
        done.attempt_started();
        let sent = send(worker, upstream, &sel, &exchange, req_body).await;
        done.attempt_ended(exchange.connected.get(), sent.is_ok().then_some(sent_at));
        let now = Instant::now();
        let (outcome, sent) = match sent {
            Ok((resp, server_conn)) => {
                let status = resp.status.as_u16();
                let elapsed = now.saturating_duration_since(sent_at);
                (
                    Outcome::Response { status, elapsed },
                    Ok((resp, server_conn)),
                )
            }
            Err(e) => (Outcome::Failed(e.failure), Err(e.body)),
        };
        match (attempts.report(&sel, outcome, now), sent) {
            (Verdict::Respond, Ok((resp, server_conn))) => {
                done.server = Some(sel.server.clone());
                done._active = Some(active);
                return respond(
                    worker,
                    upstream,
                    &sel,
                    resp,
                    server_conn,
                    done,
                    client_upgrade,
                );
            }
            (Verdict::Client(f), _) => {
                // The client's own upload broke: only a malformed body is a
                // refusal; a client that went away or stalled is not hostile.
                if f == Failure::Client(ClientFault::Malformed) {
                    listener.state.metrics.rejected("bad_body");
                    ratelog::log_refusal(&listener.config.name, Some(conn.peer), "bad_body", 400);
                } else {
                    tracing::debug!(kind = f.kind(), "client upload ended the request");
                }
                return reply::error(f.client_status(), Some(done), true);
            }
            (Verdict::Fail(status), _) => return reply::error(status, Some(done), false),
            // Nothing was sent: the body (if any) came back.
            (Verdict::Retry, Err(returned)) if matches!(outcome, Outcome::Failed(f) if f.before_send()) =>
            {
                body = Some(returned);
            }
            // Replayable: a request without a body.
            (Verdict::Retry, _) => body = Some(ReqBody::None),
            // `report` says Respond only to a response.
            (Verdict::Respond, Err(_)) => break,
        }
    }
    reply::error(attempts.status(), Some(done), false)
}

/// What every attempt of one request sends.
struct Exchange {
    head: Vec<u8>,
    head_request: bool,
    upgrade: bool,
    replayable: bool,
    limits: Limits,
    /// Time to a usable connection in the attempt under way (zero for a
    /// pooled one), for the access log.
    connected: Cell<Option<Duration>>,
}

/// Methods whose requests carry content by definition: without a body they
/// still say `Content-Length: 0`, so a server never waits for one.
fn expects_body(m: &Method) -> bool {
    *m == Method::POST || *m == Method::PUT || *m == Method::PATCH
}

/// Sends one attempt to the selected server: pooled connections first, then a
/// fresh one. A pooled connection the server had closed is not a failure: the
/// request goes out again on the next connection when that is safe.
async fn send(
    worker: &Rc<Worker>,
    upstream: &Upstream,
    sel: &Selected,
    ex: &Exchange,
    mut body: ReqBody,
) -> Result<(Head, Conn), SendError> {
    let t = &upstream.config.timeouts;
    ex.connected.set(None);
    while let Some(mut server) = worker.pool.take(&sel.server) {
        if !server.made_with(upstream.tls()) {
            continue; // made before a reload changed `tls`
        }
        ex.connected.set(Some(Duration::ZERO));
        match exchange(&mut server, ex, body).await {
            Ok(head) => return Ok((head, server)),
            Err(e) if may_resend(e.replay, ex.replayable) => {
                body = match e.replay {
                    Replay::Unsent => e.body,
                    _ => ReqBody::None,
                }
            }
            Err(e) => return Err(e),
        }
    }
    let host = upstream.host(sel.index);
    let connecting = Instant::now();
    let connect = Conn::connect(sel.server.connect_order(), host, upstream.tls(), t.connect);
    let mut server = match connect.await {
        Ok(c) => {
            ex.connected.set(Some(connecting.elapsed()));
            c
        }
        Err(failure) => {
            return Err(SendError {
                failure,
                replay: Replay::Unsent,
                body,
            })
        }
    };
    let head = exchange(&mut server, ex, body).await?;
    Ok((head, server))
}

async fn exchange(server: &mut Conn, ex: &Exchange, body: ReqBody) -> Result<Head, SendError> {
    server
        .send(ex.limits, &ex.head, body, ex.head_request, ex.upgrade)
        .await
}

fn respond(
    worker: &Rc<Worker>,
    upstream: &Upstream,
    sel: &Selected,
    head: Head,
    server: Conn,
    mut done: Completion,
    client_upgrade: Option<ClientUpgrade>,
) -> Response<ProxyBody> {
    done.status = head.status.as_u16();
    // A success is recorded once the body has ended, so a good head followed
    // by a stalled body (`timeouts.read`) does not reset the failure count
    // the stall adds: a server that always stalls still opens its breaker.
    let success_at_end = !sel.trial
        && !upstream
            .config
            .circuit_breaker
            .failure_status
            .contains(&done.status);
    let mut parts = Response::new(()).into_parts().0;
    parts.status = head.status;
    if head.framing == Framing::Upgrade {
        if success_at_end {
            attempt::record_success(&sel.server, Instant::now());
        }
        parts.headers = head.headers;
        let Some(client) = client_upgrade else {
            // `Conn::send` refuses a 101 that was not asked for.
            return reply::error(StatusCode::BAD_GATEWAY, Some(done), false);
        };
        // The server connection now belongs to the tunnel.
        upgrade::spawn_tunnel(client, server.into_parts(), done);
        return Response::from_parts(parts, ProxyBody::Plain { data: None });
    }
    let idle = upstream.config.timeouts.idle;
    let ret = PoolReturn {
        worker: worker.clone(),
        server: sel.server.clone(),
        keep_for: head.keep_alive_timeout.map_or(idle, |k| k.min(idle)),
        max_idle: upstream.config.pool.max_idle_per_server,
    };
    let body = ResponseBody::new(server, &head, upstream.config.timeouts.read);
    parts.headers = head.headers;
    Response::from_parts(parts, ProxyBody::upstream(body, ret, done, success_at_end))
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
