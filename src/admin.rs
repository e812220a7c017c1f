//! The admin API on `admin.bind`: health, readiness, metrics, status,
//! reload, HA maintenance and (in `servers`) one server's runtime state.
//!
//! Served by hyper on the control runtime, never on a worker. POST, PUT and
//! DELETE endpoints require `Authorization: Bearer <token>` when
//! `admin.token_file` is set (compared in constant time). Every failure answers
//! with a JSON body `{"error": "..."}`. Every write is recorded in the audit log
//! with the client's address and whether the token was used (a reload by the
//! control loop, with its outcome; the others here). Reloads are not done here:
//! the request is passed to the control loop, which owns the generations, and
//! its answer is awaited. During shutdown it keeps answering: `/readyz` 503,
//! `POST /reload` 503.
//!
//! Tested by `tests/lifecycle/admin_api.rs` (every endpoint, token, 404/405),
//! `tests/operations/server_state.rs` and the token comparison unit test below.

mod servers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{self, Source};
use crate::ha::HaHandle;
use crate::reload::{lock, unix_ms, ControlStatus, ReloadError};
use crate::snapshot::SnapshotHandle;
use crate::upstream::runtime::RuntimeStore;

/// A reload request for the control loop: who asked (for the audit log) and
/// where to send the outcome.
pub struct ReloadRequest {
    pub source: Source,
    pub reply: oneshot::Sender<Result<u64, Arc<ReloadError>>>,
}

/// What the admin API reads and whom it asks.
#[derive(Clone)]
pub struct AdminContext {
    pub snapshot: SnapshotHandle,
    pub status: Arc<ControlStatus>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub ha: Option<HaHandle>,
    pub config_path: String,
    /// The operator's server states (admin state, weight override).
    pub runtime: RuntimeStore,
}

type Reply = Response<Full<Bytes>>;

/// Serves the admin API on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, ctx: AdminContext) {
    let bind = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut last_error_log = None;
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                crate::listener::accept_failed(bind, &e, &mut last_error_log).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(route(&ctx, req, remote).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds the admin address (startup fails if it cannot).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_reply(status: StatusCode, v: &serde_json::Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Reply {
    json_reply(status, &json!({ "error": msg }))
}

async fn route(ctx: &AdminContext, req: Request<Incoming>, remote: SocketAddr) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let write = matches!(method, Method::POST | Method::PUT | Method::DELETE);
    let allowed = !write || authorized(ctx, &req);
    let source = Source::Admin {
        remote,
        // The configured token was presented (and matched).
        token: write && allowed && token_configured(ctx),
    };
    if !allowed {
        audit::admin_write(&source, &format!("{method} {path}"), "401 unauthorized");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    // HEAD is answered as GET; hyper leaves the body out.
    let route_method = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    if let Some(rest) = path.strip_prefix("/upstreams/") {
        return servers::route(ctx, req, &route_method, rest, &source).await;
    }
    match (&route_method, path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(ctx),
        (&Method::GET, "/metrics") => metrics_reply(ctx),
        (&Method::GET, "/status") => json_reply(StatusCode::OK, &status_json(ctx)),
        (&Method::POST, "/reload") => reload(ctx, source).await,
        (&Method::POST, "/ha/maintenance") | (&Method::DELETE, "/ha/maintenance") => {
            match &ctx.ha {
                None => {
                    audit::admin_write(&source, &format!("{method} {path}"), "409 no ha section");
                    error(
                        StatusCode::CONFLICT,
                        "high availability is not configured (no ha section)",
                    )
                }
                Some(ha) => {
                    let on = method == Method::POST;
                    ha.set_maintenance(on);
                    audit::admin_write(&source, &format!("{method} {path}"), "200 ok");
                    json_reply(StatusCode::OK, &json!({ "maintenance": on }))
                }
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/status" | "/reload" | "/ha/maintenance") => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn token_configured(ctx: &AdminContext) -> bool {
    ctx.snapshot.peek().config.admin.token.is_some()
}

fn authorized(ctx: &AdminContext, req: &Request<Incoming>) -> bool {
    let snap = ctx.snapshot.peek();
    let Some(token) = snap.config.admin.token.as_deref() else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

fn readyz(ctx: &AdminContext) -> Reply {
    let snap = ctx.snapshot.load();
    let bound = lock(&ctx.status.bound).clone();
    let mut reasons = Vec::new();
    if ctx
        .status
        .draining
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        reasons.push("shutting down: draining connections".to_owned());
    }
    for l in &snap.listeners {
        if !bound.contains_key(&l.config.bind) {
            reasons.push(format!("listener {} is not bound", l.config.name));
        }
    }
    for u in &snap.upstreams {
        if !u.has_healthy() {
            reasons.push(format!("upstream {} has no healthy server", u.config.name));
        }
    }
    if reasons.is_empty() {
        text(StatusCode::OK, "ready\n")
    } else {
        json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "error": "not ready", "reasons": reasons }),
        )
    }
}

fn metrics_reply(ctx: &AdminContext) -> Reply {
    // Open turns half-open by time alone, in-flight counts move on every
    // request: refresh the per-server gauges before a scrape.
    servers::refresh_gauges(&ctx.snapshot.load());
    let mut r = text(StatusCode::OK, crate::metrics::global().render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn status_json(ctx: &AdminContext) -> serde_json::Value {
    let snap = ctx.snapshot.load();
    let now = tokio::time::Instant::now();
    let bound = lock(&ctx.status.bound).clone();
    let upstreams: Vec<_> = snap
        .upstreams
        .iter()
        .map(|u| {
            let servers: Vec<_> = u
                .servers
                .iter()
                .zip(&u.config.servers)
                .map(|(s, c)| servers::server_json(s, &u.config, c, now))
                .collect();
            json!({
                "name": u.config.name,
                "balance": u.config.balance.as_str(),
                "hash_key": u.config.hash_key.as_ref().map(ToString::to_string),
                "servers": servers,
            })
        })
        .collect();
    let listeners: Vec<_> = snap
        .listeners
        .iter()
        .map(|l| {
            json!({
                "name": l.config.name,
                "bind": l.config.bind.to_string(),
                "bound": bound.get(&l.config.bind).map(ToString::to_string),
                "mode": l.config.mode.as_str(),
                "connections": l.state.metrics.connections_active.get(),
            })
        })
        .collect();
    let last_reload = lock(&ctx.status.last_reload).clone();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "path": ctx.config_path,
            "generation": snap.generation,
            "loaded_at": rfc3339(snap.loaded_at),
            "loaded_at_unix_ms": unix_ms(snap.loaded_at),
            "last_reload": last_reload.map(|r| json!({
                "time": rfc3339(UNIX_EPOCH + Duration::from_millis(r.at_unix_ms)),
                "time_unix_ms": r.at_unix_ms,
                "result": r.result,
                "errors": r.error.as_deref().map(problem_lines).unwrap_or_default(),
            })),
        },
        "ha": ctx.ha.as_ref().map(|h| serde_json::to_value(h.status()).unwrap_or_default()),
        "listeners": listeners,
        "upstreams": upstreams,
    })
}

/// A wall-clock time as RFC 3339 UTC with milliseconds, for people reading `/status`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

async fn reload(ctx: &AdminContext, source: Source) -> Reply {
    let (tx, rx) = oneshot::channel();
    let req = ReloadRequest { source, reply: tx };
    if ctx.reload.send(req).await.is_err() {
        // Not passed to the control loop, so no reload record: record it here.
        audit::admin_write(&source, "POST /reload", "503 shutting down");
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match rx.await {
        Ok(Ok(generation)) => json_reply(StatusCode::OK, &json!({ "generation": generation })),
        Ok(Err(e)) => json_reply(
            StatusCode::BAD_REQUEST,
            &json!({
                "error": "configuration invalid; previous configuration kept",
                "errors": problem_lines(&e),
            }),
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "reload was not answered"),
    }
}

/// A failed reload as JSON: one located message per problem.
fn problem_lines(e: &ReloadError) -> Vec<String> {
    e.problems().iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret-longer", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
    }
}
