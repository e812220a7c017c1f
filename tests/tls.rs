//! End-to-end TLS termination: the real `tandem` binary on loopback ports, with
//! certificates generated here (a test CA and leaves signed by it), in-test
//! backends, and a rustls client that trusts only the test CA.
//!
//! Covers SNI choice (exact, wildcard, no SNI -> the first certificate), ALPN h2
//! and HTTP/1.1 over TLS with `x-forwarded-proto: https` reaching the backend, a
//! TLS `tcp` listener relaying bytes, and a certificate swapped on disk being
//! served to new connections after `POST /reload` while an open connection keeps
//! working. Every wait is a bounded poll (`eventually`), never a fixed sleep.
//! The process comes from `tests/support`; the backends are in-test hyper
//! servers, which let a TLS check see exactly what reached the server.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::{eventually, tandem_cli, Tandem};

/// A test CA that signs leaf certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tandem test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `<stem>.pem` and `<stem>.key` for `names`; returns the leaf DER.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written to a temporary name and renamed, as an operator's deploy would,
        // so a reload never reads a half-written file.
        for (ext, text) in [("pem", cert.pem()), ("key", key.serialize_pem())] {
            let tmp = dir.join(format!("{stem}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{stem}.{ext}"))).unwrap();
        }
        cert.der().clone()
    }

    fn connector(&self, alpn: &[&str]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        TlsConnector::from(Arc::new(cfg))
    }
}

/// Status and body of a request to the admin API.
async fn admin_request(t: &Tandem, method: reqwest::Method, path: &str) -> (u16, String) {
    let res = reqwest::Client::new()
        .request(method, t.admin_url(path))
        .send()
        .await
        .expect("admin request");
    let status = res.status().as_u16();
    (status, res.text().await.expect("admin body"))
}

/// An HTTP/1.1 backend answering with the request's `x-forwarded-proto`.
async fn http_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let proto = req
                        .headers()
                        .get("x-forwarded-proto")
                        .map(|v| v.to_str().unwrap_or("?").to_owned())
                        .unwrap_or_else(|| "none".to_owned());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from(proto)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP backend that echoes what it reads.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: ServerName<'static>,
) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(name, tcp).await.unwrap()
}

fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn dns(name: &str) -> ServerName<'static> {
    ServerName::try_from(name.to_owned()).unwrap()
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1_client(s: TlsStream<TcpStream>) -> H1 {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// GET / on an HTTP/1.1 client; (status, body).
async fn h1_get(send: &mut H1, host: &str) -> (u16, String) {
    let req = hyper::Request::builder()
        .uri("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tls_listeners_choose_by_sni_and_serve_h2_http1_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let a = ca.leaf(dir.path(), "a", &["a.test", "127.0.0.1"]);
    let b = ca.leaf(dir.path(), "b", &["*.b.test"]);
    let backend = http_backend().await;
    let echo = echo_backend().await;
    let d = dir.path().display();
    let t = Tandem::start(&format!(
        "workers: 1
admin:
  bind: \"{{admin}}\"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
    tls:
      certificates:
        - cert: {d}/a.pem
          key: {d}/a.key
        - cert: {d}/b.pem
          key: {d}/b.key
  - name: raw
    bind: 127.0.0.1:0
    mode: tcp
    upstream: echo
    tls:
      certificates:
        - cert: {d}/a.pem
          key: {d}/a.key
upstreams:
  - name: app
    servers:
      - address: {backend}
  - name: echo
    servers:
      - address: {echo}
"
    ))
    .await;
    let web = t.listener_addr("web").await;
    let raw = t.listener_addr("raw").await;

    // SNI: exact, wildcard, and none (an IP name sends no SNI) -> the first.
    let h1 = ca.connector(&["http/1.1"]);
    let s = tls_connect(&h1, web, dns("a.test")).await;
    assert_eq!(peer_leaf(&s), a);
    let s = tls_connect(&h1, web, dns("x.b.test")).await;
    assert_eq!(peer_leaf(&s), b);
    let ip = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let s = tls_connect(&h1, web, ip).await;
    assert_eq!(peer_leaf(&s), a);

    // HTTP/1.1 over TLS, twice on one connection; the backend sees https.
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(b"http/1.1".as_slice()));
    let mut send = h1_client(s).await;
    assert_eq!(h1_get(&mut send, "a.test").await, (200, "https".into()));
    assert_eq!(h1_get(&mut send, "a.test").await, (200, "https".into()));

    // HTTP/2 chosen by ALPN.
    let h2 = ca.connector(&["h2", "http/1.1"]);
    let s = tls_connect(&h2, web, dns("a.test")).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("https://a.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"https");

    // TCP mode: bytes relayed through TLS, both ways, then half-close.
    let mut s = tls_connect(&ca.connector(&[]), raw, dns("a.test")).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    s.write_all(b"ping over tls").await.unwrap();
    let mut buf = [0u8; 13];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over tls");
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(n, Ok(Ok(0)) | Ok(Err(_))),
        "relay did not close: {n:?}"
    );
}

#[tokio::test]
async fn certificate_swapped_on_disk_is_served_after_reload_while_open_connections_continue() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let old = ca.leaf(dir.path(), "site", &["a.test"]);
    let backend = http_backend().await;
    let d = dir.path().display();
    let t = Tandem::start(&format!(
        "workers: 1
admin:
  bind: \"{{admin}}\"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
    tls:
      certificates:
        - cert: {d}/site.pem
          key: {d}/site.key
upstreams:
  - name: app
    servers:
      - address: {backend}
"
    ))
    .await;
    let web = t.listener_addr("web").await;
    let h1 = ca.connector(&["http/1.1"]);

    let s = tls_connect(&h1, web, dns("a.test")).await;
    assert_eq!(peer_leaf(&s), old);
    let mut open = h1_client(s).await;
    assert_eq!(h1_get(&mut open, "a.test").await, (200, "https".into()));

    let metrics = t.metrics().await;
    let series = "tandem_tls_certificate_expiry_seconds{listener=\"web\",name=\"a.test\"}";
    assert!(metrics.contains(series), "{metrics}");

    // A broken certificate is refused and the old one stays in use.
    std::fs::write(dir.path().join("site.pem"), "not a certificate\n").unwrap();
    let (status, body) = admin_request(&t, reqwest::Method::POST, "/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no PEM certificate found"), "{body}");
    assert_eq!(peer_leaf(&tls_connect(&h1, web, dns("a.test")).await), old);

    let new = ca.leaf(dir.path(), "site", &["a.test"]);
    assert_ne!(new, old);
    let reloaded = admin_request(&t, reqwest::Method::POST, "/reload").await;
    assert_eq!(reloaded.0, 200, "{}", reloaded.1);
    eventually(
        Duration::from_secs(5),
        "new connections to get the new certificate",
        || async { peer_leaf(&tls_connect(&h1, web, dns("a.test")).await) == new },
    )
    .await;

    // The connection made before the reload keeps its session and works.
    assert_eq!(h1_get(&mut open, "a.test").await, (200, "https".into()));
}

/// A self-signed pair valid until midnight UTC `days` days from now.
fn write_expiring(dir: &Path, stem: &str, days: u64) {
    let when = std::time::SystemTime::now() + Duration::from_secs(days * 24 * 3600);
    let date = humantime::format_rfc3339_seconds(when).to_string();
    let ymd: Vec<i64> = date[..10].split('-').map(|p| p.parse().unwrap()).collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["soon.test".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(ymd[0] as i32, ymd[1] as u8, ymd[2] as u8);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
}

#[test]
fn check_warns_about_a_certificate_expiring_within_7_days_but_passes() {
    let dir = tempfile::tempdir().unwrap();
    write_expiring(dir.path(), "soon", 3);
    write_expiring(dir.path(), "later", 60);
    std::fs::write(
        dir.path().join("proxy.yaml"),
        "listeners:
  - name: web
    bind: 127.0.0.1:8443
    upstream: app
    tls:
      certificates:
        - cert: soon.pem
          key: soon.key
        - cert: later.pem
          key: later.key
upstreams:
  - name: app
    servers:
      - address: 127.0.0.1:3001
",
    )
    .unwrap();
    let (code, _, stderr) = tandem_cli(&["check", "-c", "proxy.yaml"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains("soon.pem") && stderr.contains("expires on"),
        "{stderr}"
    );
}

/// Regression: the listener was looked up again after the TLS handshake, so
/// a connection accepted before a reload and handshaken after it got the old
/// certificate but the new `client_idle`. Now the whole connection is the
/// generation it was accepted in: the old certificate and the old 30 s idle
/// limit; a connection accepted after the reload gets the new certificate and
/// the new 1 s limit.
#[tokio::test]
async fn a_connection_keeps_the_listener_it_was_accepted_on_across_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let old = ca.leaf(dir.path(), "site", &["a.test"]);
    let backend = http_backend().await;
    let d = dir.path().display();
    let config = |idle: &str| {
        format!(
            "workers: 1
admin:
  bind: \"{{admin}}\"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
    timeouts:
      client_idle: {idle}
    tls:
      certificates:
        - cert: {d}/site.pem
          key: {d}/site.key
upstreams:
  - name: app
    servers:
      - address: {backend}
"
        )
    };
    let t = Tandem::start(&config("30s")).await;
    let web = t.listener_addr("web").await;
    let h1 = ca.connector(&["http/1.1"]);

    // Accepted under generation 1; its handshake waits for the reload.
    let early = TcpStream::connect(web).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the connection is accepted",
        || async {
            t.metric("tandem_connections_active", &[("listener", "web")])
                .await
                == 1.0
        },
    )
    .await;
    let new = ca.leaf(dir.path(), "site", &["a.test"]);
    t.write_config(&config("1s"));
    let reloaded = admin_request(&t, reqwest::Method::POST, "/reload").await;
    assert_eq!(reloaded.0, 200, "{}", reloaded.1);

    let mut early = h1.connect(dns("a.test"), early).await.unwrap();
    assert_eq!(peer_leaf(&early), old, "the accept-time certificate");
    assert_eq!(raw_get(&mut early).await, "https");

    // Accepted after the reload: new certificate, closed after 1 s idle. A
    // fresh client, so the handshake is a full one (a resumed session shows
    // the certificate of the session it resumes).
    let fresh = ca.connector(&["http/1.1"]);
    let mut late = tls_connect(&fresh, web, dns("a.test")).await;
    assert_eq!(peer_leaf(&late), new);
    assert_eq!(raw_get(&mut late).await, "https");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), late.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the new connection stays open past its 1 s client_idle: {closed:?}"
    );

    // The early connection has been idle longer, under its own 30 s.
    assert_eq!(raw_get(&mut early).await, "https");
}

/// `GET /` on an open HTTP/1.1 connection; the body (read by its length).
async fn raw_get<S>(s: &mut S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no content-length: {head}"));
            if buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before the answer ended: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}
