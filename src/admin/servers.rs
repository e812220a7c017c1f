//! `GET` and `PUT /upstreams/{upstream}/servers/{address}`: one server's state,
//! and the operator's changes to it (admin state, weight override).
//!
//! Owns the endpoint's path and body format, the server's JSON view (also used
//! per server by `/status`) and the scrape-time refresh of the per-server
//! gauges. It does not own the state: a PUT records the change in the
//! [`RuntimeStore`] (the one place it lives, persisted and replicated from
//! there) and applies the store to the live servers before answering, so once
//! the answer is sent no new request is sent to a drained server.
//!
//! `{address}` is the server's address as configured, written plainly
//! (`10.0.0.1:3000`) or percent-encoded (`10.0.0.1%3A3000`). The token check
//! and the audit record of a refused request are `admin.rs`'s; this module
//! records the outcome of every PUT that passed it.
//!
//! Tested by the parsing unit tests below and end to end in
//! `tests/operations/server_state.rs`.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{error, json_reply, AdminContext, Reply};
use crate::audit::{self, Source};
use crate::config::types;
use crate::snapshot::Snapshot;
use crate::upstream::runtime::{unix_ms, AdminState, RuntimeChange};
use crate::upstream::state::tier;
use crate::upstream::{phase_label, ServerKey, ServerState};

/// Largest PUT body read; the valid ones are a few dozen bytes.
const MAX_BODY: usize = 16 * 1024;

/// Highest weight override, the same bound as a configured weight.
const MAX_WEIGHT: u64 = 1000;

/// Serves `/upstreams/{rest}`; `rest` is the path after `/upstreams/`.
/// `method` is the request's, with HEAD read as GET.
pub(super) async fn route(
    ctx: &AdminContext,
    req: Request<Incoming>,
    method: &Method,
    rest: &str,
    source: &Source,
) -> Reply {
    let Some(key) = parse_path(rest) else {
        return error(StatusCode::NOT_FOUND, "not found");
    };
    match *method {
        Method::GET => match find(&ctx.snapshot.load(), &key) {
            Some(v) => json_reply(StatusCode::OK, &v),
            None => not_found(&key),
        },
        Method::PUT => {
            let action = format!("PUT /upstreams/{}/servers/{}", key.upstream, key.address);
            let (reply, result) = put(ctx, req, &key).await;
            audit::admin_write(source, &action, &result);
            reply
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// Applies a PUT; the answer and the result for the audit log.
async fn put(ctx: &AdminContext, req: Request<Incoming>, key: &ServerKey) -> (Reply, String) {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let msg = format!("cannot read the body: {e}");
            return (error(StatusCode::BAD_REQUEST, &msg), format!("400 {msg}"));
        }
    };
    if find(&ctx.snapshot.load(), key).is_none() {
        return (not_found(key), "404 unknown server".to_owned());
    }
    let change = match parse_body(&body) {
        Ok(c) => c,
        Err(msg) => return (error(StatusCode::BAD_REQUEST, &msg), format!("400 {msg}")),
    };
    let entry = ctx
        .runtime
        .set_local(key, change, unix_ms(std::time::SystemTime::now()));
    // Applied to the snapshot in use now, before answering: the caller may
    // rely on "no new request to this server" once it has the answer.
    let snap = ctx.snapshot.load();
    ctx.runtime.apply(&snap.upstreams);
    let result = format!(
        "200 state={} weight={}",
        entry.state.as_str(),
        entry.weight.map_or("null".to_owned(), |w| w.to_string())
    );
    match find(&snap, key) {
        Some(v) => (json_reply(StatusCode::OK, &v), result),
        None => (not_found(key), "404 unknown server".to_owned()),
    }
}

fn not_found(key: &ServerKey) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        &format!("no server {:?} in upstream {:?}", key.address, key.upstream),
    )
}

/// The server's JSON view in `snapshot`, if it has that server.
fn find(snapshot: &Snapshot, key: &ServerKey) -> Option<Value> {
    let u = snapshot.upstream(&key.upstream)?;
    let (s, c) = u
        .servers
        .iter()
        .zip(&u.config.servers)
        .find(|(s, _)| s.key == *key)?;
    let mut v = server_json(s, &u.config, c, Instant::now());
    if let Some(o) = v.as_object_mut() {
        o.insert("upstream".into(), json!(key.upstream));
    }
    Some(v)
}

/// One server as the admin API and `/status` show it.
pub(super) fn server_json(
    s: &ServerState,
    u: &types::Upstream,
    c: &types::Server,
    now: Instant,
) -> Value {
    let w = reported_weight(s, u, c);
    // A whole weight reads as an integer (`3`, not `3.0`), a slow-start
    // fraction as a number with decimals.
    let weight = if w.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&w) {
        json!(w as u64)
    } else {
        json!((w * 1000.0).round() / 1000.0)
    };
    json!({
        "address": s.key.address,
        "resolved": s.addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "health": if s.is_healthy() { "healthy" } else { "unhealthy" },
        "breaker": phase_label(s.breaker.phase(now)).0,
        "admin_state": s.admin_state().as_str(),
        "weight": weight,
        "configured_weight": c.weight,
        "weight_override": s.weight_override(),
        "tier": tier(c),
        "in_flight": s.active(),
        "active_requests": s.active(),
    })
}

/// The effective weight shown by the API, `/status` and
/// `tandem_upstream_server_weight`: the one place it is read for reporting
/// (slow start, when configured on `upstream`, makes it fractional).
fn reported_weight(s: &ServerState, upstream: &types::Upstream, c: &types::Server) -> f64 {
    s.reported_weight(c.weight, upstream.slow_start)
}

/// Sets every per-server gauge that is not kept current by the request path
/// (breaker phase, in flight, effective weight, admin state, tier).
pub(super) fn refresh_gauges(snapshot: &Snapshot) {
    let now = Instant::now();
    for u in &snapshot.upstreams {
        for (s, c) in u.servers.iter().zip(&u.config.servers) {
            let m = &s.metrics;
            m.breaker_state.set(phase_label(s.breaker.phase(now)).1);
            m.in_flight
                .set(i64::try_from(s.active()).unwrap_or(i64::MAX));
            m.weight.set(reported_weight(s, &u.config, c));
            m.admin_state.set(i64::from(s.admin_state().as_u8()));
            m.tier.set(i64::from(tier(c)));
        }
    }
}

/// `{upstream}/servers/{address}` (after `/upstreams/`), percent-decoded.
fn parse_path(rest: &str) -> Option<ServerKey> {
    let (upstream, address) = rest.split_once("/servers/")?;
    let upstream = percent_decode(upstream)?;
    let address = percent_decode(address)?;
    if upstream.is_empty() || address.is_empty() || upstream.contains('/') {
        return None;
    }
    Some(ServerKey { upstream, address })
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `{"state": "ready"|"drain"|"maint", "weight": N|null}`, either key or both.
fn parse_body(body: &Bytes) -> Result<RuntimeChange, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err(r#"body must be a JSON object such as {"state": "drain"}"#.to_owned());
    };
    let mut change = RuntimeChange::default();
    for (k, v) in &map {
        match k.as_str() {
            "state" => {
                change.state = Some(match v.as_str() {
                    Some("ready") => AdminState::Ready,
                    Some("drain") => AdminState::Drain,
                    Some("maint") => AdminState::Maint,
                    _ => {
                        return Err(format!(
                            r#"state must be "ready", "drain" or "maint", not {v}"#
                        ))
                    }
                })
            }
            "weight" => {
                change.weight = Some(match v {
                    Value::Null => None,
                    _ => match v.as_u64().filter(|w| *w <= MAX_WEIGHT) {
                        Some(w) => Some(u32::try_from(w).unwrap_or(u32::MAX)),
                        None => {
                            return Err(format!(
                                "weight must be an integer 0..{MAX_WEIGHT} or null, not {v}"
                            ))
                        }
                    },
                })
            }
            other => {
                return Err(format!(
                    r#"unknown key "{other}": the body takes "state" and "weight""#
                ))
            }
        }
    }
    if change.state.is_none() && change.weight.is_none() {
        return Err(r#"body needs "state" or "weight""#.to_owned());
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_take_plain_and_encoded_addresses() {
        let k = |u: &str, a: &str| {
            Some(ServerKey {
                upstream: u.into(),
                address: a.into(),
            })
        };
        assert_eq!(
            parse_path("app/servers/127.0.0.1:3001"),
            k("app", "127.0.0.1:3001")
        );
        assert_eq!(
            parse_path("app/servers/127.0.0.1%3A3001"),
            k("app", "127.0.0.1:3001")
        );
        assert_eq!(
            parse_path("app/servers/%5B%3A%3A1%5D%3A80"),
            k("app", "[::1]:80")
        );
        assert_eq!(parse_path("app/servers/"), None);
        assert_eq!(parse_path("app/server/1.2.3.4:5"), None);
        assert_eq!(parse_path("app/servers/1.2.3.4%3"), None, "broken escape");
        assert_eq!(parse_path("app/servers/%ZZ"), None);
    }

    fn body(s: &str) -> Result<RuntimeChange, String> {
        parse_body(&Bytes::from(s.to_owned()))
    }

    #[test]
    fn bodies_set_either_key() {
        assert_eq!(
            body(r#"{"state":"drain"}"#),
            Ok(RuntimeChange {
                state: Some(AdminState::Drain),
                weight: None
            })
        );
        assert_eq!(
            body(r#"{"weight":5}"#),
            Ok(RuntimeChange {
                state: None,
                weight: Some(Some(5))
            })
        );
        assert_eq!(
            body(r#"{"state":"maint","weight":null}"#),
            Ok(RuntimeChange {
                state: Some(AdminState::Maint),
                weight: Some(None)
            })
        );
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let err = |s: &str| body(s).unwrap_err();
        assert!(err("{").contains("not valid JSON"));
        assert!(err("[]").contains("must be a JSON object"));
        assert!(err("{}").contains(r#"needs "state" or "weight""#));
        assert!(err(r#"{"state":"down"}"#).contains(r#"state must be "ready""#));
        assert!(err(r#"{"state":1}"#).contains("state must be"));
        assert!(err(r#"{"weight":-1}"#).contains("weight must be an integer 0..1000"));
        assert!(err(r#"{"weight":1001}"#).contains("weight must be"));
        assert!(err(r#"{"weight":1.5}"#).contains("weight must be"));
        assert!(err(r#"{"state":"drain","wieght":1}"#).contains(r#"unknown key "wieght""#));
    }
}
