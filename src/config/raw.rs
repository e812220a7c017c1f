//! `Raw*`: a mirror of `proxy.yaml` as written, before any meaning is checked.
//!
//! Owns the schema's shape: which keys exist where, and which are mappings, lists,
//! strings, integers or bools. Every field is an `Option` (absent or failed to
//! decode); durations, addresses and other domain values stay strings for
//! `validate` to judge. Does not apply defaults or check ranges. Invariant: every
//! unknown key and wrong type is reported, never only the first (see `decode`).
//! Tested through the golden fixtures and `config::tests`.

mod decode;

use super::error::Report;
use super::node::Node;
use super::span::SpanIndex;
use decode::{Decoder, Fields};

#[derive(Debug, Default)]
pub struct RawConfig {
    pub workers: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub admin: Option<RawAdmin>,
    pub listeners: Option<Vec<Option<RawListener>>>,
    pub upstreams: Option<Vec<Option<RawUpstream>>>,
    pub ha: Option<RawHa>,
    pub access_log: Option<RawAccessLog>,
}

#[derive(Debug, Default)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub token_file: Option<String>,
    pub state_file: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawListener {
    pub name: Option<String>,
    pub bind: Option<String>,
    pub mode: Option<String>,
    pub upstream: Option<String>,
    pub routes: Option<Vec<Option<RawRoute>>>,
    pub tls: Option<RawTls>,
    pub client_header: Option<String>,
    pub client_idle: Option<String>,
    pub max_connections: Option<i64>,
    pub http2_max_concurrent_streams: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawTls {
    pub certificates: Option<Vec<Option<RawCertificate>>>,
    pub alpn: Option<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct RawCertificate {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawUpstream {
    pub name: Option<String>,
    pub balance: Option<String>,
    pub hash_key: Option<String>,
    pub servers: Option<Vec<Option<RawServer>>>,
    pub resolve_interval: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub circuit_breaker: Option<RawCircuitBreaker>,
    pub retries: Option<i64>,
    pub connect: Option<String>,
    pub response: Option<String>,
    pub idle: Option<String>,
    pub read: Option<String>,
    pub max_idle_per_server: Option<i64>,
    pub failover: Option<String>,
    pub slow_start: Option<String>,
    pub max_requests_per_server: Option<i64>,
    pub queue_size: Option<i64>,
    pub queue_timeout: Option<String>,
    pub notify: Option<RawServerNotify>,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Default)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Default)]
pub struct RawServerNotify {
    pub down: Option<String>,
    pub up: Option<String>,
    pub breaker_open: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawServer {
    pub address: Option<String>,
    pub weight: Option<i64>,
    pub tier: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RawHealthCheck {
    pub http: Option<RawHttpProbe>,
    /// `tcp:` written (its value is an empty mapping or nothing).
    pub tcp: bool,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RawHttpProbe {
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<String>,
}

#[derive(Debug, Default)]
pub struct RawCircuitBreaker {
    pub failure_threshold: Option<i64>,
    pub reset_timeout: Option<String>,
    pub monitor_interval: Option<String>,
    pub failure_status: Option<Vec<i64>>,
}

#[derive(Debug, Default)]
pub struct RawHa {
    pub node_id: Option<String>,
    pub bind: Option<String>,
    pub peer: Option<String>,
    pub priority: Option<i64>,
    pub preempt: Option<bool>,
    pub heartbeat_interval: Option<String>,
    pub dead_interval: Option<String>,
    pub secret_file: Option<String>,
    pub vip: Option<RawVip>,
    pub vips: Option<Vec<Option<RawVip>>>,
    pub track_upstreams: Option<Vec<String>>,
    pub notify: Option<RawNotify>,
}

#[derive(Debug, Default)]
pub struct RawVip {
    pub address: Option<String>,
    pub interface: Option<String>,
    pub gratuitous_arp: Option<i64>,
    /// `ha.vips[]` only.
    pub priority: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RawNotify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
}

/// Decodes the document root. Problems go to `report`; positions to the index.
pub fn decode(root: &Node, report: &mut Report) -> (RawConfig, SpanIndex) {
    let mut d = Decoder::new(report);
    d.spans.record("", root.pos);
    let keys = [
        "workers",
        "shutdown_timeout",
        "admin",
        "listeners",
        "upstreams",
        "ha",
        "access_log",
    ];
    let raw = match d.mapping(root, "", &keys) {
        Some(f) => RawConfig {
            workers: d.string(&f, "workers"),
            shutdown_timeout: d.string(&f, "shutdown_timeout"),
            admin: sub(
                &mut d,
                &f,
                "admin",
                &["bind", "token_file", "state_file"],
                |d, f| RawAdmin {
                    bind: d.string(f, "bind"),
                    token_file: d.string(f, "token_file"),
                    state_file: d.string(f, "state_file"),
                },
            ),
            listeners: d.list_of(&f, "listeners", listener),
            upstreams: d.list_of(&f, "upstreams", upstream),
            ha: f.get("ha").and_then(|n| ha(&mut d, n, &f.path("ha"))),
            access_log: sub(&mut d, &f, "access_log", &["path", "format"], |d, a| {
                RawAccessLog {
                    path: d.string(a, "path"),
                    format: d.string(a, "format"),
                }
            }),
        },
        None => RawConfig::default(),
    };
    (raw, d.spans)
}

/// Decodes the optional mapping under `key` with `build`.
fn sub<T>(
    d: &mut Decoder<'_>,
    f: &Fields<'_>,
    key: &str,
    known: &[&str],
    build: impl FnOnce(&mut Decoder<'_>, &Fields<'_>) -> T,
) -> Option<T> {
    let node = f.get(key)?;
    let fields = d.mapping(node, &f.path(key), known)?;
    Some(build(d, &fields))
}

fn listener(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RawListener> {
    let keys = [
        "name",
        "bind",
        "mode",
        "upstream",
        "routes",
        "tls",
        "timeouts",
        "max_connections",
        "http2",
    ];
    let f = d.mapping(node, path, &keys)?;
    let timeouts = sub(
        d,
        &f,
        "timeouts",
        &["client_header", "client_idle"],
        |d, t| (d.string(t, "client_header"), d.string(t, "client_idle")),
    );
    let (client_header, client_idle) = timeouts.unwrap_or_default();
    let http2 = sub(d, &f, "http2", &["max_concurrent_streams"], |d, h| {
        d.int(h, "max_concurrent_streams")
    });
    Some(RawListener {
        name: d.string(&f, "name"),
        bind: d.string(&f, "bind"),
        mode: d.string(&f, "mode"),
        upstream: d.string(&f, "upstream"),
        routes: d.list_of(&f, "routes", |d, n, p| {
            let r = d.mapping(n, p, &["host", "path_prefix", "upstream"])?;
            Some(RawRoute {
                host: d.string(&r, "host"),
                path_prefix: d.string(&r, "path_prefix"),
                upstream: d.string(&r, "upstream"),
            })
        }),
        tls: sub(d, &f, "tls", &["certificates", "alpn"], |d, t| RawTls {
            certificates: d.list_of(t, "certificates", |d, n, p| {
                let c = d.mapping(n, p, &["cert", "key"])?;
                Some(RawCertificate {
                    cert: d.string(&c, "cert"),
                    key: d.string(&c, "key"),
                })
            }),
            alpn: d.string_list(t, "alpn"),
        }),
        client_header,
        client_idle,
        max_connections: d.int(&f, "max_connections"),
        http2_max_concurrent_streams: http2.flatten(),
    })
}

fn upstream(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RawUpstream> {
    let keys = [
        "name",
        "balance",
        "hash_key",
        "servers",
        "resolve_interval",
        "health_check",
        "circuit_breaker",
        "retries",
        "timeouts",
        "pool",
        "failover",
        "slow_start",
        "max_requests_per_server",
        "queue",
        "notify",
        "tls",
    ];
    let f = d.mapping(node, path, &keys)?;
    let queue = sub(d, &f, "queue", &["size", "timeout"], |d, q| {
        (d.int(q, "size"), d.string(q, "timeout"))
    });
    let (queue_size, queue_timeout) = queue.unwrap_or_default();
    let timeouts = sub(
        d,
        &f,
        "timeouts",
        &["connect", "response", "idle", "read"],
        |d, t| {
            (
                d.string(t, "connect"),
                d.string(t, "response"),
                d.string(t, "idle"),
                d.string(t, "read"),
            )
        },
    );
    let (connect, response, idle, read) = timeouts.unwrap_or_default();
    let pool = sub(d, &f, "pool", &["max_idle_per_server"], |d, p| {
        d.int(p, "max_idle_per_server")
    });
    let breaker_keys = [
        "failure_threshold",
        "reset_timeout",
        "monitor_interval",
        "failure_status",
    ];
    Some(RawUpstream {
        name: d.string(&f, "name"),
        balance: d.string(&f, "balance"),
        hash_key: d.string(&f, "hash_key"),
        servers: d.list_of(&f, "servers", |d, n, p| {
            let s = d.mapping(n, p, &["address", "weight", "tier"])?;
            Some(RawServer {
                address: d.string(&s, "address"),
                weight: d.int(&s, "weight"),
                tier: d.int(&s, "tier"),
            })
        }),
        resolve_interval: d.string(&f, "resolve_interval"),
        health_check: f
            .get("health_check")
            .and_then(|n| health_check(d, n, &f.path("health_check"))),
        circuit_breaker: sub(d, &f, "circuit_breaker", &breaker_keys, |d, c| {
            RawCircuitBreaker {
                failure_threshold: d.int(c, "failure_threshold"),
                reset_timeout: d.string(c, "reset_timeout"),
                monitor_interval: d.string(c, "monitor_interval"),
                failure_status: d.int_list(c, "failure_status"),
            }
        }),
        retries: d.int(&f, "retries"),
        connect,
        response,
        idle,
        read,
        max_idle_per_server: pool.flatten(),
        failover: d.string(&f, "failover"),
        slow_start: d.string(&f, "slow_start"),
        max_requests_per_server: d.int(&f, "max_requests_per_server"),
        queue_size,
        queue_timeout,
        notify: sub(d, &f, "notify", &["down", "up", "breaker_open"], |d, n| {
            RawServerNotify {
                down: d.string(n, "down"),
                up: d.string(n, "up"),
                breaker_open: d.string(n, "breaker_open"),
            }
        }),
        tls: sub(
            d,
            &f,
            "tls",
            &["ca", "server_name", "cert", "key", "verify"],
            |d, t| RawUpstreamTls {
                ca: d.string(t, "ca"),
                server_name: d.string(t, "server_name"),
                cert: d.string(t, "cert"),
                key: d.string(t, "key"),
                verify: d.bool(t, "verify"),
            },
        ),
    })
}

fn health_check(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RawHealthCheck> {
    let keys = ["http", "tcp", "interval", "timeout", "rise", "fall"];
    let f = d.mapping(node, path, &keys)?;
    if let Some(tcp) = f.get("tcp") {
        // Only `tcp: {}` (or a bare `tcp:`) makes sense; any key inside is unknown.
        d.mapping(tcp, &f.path("tcp"), &[]);
    }
    Some(RawHealthCheck {
        http: sub(d, &f, "http", &["path", "host", "expect_status"], |d, h| {
            RawHttpProbe {
                path: d.string(h, "path"),
                host: d.string(h, "host"),
                expect_status: d.string(h, "expect_status"),
            }
        }),
        tcp: f.has("tcp"),
        interval: d.string(&f, "interval"),
        timeout: d.string(&f, "timeout"),
        rise: d.int(&f, "rise"),
        fall: d.int(&f, "fall"),
    })
}

fn ha(d: &mut Decoder<'_>, node: &Node, path: &str) -> Option<RawHa> {
    let keys = [
        "node_id",
        "bind",
        "peer",
        "priority",
        "preempt",
        "heartbeat_interval",
        "dead_interval",
        "secret_file",
        "vip",
        "vips",
        "track_upstreams",
        "notify",
    ];
    let f = d.mapping(node, path, &keys)?;
    let vip_keys = ["address", "interface", "gratuitous_arp"];
    let vips_keys = ["address", "interface", "gratuitous_arp", "priority"];
    Some(RawHa {
        node_id: d.string(&f, "node_id"),
        bind: d.string(&f, "bind"),
        peer: d.string(&f, "peer"),
        priority: d.int(&f, "priority"),
        preempt: d.bool(&f, "preempt"),
        heartbeat_interval: d.string(&f, "heartbeat_interval"),
        dead_interval: d.string(&f, "dead_interval"),
        secret_file: d.string(&f, "secret_file"),
        vip: sub(d, &f, "vip", &vip_keys, |d, v| RawVip {
            address: d.string(v, "address"),
            interface: d.string(v, "interface"),
            gratuitous_arp: d.int(v, "gratuitous_arp"),
            priority: None,
        }),
        vips: d.list_of(&f, "vips", |d, n, p| {
            let v = d.mapping(n, p, &vips_keys)?;
            Some(RawVip {
                address: d.string(&v, "address"),
                interface: d.string(&v, "interface"),
                gratuitous_arp: d.int(&v, "gratuitous_arp"),
                priority: d.int(&v, "priority"),
            })
        }),
        track_upstreams: d.string_list(&f, "track_upstreams"),
        notify: sub(d, &f, "notify", &["master", "backup", "fault"], |d, n| {
            RawNotify {
                master: d.string(n, "master"),
                backup: d.string(n, "backup"),
                fault: d.string(n, "fault"),
            }
        }),
    })
}
