//! Header rewriting between client and server (SPEC §3).
//!
//! Requests: hop-by-hop headers are removed (`Connection` and every header it
//! names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
//! `Transfer-Encoding`, and `Upgrade` unless this is an upgrade), then
//! `X-Forwarded-For` is appended to, `X-Forwarded-Proto`/`-Host` are set and an
//! `X-Request-Id` is added when absent. `Host` passes through unchanged (an
//! HTTP/2 request gets one from its `:authority`). Responses lose their
//! hop-by-hop headers the same way. Pure functions over `http` types.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True when the request asks to switch protocols (HTTP/1.1 `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// True for the hop-by-hop headers removed in every case (SPEC §3).
fn is_fixed_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers. With `keep_upgrade`, `Upgrade` stays and
/// `Connection: upgrade` is re-added.
///
/// One pass over the names present, with the `Connection` tokens read once and
/// no allocation: a `remove` per possible hop-by-hop name (each one hashed)
/// showed up as 7 % of the proxy's instructions in a profile.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Tokens of the Connection header(s), read once; a handful at most in
    // practice, more are still honoured through the slow path below.
    let mut tokens: [&str; 8] = [""; 8];
    let mut n_tokens = 0;
    let mut overflow = false;
    for t in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        match tokens.get_mut(n_tokens) {
            Some(slot) => {
                *slot = t.trim();
                n_tokens += 1;
            }
            None => overflow = true,
        }
    }
    let named = |name: &HeaderName| {
        tokens
            .get(..n_tokens)
            .unwrap_or_default()
            .iter()
            .any(|t| t.eq_ignore_ascii_case(name.as_str()))
    };
    let mut doomed: [Option<HeaderName>; 8] = Default::default();
    let mut n_doomed = 0;
    let mut more: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        if is_fixed_hop(name) || named(name) {
            match doomed.get_mut(n_doomed) {
                Some(slot) => {
                    *slot = Some(name.clone());
                    n_doomed += 1;
                }
                None => more.push(name.clone()),
            }
        }
    }
    if overflow {
        // More than eight Connection tokens: rare enough to allocate for.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(keep_upgrade && n == header::UPGRADE))
            .collect();
        more.extend(listed);
    }
    for name in doomed.iter().flatten().chain(more.iter()) {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What the forwarding headers say about the client side.
pub struct Forwarded<'a> {
    /// The client's IP as a header value, formatted once per connection.
    pub client_ip: &'a HeaderValue,
    pub https: bool,
    /// The request's host as the client sent it (Host or :authority).
    pub host: Option<&'a HeaderValue>,
}

/// Adds the forwarding headers. Returns the request id in use.
pub fn add_forwarding(headers: &mut HeaderMap, fwd: &Forwarded<'_>) {
    // Up to four headers are added: grow the map once, not per insert.
    headers.reserve(4);
    let xff = if headers.contains_key(&X_FORWARDED_FOR) {
        let mut joined = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        joined.push_str(", ");
        joined.push_str(fwd.client_ip.to_str().unwrap_or(""));
        HeaderValue::from_str(&joined).ok()
    } else {
        Some(fwd.client_ip.clone())
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if fwd.https { "https" } else { "http" }),
    );
    if let Some(h) = fwd.host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID.clone(), new_request_id());
    }
}

/// The client address as an `X-Forwarded-For` element.
pub fn client_ip_value(ip: IpAddr) -> HeaderValue {
    // An IP address always formats to a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// 128 random bits as 32 lower-case hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    for (i, slot) in out.iter_mut().enumerate() {
        let word = if i < 16 { a } else { b };
        let nibble = (word >> ((i % 16) * 4)) & 0xf;
        *slot = HEX
            .get(usize::try_from(nibble).unwrap_or(0))
            .copied()
            .unwrap_or(b'0');
    }
    // 32 ASCII hex digits are always a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The request host without port or trailing dot, for routing. Case is
/// left alone: routes compare case-insensitively, so no allocation is needed.
pub fn routing_host(host: &str) -> &str {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-keep", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn responses_with_connection_keep_alive_lose_only_hop_by_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("content-length", "38"),
            ("content-type", "text/plain"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        assert!(h.contains_key("content-length") && h.contains_key("content-type"));
        let mut untouched = map(&[("host", "x"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut untouched, false);
        assert_eq!(untouched.len(), 2);
    }

    #[test]
    fn more_than_eight_connection_tokens_are_all_honoured() {
        let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let conn = names.join(", ");
        pairs.push(("connection", &conn));
        pairs.push(("x-keep", "yes"));
        let mut h = map(&pairs);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }

    #[test]
    fn upgrade_is_kept_for_upgrade_requests() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended_and_others_set() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("host", "Example.com:8080"),
        ]);
        let host = h.get("host").cloned();
        add_forwarding(
            &mut h,
            &Forwarded {
                client_ip: &client_ip_value("10.0.0.9".parse().unwrap()),
                https: false,
                host: host.as_ref(),
            },
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "Example.com:8080");
        assert_eq!(h["host"], "Example.com:8080");
        assert_eq!(h["x-request-id"].len(), 32);
    }

    #[test]
    fn existing_request_id_is_kept() {
        let mut h = map(&[("x-request-id", "abc")]);
        add_forwarding(
            &mut h,
            &Forwarded {
                client_ip: &client_ip_value("::1".parse().unwrap()),
                https: true,
                host: None,
            },
        );
        assert_eq!(h["x-request-id"], "abc");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn routing_host_strips_port_and_case() {
        assert_eq!(routing_host("API.Example.com:8080"), "API.Example.com");
        assert_eq!(routing_host("example.com."), "example.com");
        assert_eq!(routing_host("[::1]:80"), "::1");
        assert_eq!(routing_host("localhost"), "localhost");
    }
}
