//! Header rewriting between client and server: hop-by-hop out, forwarding headers in.
//!
//! Requests are written straight into the HTTP/1.1 head sent to the server:
//! hop-by-hop headers are left out (`Connection` and every header it names,
//! `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, and
//! `Upgrade` unless this is an upgrade), `X-Forwarded-For` is appended to,
//! `X-Forwarded-Proto`/`-Host` are set and an `X-Request-Id` is added when
//! absent. `Host` passes through unchanged (an HTTP/2 request gets one from its
//! `:authority`). Responses are filtered the same way as their head is parsed
//! (`upstream::h1::response`). Pure functions over `http` types.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Method;

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

/// True for the hop-by-hop headers removed in every case (RFC 9110 §7.6.1).
fn is_fixed_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// How a request body is framed towards the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFraming {
    /// No body and nothing to say about one.
    None,
    /// No body, but the method expects one: `Content-Length: 0` is added.
    ZeroLength,
    /// The client's `Content-Length` passes through; bytes go out as they are.
    Length,
    /// `Transfer-Encoding: chunked` is added.
    Chunked,
}

/// A request as it goes to a server.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// Origin-form target (path and query).
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    /// An upgrade request: `Upgrade` is kept and `Connection: upgrade` sent.
    pub upgrade: bool,
    pub framing: OutFraming,
}

/// Writes the HTTP/1.1 request head for `req` into `out`, rewritten on the
/// way: hop-by-hop headers left out, forwarding headers and a
/// request id written, framing headers as `req.framing` says.
///
/// The client's header map is only read: filtering while writing costs one
/// pass over the headers, where removing and inserting map entries hashed
/// every name (7 % of the proxy's instructions in a profile).
pub fn encode_request_head(req: &Outgoing<'_>, fwd: &Forwarded<'_>, out: &mut Vec<u8>) {
    let headers = req.headers;
    // Tokens of the Connection header(s), read once; a handful at most in
    // practice, more are still honoured through the allocating path.
    let mut tokens: [&str; 8] = [""; 8];
    let mut n_tokens = 0;
    let mut more: Vec<&str> = Vec::new();
    for t in headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
    {
        match tokens.get_mut(n_tokens) {
            Some(slot) => {
                *slot = t;
                n_tokens += 1;
            }
            None => more.push(t),
        }
    }
    let named = |name: &HeaderName| {
        tokens
            .get(..n_tokens)
            .unwrap_or_default()
            .iter()
            .chain(more.iter())
            .any(|t| t.eq_ignore_ascii_case(name.as_str()))
    };

    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        // HTTP/1.1 requires Host: an h2 request's :authority, else (an HTTP/1.0
        // client that sent none) the empty value HTTP/1.1 prescribes for a
        // target without an authority.
        field(out, "host", fwd.host.map_or(&b""[..], |h| h.as_bytes()));
    }
    let mut has_request_id = false;
    for (name, value) in headers {
        if req.upgrade && name == header::UPGRADE {
            field(out, name.as_str(), value.as_bytes());
            continue;
        }
        if is_fixed_hop(name)
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || (name == X_FORWARDED_HOST && fwd.host.is_some())
            || named(name)
        {
            continue;
        }
        has_request_id |= name == X_REQUEST_ID;
        field(out, name.as_str(), value.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for v in headers.get_all(&X_FORWARDED_FOR) {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    field(
        out,
        "x-forwarded-proto",
        if fwd.https { b"https" } else { b"http" },
    );
    if let Some(h) = fwd.host {
        field(out, "x-forwarded-host", h.as_bytes());
    }
    if !has_request_id {
        field(out, "x-request-id", &new_request_id());
    }
    if req.upgrade {
        field(out, "connection", b"upgrade");
    }
    match req.framing {
        OutFraming::None | OutFraming::Length => {}
        OutFraming::ZeroLength => field(out, "content-length", b"0"),
        OutFraming::Chunked => field(out, "transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// One `name: value` line. Names and values from `http` types never hold CR
/// or LF, so nothing can be injected.
fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the forwarding headers say about the client side.
pub struct Forwarded<'a> {
    /// The client's IP as a header value, formatted once per connection.
    pub client_ip: &'a HeaderValue,
    pub https: bool,
    /// The request's host as the client sent it (Host or :authority).
    pub host: Option<&'a HeaderValue>,
}

/// The client address as an `X-Forwarded-For` element.
pub fn client_ip_value(ip: IpAddr) -> HeaderValue {
    // An IP address always formats to a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// 128 random bits as 32 lower-case hex digits.
fn new_request_id() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    let bits = u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..));
    for (i, pair) in out.chunks_exact_mut(2).enumerate() {
        let byte = (bits >> (i * 8)) as u8;
        if let [hi, lo] = pair {
            *hi = HEX[usize::from(byte >> 4)];
            *lo = HEX[usize::from(byte & 0xf)];
        }
    }
    out
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

    fn encode(method: &str, pairs: &[(&str, &str)], upgrade: bool, framing: OutFraming) -> String {
        let h = map(pairs);
        let host = h.get("host").cloned();
        let ip = client_ip_value("10.0.0.9".parse().unwrap());
        let mut out = Vec::new();
        encode_request_head(
            &Outgoing {
                method: &Method::from_bytes(method.as_bytes()).unwrap(),
                target: "/p?q=1",
                headers: &h,
                upgrade,
                framing,
            },
            &Forwarded {
                client_ip: &ip,
                https: false,
                host: host.as_ref(),
            },
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    fn lines(head: &str) -> Vec<&str> {
        head.strip_suffix("\r\n\r\n")
            .unwrap()
            .split("\r\n")
            .collect()
    }

    fn without_request_id(head: &str) -> Vec<&str> {
        lines(head)
            .into_iter()
            .filter(|l| !l.starts_with("x-request-id: "))
            .collect()
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_left_out() {
        let head = encode(
            "GET",
            &[
                ("host", "a.example"),
                ("connection", "close, x-secret"),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-t"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "websocket"),
                ("x-keep", "yes"),
            ],
            false,
            OutFraming::None,
        );
        assert_eq!(
            without_request_id(&head),
            [
                "GET /p?q=1 HTTP/1.1",
                "host: a.example",
                "x-keep: yes",
                "x-forwarded-for: 10.0.0.9",
                "x-forwarded-proto: http",
                "x-forwarded-host: a.example",
            ]
        );
    }

    #[test]
    fn more_than_eight_connection_tokens_are_all_honoured() {
        let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
        let mut pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        let conn = names.join(", ");
        pairs.push(("connection", &conn));
        pairs.push(("x-keep", "yes"));
        let head = encode("GET", &pairs, false, OutFraming::None);
        assert!(!head.contains("x-h"), "{head}");
        assert!(head.contains("\r\nx-keep: yes\r\n"));
    }

    #[test]
    fn upgrade_is_kept_for_upgrade_requests() {
        let h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        let head = encode(
            "GET",
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            true,
            OutFraming::None,
        );
        let l = lines(&head);
        assert!(l.contains(&"upgrade: websocket"));
        assert!(l.contains(&"connection: upgrade"));
        assert_eq!(l.iter().filter(|x| x.starts_with("connection")).count(), 1);
    }

    #[test]
    fn forwarded_for_is_appended_and_others_set() {
        let head = encode(
            "GET",
            &[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
                ("x-forwarded-proto", "https"),
                ("host", "Example.com:8080"),
            ],
            false,
            OutFraming::None,
        );
        let l = lines(&head);
        assert!(
            l.contains(&"x-forwarded-for: 1.1.1.1, 2.2.2.2, 10.0.0.9"),
            "{l:?}"
        );
        assert!(l.contains(&"x-forwarded-proto: http"));
        assert!(l.contains(&"x-forwarded-host: Example.com:8080"));
        assert!(l.contains(&"host: Example.com:8080"));
        assert_eq!(l.iter().filter(|x| x.starts_with("x-forwarded")).count(), 3);
        let id = l
            .iter()
            .find_map(|x| x.strip_prefix("x-request-id: "))
            .unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn existing_request_id_is_kept_and_framing_headers_added() {
        let head = encode(
            "POST",
            &[("x-request-id", "abc")],
            false,
            OutFraming::ZeroLength,
        );
        let l = lines(&head);
        assert!(l.contains(&"x-request-id: abc"));
        assert_eq!(
            l.iter().filter(|x| x.starts_with("x-request-id")).count(),
            1
        );
        assert!(l.contains(&"content-length: 0"));
        let chunked = encode(
            "POST",
            &[("transfer-encoding", "gzip, chunked")],
            false,
            OutFraming::Chunked,
        );
        let l = lines(&chunked);
        assert_eq!(
            l.iter()
                .filter(|x| x.starts_with("transfer-encoding"))
                .collect::<Vec<_>>(),
            [&"transfer-encoding: chunked"]
        );
        // No Host and no :authority (an HTTP/1.0 client): HTTP/1.1 still needs
        // one, with the empty value prescribed for a target without authority.
        assert_eq!(
            l.iter()
                .filter(|x| x.starts_with("host"))
                .collect::<Vec<_>>(),
            [&"host: "]
        );
    }

    #[test]
    fn routing_host_strips_port_and_case() {
        assert_eq!(routing_host("API.Example.com:8080"), "API.Example.com");
        assert_eq!(routing_host("example.com."), "example.com");
        assert_eq!(routing_host("[::1]:80"), "::1");
        assert_eq!(routing_host("localhost"), "localhost");
    }
}
