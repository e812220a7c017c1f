//! `listeners[]`: names, binds, modes, routes, TLS files and timeouts.
//!
//! Checks each listener alone plus the checks among listeners that need only
//! listeners (unique names); bind collisions are checked in `validate` where the
//! admin and ha binds are known. TLS files are loaded to check their contents
//! (a PEM certificate and key that match, not expired) with
//! `listener::tls::load_pair`; certificates that expire within 7 days are not
//! errors here but warnings (`listener::tls::expiry_warnings`). Tested by the
//! golden fixtures, whose certificates the test runner generates.

use std::collections::HashSet;
use std::time::Duration;

use super::{value, Ctx, NO_ADDR};
use crate::config::raw::{RawListener, RawRoute, RawTls};
use crate::config::span::{child, item};
use crate::config::types::{
    CertificatePaths, Http2Limits, Listener, ListenerMode, ListenerTimeouts, Route, Tls,
};
use crate::listener::tls;

const ALPN: [&str; 2] = ["h2", "http/1.1"];
/// HAProxy's and nginx's default (100 and 128): what one client may keep busy.
const DEFAULT_H2_STREAMS: u32 = 100;
/// Each stream may buffer up to the per-stream send buffer, so the cap bounds
/// one connection's memory.
const MAX_H2_STREAMS: u32 = 1000;

pub fn all(
    cx: &mut Ctx<'_>,
    raw: Option<Vec<Option<RawListener>>>,
    upstreams: &[String],
) -> Vec<Listener> {
    let Some(raw) = cx.required(raw, "listeners") else {
        return Vec::new();
    };
    if raw.is_empty() {
        cx.err("listeners", "at least one listener is required");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.into_iter().enumerate() {
        let Some(l) = l else { continue };
        let path = item("listeners", i);
        let listener = listener(cx, l, &path, upstreams);
        if !listener.name.is_empty() && !seen.insert(listener.name.clone()) {
            let msg = format!("duplicate listener name \"{}\"", listener.name);
            cx.err(&child(&path, "name"), msg);
        }
        out.push(listener);
    }
    out
}

fn listener(cx: &mut Ctx<'_>, raw: RawListener, path: &str, upstreams: &[String]) -> Listener {
    let p = |k: &str| child(path, k);
    let name = cx.name(raw.name, path).unwrap_or_default();
    let bind = cx.required(raw.bind, &p("bind"));
    let bind = cx.parse(bind.as_deref(), &p("bind"), value::bind);
    let mode = match raw.mode.as_deref() {
        None | Some("http") => ListenerMode::Http,
        Some("tcp") => ListenerMode::Tcp,
        Some(other) => {
            cx.err(
                &p("mode"),
                format!("expected http or tcp, found \"{other}\""),
            );
            ListenerMode::Http
        }
    };
    let upstream = cx.required(raw.upstream, &p("upstream"));
    if let Some(u) = &upstream {
        check_upstream(cx, u, &p("upstream"), upstreams);
    }
    let mut routes = Vec::new();
    let raw_routes = raw.routes.unwrap_or_default();
    if mode == ListenerMode::Tcp && !raw_routes.is_empty() {
        let msg = "tcp listeners cannot have routes; remove them or use mode: http";
        cx.err(&p("routes"), msg);
    }
    for (i, r) in raw_routes.into_iter().enumerate() {
        if let Some(r) = r {
            routes.push(route(cx, r, &item(&p("routes"), i), upstreams));
        }
    }
    let tls = raw.tls.map(|t| tls(cx, t, &p("tls"), mode));
    let timeouts = ListenerTimeouts {
        client_header: cx.duration(
            raw.client_header.as_deref(),
            &p("timeouts.client_header"),
            Duration::from_secs(10),
        ),
        client_idle: cx.duration(
            raw.client_idle.as_deref(),
            &p("timeouts.client_idle"),
            Duration::from_secs(60),
        ),
    };
    let max = cx.int(
        raw.max_connections,
        &p("max_connections"),
        10_000,
        1,
        10_000_000,
    );
    let streams = cx.int(
        raw.http2_max_concurrent_streams,
        &p("http2.max_concurrent_streams"),
        i64::from(DEFAULT_H2_STREAMS),
        1,
        i64::from(MAX_H2_STREAMS),
    );
    Listener {
        name,
        bind: bind.unwrap_or(NO_ADDR),
        mode,
        upstream: upstream.unwrap_or_default(),
        routes,
        tls,
        timeouts,
        max_connections: usize::try_from(max).unwrap_or(10_000),
        http2: Http2Limits {
            max_concurrent_streams: u32::try_from(streams).unwrap_or(DEFAULT_H2_STREAMS),
        },
    }
}

pub(super) fn check_upstream(cx: &mut Ctx<'_>, name: &str, path: &str, upstreams: &[String]) {
    // With no upstreams at all, that one error says it all.
    if !upstreams.is_empty() && !upstreams.iter().any(|u| u == name) {
        let msg = format!(
            "unknown upstream \"{name}\" (defined: {})",
            upstreams.join(", ")
        );
        cx.err(path, msg);
    }
}

fn route(cx: &mut Ctx<'_>, raw: RawRoute, path: &str, upstreams: &[String]) -> Route {
    let p = |k: &str| child(path, k);
    let host = cx.parse(raw.host.as_deref(), &p("host"), value::route_host);
    if let Some(prefix) = &raw.path_prefix {
        if !prefix.starts_with('/') {
            let msg = format!("path_prefix must start with '/', found \"{prefix}\"");
            cx.err(&p("path_prefix"), msg);
        }
    }
    let upstream = cx.required(raw.upstream, &p("upstream"));
    if let Some(u) = &upstream {
        check_upstream(cx, u, &p("upstream"), upstreams);
    }
    Route {
        host,
        path_prefix: raw.path_prefix,
        upstream: upstream.unwrap_or_default(),
    }
}

fn tls(cx: &mut Ctx<'_>, raw: RawTls, path: &str, mode: ListenerMode) -> Tls {
    let p = |k: &str| child(path, k);
    let mut certificates = Vec::new();
    if let Some(certs) = cx.required(raw.certificates, &p("certificates")) {
        if certs.is_empty() {
            cx.err(&p("certificates"), "at least one certificate is required");
        }
        for (i, c) in certs.into_iter().enumerate() {
            let Some(c) = c else { continue };
            let cpath = item(&p("certificates"), i);
            let cert = file(cx, c.cert, &child(&cpath, "cert"), "certificate");
            let key = file(cx, c.key, &child(&cpath, "key"), "private key");
            if let (Some(c), Some(k)) = (&cert.bytes, &key.bytes) {
                check_pair(cx, (&cert, c), (&key, k), &cpath);
            }
            certificates.push(CertificatePaths {
                cert: cert.resolved,
                key: key.resolved,
            });
        }
    }
    let alpn = match raw.alpn {
        Some(list) => {
            let mut seen = HashSet::new();
            for (i, a) in list.iter().enumerate() {
                if !ALPN.contains(&a.as_str()) {
                    let msg =
                        format!("unsupported ALPN protocol \"{a}\" (supported: h2, http/1.1)");
                    cx.err(&item(&p("alpn"), i), msg);
                } else if !seen.insert(a) {
                    cx.err(
                        &item(&p("alpn"), i),
                        format!("duplicate ALPN protocol \"{a}\""),
                    );
                }
            }
            list
        }
        None if mode == ListenerMode::Http => ALPN.iter().map(|s| s.to_string()).collect(),
        None => Vec::new(),
    };
    Tls { certificates, alpn }
}

/// A TLS file as written, resolved, and its bytes when readable.
pub(super) struct TlsFile {
    pub(super) written: String,
    pub(super) resolved: std::path::PathBuf,
    pub(super) bytes: Option<Vec<u8>>,
}

/// A required TLS file: resolved and read, reporting why it cannot be.
pub(super) fn file(cx: &mut Ctx<'_>, written: Option<String>, path: &str, what: &str) -> TlsFile {
    let Some(written) = cx.required(written, path) else {
        return TlsFile {
            written: String::new(),
            resolved: std::path::PathBuf::new(),
            bytes: None,
        };
    };
    let resolved = cx.resolve(&written);
    let bytes = cx.read(path, &written, &resolved, what);
    TlsFile {
        written,
        resolved,
        bytes,
    }
}

/// Loads a certificate and its key as the listener will, reporting at the file
/// at fault: no PEM certificate or key, a key of another certificate, expiry.
pub(super) fn check_pair(
    cx: &mut Ctx<'_>,
    cert: (&TlsFile, &[u8]),
    key: (&TlsFile, &[u8]),
    path: &str,
) {
    match tls::load_pair(cert.1, key.1) {
        Ok(loaded) => {
            let now = tls::unix_seconds(std::time::SystemTime::now());
            if tls::expiry(loaded.not_after, now) == tls::Expiry::Expired {
                let msg = format!(
                    "certificate \"{}\" expired on {}",
                    cert.0.written,
                    tls::rfc3339(loaded.not_after)
                );
                cx.err(&child(path, "cert"), msg);
            }
        }
        Err(e) if e.in_key() => {
            let msg = format!("private key \"{}\": {e}", key.0.written);
            cx.err(&child(path, "key"), msg);
        }
        Err(e) => {
            let msg = format!("certificate \"{}\": {e}", cert.0.written);
            cx.err(&child(path, "cert"), msg);
        }
    }
}
