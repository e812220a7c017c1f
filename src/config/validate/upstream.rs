//! `upstreams[]`: balancing, servers, health checks, circuit breaker, retries,
//! timeouts and pool; unique names and unique server addresses per upstream.
//!
//! Returns every upstream that has a mapping, even a broken one, so later
//! cross-references see its name and do not report it twice. Tested by the golden
//! fixtures.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{value, Ctx};
use crate::config::raw::{
    RawCircuitBreaker, RawHealthCheck, RawServer, RawUpstream, RawUpstreamTls,
};
use crate::config::span::{child, item};
use crate::config::types::{
    BalanceKind, CertificatePaths, CircuitBreaker, Failover, HashKey, HealthCheck, Pool, Probe,
    Queue, Server, ServerNotify, Upstream, UpstreamTimeouts, UpstreamTls,
};
use rustls::pki_types::pem::PemObject;

pub fn all(cx: &mut Ctx<'_>, raw: Option<Vec<Option<RawUpstream>>>) -> Vec<Upstream> {
    let Some(raw) = cx.required(raw, "upstreams") else {
        return Vec::new();
    };
    if raw.is_empty() {
        cx.err("upstreams", "at least one upstream is required");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let Some(u) = u else { continue };
        let path = item("upstreams", i);
        let upstream = upstream(cx, u, &path);
        if !upstream.name.is_empty() && !seen.insert(upstream.name.clone()) {
            let msg = format!("duplicate upstream name \"{}\"", upstream.name);
            cx.err(&child(&path, "name"), msg);
        }
        out.push(upstream);
    }
    out
}

fn upstream(cx: &mut Ctx<'_>, raw: RawUpstream, path: &str) -> Upstream {
    let p = |k: &str| child(path, k);
    let name = cx.name(raw.name, path).unwrap_or_default();
    let balance = match raw.balance.as_deref() {
        None | Some("round_robin") => Some(BalanceKind::RoundRobin),
        Some("least_connections") => Some(BalanceKind::LeastConnections),
        Some("random_two") => Some(BalanceKind::RandomTwo),
        Some("peak_ewma") => Some(BalanceKind::PeakEwma),
        Some("consistent_hash") => Some(BalanceKind::ConsistentHash),
        Some(other) => {
            let msg = format!(
                "unknown balance \"{other}\" (expected round_robin, least_connections, \
                 random_two, peak_ewma or consistent_hash)"
            );
            cx.err(&p("balance"), msg);
            None
        }
    };
    // With an invalid balance, a hash_key error would only be noise.
    let hash_key = match (&raw.hash_key, balance) {
        (Some(k), Some(BalanceKind::ConsistentHash)) => {
            cx.parse(Some(k), &p("hash_key"), value::hash_key)
        }
        (None, Some(BalanceKind::ConsistentHash)) => Some(HashKey::ClientIp),
        (Some(_), Some(_)) => {
            let msg =
                "hash_key only applies to balance: consistent_hash; remove it or change balance";
            cx.err(&p("hash_key"), msg);
            None
        }
        _ => None,
    };
    let balance = balance.unwrap_or(BalanceKind::RoundRobin);
    let servers = servers(cx, raw.servers, &p("servers"));
    let resolve_interval = cx.duration(
        raw.resolve_interval.as_deref(),
        &p("resolve_interval"),
        Duration::from_secs(30),
    );
    let health_check = raw
        .health_check
        .map(|h| health_check(cx, h, &p("health_check")));
    let circuit_breaker = raw
        .circuit_breaker
        .map(|c| circuit_breaker(cx, c, &p("circuit_breaker")))
        .unwrap_or_default();
    let retries = cx.int(raw.retries, &p("retries"), 2, 0, 10);
    let timeouts = UpstreamTimeouts {
        connect: cx.duration(
            raw.connect.as_deref(),
            &p("timeouts.connect"),
            Duration::from_secs(2),
        ),
        response: cx.duration(
            raw.response.as_deref(),
            &p("timeouts.response"),
            Duration::from_secs(30),
        ),
        idle: cx.duration(
            raw.idle.as_deref(),
            &p("timeouts.idle"),
            Duration::from_secs(4),
        ),
        read: cx.duration(
            raw.read.as_deref(),
            &p("timeouts.read"),
            Duration::from_secs(30),
        ),
    };
    let max_idle = cx.int(
        raw.max_idle_per_server,
        &p("pool.max_idle_per_server"),
        64,
        0,
        1_000_000,
    );
    let failover = match raw.failover.as_deref() {
        None | Some("all_down") => Failover::AllDown,
        Some("gradual") => Failover::Gradual,
        Some(other) => {
            let msg = format!("unknown failover \"{other}\" (expected all_down or gradual)");
            cx.err(&p("failover"), msg);
            Failover::AllDown
        }
    };
    let slow_start = raw
        .slow_start
        .as_deref()
        .map(|v| cx.duration(Some(v), &p("slow_start"), Duration::from_secs(30)));
    let cap = cx.int(
        raw.max_requests_per_server,
        &p("max_requests_per_server"),
        0,
        0,
        1_000_000,
    );
    let queue_size = cx.int(raw.queue_size, &p("queue.size"), 1000, 0, 1_000_000);
    let queue = Queue {
        size: usize::try_from(queue_size).unwrap_or(1000),
        timeout: cx.duration(
            raw.queue_timeout.as_deref(),
            &p("queue.timeout"),
            Duration::from_secs(5),
        ),
    };
    let notify = raw
        .notify
        .map(|n| {
            let mut hook = |w: Option<String>, key: &str| {
                w.map(|w| super::ha::hook(cx, &w, &p(&format!("notify.{key}"))))
            };
            ServerNotify {
                down: hook(n.down, "down"),
                up: hook(n.up, "up"),
                breaker_open: hook(n.breaker_open, "breaker_open"),
            }
        })
        .unwrap_or_default();
    let tls = raw.tls.map(|t| upstream_tls(cx, t, &p("tls")));
    Upstream {
        name,
        balance,
        hash_key,
        servers,
        resolve_interval,
        health_check,
        circuit_breaker,
        retries: u32::try_from(retries).unwrap_or(2),
        timeouts,
        pool: Pool {
            max_idle_per_server: usize::try_from(max_idle).unwrap_or(64),
        },
        failover,
        slow_start,
        max_requests_per_server: u32::try_from(cap).unwrap_or(0),
        queue,
        notify,
        tls,
    }
}

fn servers(cx: &mut Ctx<'_>, raw: Option<Vec<Option<RawServer>>>, path: &str) -> Vec<Server> {
    let Some(raw) = cx.required(raw, path) else {
        return Vec::new();
    };
    if raw.is_empty() {
        cx.err(
            path,
            "upstream has no servers; add at least one under servers",
        );
    }
    let mut seen: HashMap<(String, u16), String> = HashMap::new();
    let mut out = Vec::new();
    for (i, s) in raw.into_iter().enumerate() {
        let Some(s) = s else { continue };
        let spath = item(path, i);
        let apath = child(&spath, "address");
        let weight = cx.int(s.weight, &child(&spath, "weight"), 1, 0, 1000);
        let tier = cx.int(s.tier, &child(&spath, "tier"), 0, 0, 7);
        let Some(address) = cx.required(s.address, &apath) else {
            continue;
        };
        let Some((host, port)) = cx.parse(Some(&address), &apath, value::server_address) else {
            continue;
        };
        let key = (host.to_ascii_lowercase(), port);
        if let Some(first) = seen.get(&key) {
            let msg = format!("duplicate server \"{address}\" (also at {first})");
            cx.err(&apath, msg);
        } else {
            seen.insert(key, spath);
        }
        out.push(Server {
            address,
            host,
            port,
            weight: u32::try_from(weight).unwrap_or(1),
            tier: u8::try_from(tier).unwrap_or(0),
        });
    }
    out
}

/// `tls`: the files are read and checked as the proxy will load them (a CA with at
/// least one certificate; a client certificate with its key, not expired).
fn upstream_tls(cx: &mut Ctx<'_>, raw: RawUpstreamTls, path: &str) -> UpstreamTls {
    let p = |k: &str| child(path, k);
    let ca = raw.ca.map(|written| {
        let f = super::listener::file(cx, Some(written), &p("ca"), "CA file");
        if let Some(bytes) = &f.bytes {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(bytes)
                .collect::<Result<Vec<_>, _>>();
            match certs {
                Ok(c) if !c.is_empty() => {}
                Ok(_) => cx.err(
                    &p("ca"),
                    format!("CA file \"{}\": no PEM certificate found", f.written),
                ),
                Err(e) => cx.err(&p("ca"), format!("CA file \"{}\": {e}", f.written)),
            }
        }
        f.resolved
    });
    if let Some(name) = &raw.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            cx.err(
                &p("server_name"),
                format!("\"{name}\" is not a valid DNS name or IP address"),
            );
        }
    }
    let client = match (raw.cert, raw.key) {
        (None, None) => None,
        (cert, key) => {
            let cert = super::listener::file(cx, cert, &p("cert"), "certificate");
            let key = super::listener::file(cx, key, &p("key"), "private key");
            if let (Some(c), Some(k)) = (&cert.bytes, &key.bytes) {
                super::listener::check_pair(cx, (&cert, c), (&key, k), path);
            }
            Some(CertificatePaths {
                cert: cert.resolved,
                key: key.resolved,
            })
        }
    };
    UpstreamTls {
        ca,
        server_name: raw.server_name,
        client,
        verify: raw.verify.unwrap_or(true),
    }
}

fn health_check(cx: &mut Ctx<'_>, raw: RawHealthCheck, path: &str) -> HealthCheck {
    let p = |k: &str| child(path, k);
    let probe = match (raw.http, raw.tcp) {
        (Some(_), true) => {
            cx.err(&p("tcp"), "set only one of http or tcp");
            Probe::Tcp
        }
        (Some(h), false) => {
            let probe_path = h.path.unwrap_or_else(|| "/".to_string());
            if !probe_path.starts_with('/') {
                let msg = format!("path must start with '/', found \"{probe_path}\"");
                cx.err(&p("http.path"), msg);
            }
            let expect = match h.expect_status {
                Some(s) => cx.parse(Some(&s), &p("http.expect_status"), value::status_range),
                None => None,
            };
            Probe::Http {
                path: probe_path,
                host: h.host,
                expect_status: expect.unwrap_or((200, 399)),
            }
        }
        (None, true) => Probe::Tcp,
        (None, false) => {
            if !cx.spans.contains(&p("http")) {
                cx.err(path, "set exactly one probe: http (with a path) or tcp: {}");
            }
            Probe::Tcp
        }
    };
    let interval = cx.duration(
        raw.interval.as_deref(),
        &p("interval"),
        Duration::from_secs(2),
    );
    let timeout = cx.duration(
        raw.timeout.as_deref(),
        &p("timeout"),
        Duration::from_secs(1),
    );
    let rise = cx.int(raw.rise, &p("rise"), 2, 1, 100);
    let fall = cx.int(raw.fall, &p("fall"), 3, 1, 100);
    HealthCheck {
        probe,
        interval,
        timeout,
        rise: u32::try_from(rise).unwrap_or(2),
        fall: u32::try_from(fall).unwrap_or(3),
    }
}

fn circuit_breaker(cx: &mut Ctx<'_>, raw: RawCircuitBreaker, path: &str) -> CircuitBreaker {
    let p = |k: &str| child(path, k);
    let d = CircuitBreaker::default();
    let threshold = cx.int(raw.failure_threshold, &p("failure_threshold"), 5, 1, 10_000);
    let mut failure_status = d.failure_status.clone();
    if let Some(codes) = raw.failure_status {
        failure_status = Vec::with_capacity(codes.len());
        for (i, c) in codes.into_iter().enumerate() {
            match value::status(&c.to_string()) {
                Ok(code) => failure_status.push(code),
                Err(msg) => cx.err(&item(&p("failure_status"), i), msg),
            }
        }
    }
    CircuitBreaker {
        failure_threshold: u32::try_from(threshold).unwrap_or(d.failure_threshold),
        reset_timeout: cx.duration(
            raw.reset_timeout.as_deref(),
            &p("reset_timeout"),
            d.reset_timeout,
        ),
        monitor_interval: cx.duration(
            raw.monitor_interval.as_deref(),
            &p("monitor_interval"),
            d.monitor_interval,
        ),
        failure_status,
    }
}
