//! What one HTTP/2 client connection may cost, and how it ends when it
//! misbehaves: a client that opens every stream it may and never reads keeps
//! tandem's memory within tens of MB (read from `/proc`); a client that
//! stops reading is cut at `client_idle` whatever its protocol (h2 over TLS,
//! HTTP/1.1 over TLS, h2c); a plain-text connection with a broken HTTP/2 preface gets
//! GOAWAY(PROTOCOL_ERROR); `http2.max_concurrent_streams` is what tandem
//! advertises. Clients write raw frames (see `h2_flood`): a
//! client library would read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::h2_flood::{frame, read_until_closed, GOAWAY, PREFACE};
use super::resources::{active, rss_kib};
use crate::support::{eventually, free_port, web_config, Express, Tandem};

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_WINDOW: u32 = (1 << 31) - 1;
const PROTOCOL_ERROR: u32 = 0x1;

/// HPACK for `GET scheme://tandem.test{path}`: static-table indices for the
/// method and scheme, literal values (never indexed) for authority and path.
fn get_block(path: &str, https: bool) -> Vec<u8> {
    let mut b = vec![0x82, if https { 0x87 } else { 0x86 }];
    for (index, value) in [(1u8, "tandem.test"), (4u8, path)] {
        b.push(0x10 | index);
        b.push(u8::try_from(value.len()).unwrap());
        b.extend_from_slice(value.as_bytes());
    }
    b
}

/// The preface of a client that advertises the largest windows HTTP/2
/// allows, so nothing but its TCP socket stops tandem from sending, then GETs
/// `path` on `streams` streams.
fn greedy_client(path: &str, streams: u32, https: bool) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    let mut settings = SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
    settings.extend_from_slice(&MAX_WINDOW.to_be_bytes());
    out.extend(frame(SETTINGS, 0, 0, &settings));
    out.extend(frame(
        WINDOW_UPDATE,
        0,
        0,
        &(MAX_WINDOW - 65_535).to_be_bytes(),
    ));
    let block = get_block(path, https);
    for i in 0..streams {
        out.extend(frame(HEADERS, END_STREAM_AND_HEADERS, 2 * i + 1, &block));
    }
    out
}

/// Samples tandem's RSS until it has grown by less than 1 MiB over a second
/// (or `within` passed); returns the largest sample in KiB.
pub(super) async fn settled_rss(pid: u32, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut peak = rss_kib(pid);
    let mut mark = (Instant::now(), peak);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = rss_kib(pid);
        peak = peak.max(now);
        if now > mark.1 + 1024 {
            mark = (Instant::now(), now);
        } else if mark.0.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    peak
}

#[tokio::test]
async fn one_h2_connection_that_never_reads_costs_tens_of_mb_not_hundreds() {
    let server = Express::start("h2-never-reads");
    let t = Tandem::start(&web_config("", "", &[server.addr()])).await;
    let addr = t.listener_addr("web").await;
    // Warm up so the baseline includes a streamed body's allocations.
    let _ = crate::support::client()
        .get(t.url("web", "/bytes/1000000").await)
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    let before = rss_kib(t.pid());
    let requests_before = server.requests().await;

    // 100 streams (the default limit) of 20 MB each; the client never reads.
    let streams = 100;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&greedy_client("/bytes/20000000", streams, false))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "every stream reached the server",
        || async { server.requests().await >= requests_before + u64::from(streams) },
    )
    .await;
    let peak = settled_rss(t.pid(), Duration::from_secs(15)).await;
    let grown_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "one h2 connection, {streams} unread 20 MB streams: RSS {before} KiB -> {peak} KiB (+{grown_mib:.1} MiB)"
    );
    // Before the bound, about 0.9 MB per stream: +90 MiB here.
    assert!(grown_mib < 40.0, "RSS grew by {grown_mib:.1} MiB");
    drop(s);
    // tandem still serves.
    let r = crate::support::client()
        .get(t.url("web", "/").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_plain_text_connection_with_a_broken_h2_preface_gets_goaway_protocol_error() {
    let server = Express::start("bad-preface");
    let t = Tandem::start(&web_config("", "", &[server.addr()])).await;
    let addr = t.listener_addr("web").await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = s.into_split();
    // More bytes follow than tandem reads to tell the protocol: closing with
    // them unread must not reset the connection before the GOAWAY is read.
    let mut bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec();
    bad.extend(frame(SETTINGS, 0, 0, &[0; 6 * 1000]));
    wr.write_all(&bad).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), read_until_closed(rd))
        .await
        .expect("tandem closes the connection");
    assert_eq!(seen.goaway, Some(PROTOCOL_ERROR), "{seen:?}");
    assert!(
        t.metric(
            "tandem_rejected_requests_total",
            &[("listener", "web"), ("reason", "h2_protocol_error")]
        )
        .await
            >= 1.0
    );
    // A correct preface on the same listener is still served as h2c.
    let (h2, conn) = h2::client::handshake(TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://tandem.test/").body(()).unwrap();
    let (resp, _) = h2.ready().await.unwrap().send_request(req, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

/// A self-signed certificate for `localhost`, written beside the config.
fn certificate(dir: &std::path::Path) -> rustls::pki_types::CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("site.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("site.key"), cert.signing_key.serialize_pem()).unwrap();
    cert.cert.der().clone()
}

/// A TCP connection with a small receive buffer: the kernel's buffers between
/// tandem and a client that does not read fill in moments, not megabytes later.
async fn small_window_connect(addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A TLS connection offering only `alpn`, trusting `cert`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
    alpn: &[u8],
) -> Box<dyn AsyncWrite + Unpin + Send> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = small_window_connect(addr).await;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    Box::new(tls)
}

#[tokio::test]
async fn every_client_protocol_that_stops_reading_is_cut_at_client_idle() {
    let server = Express::start("stops-reading");
    let certs = tempfile::tempdir().unwrap();
    let cert = certificate(certs.path());
    let t = Tandem::start(&format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: tls
    bind: 127.0.0.1:{tls_port}
    upstream: app
    tls:
      certificates:
        - cert: {pem}
          key: {key}
    timeouts:
      client_idle: 1s
  - name: plain
    bind: 127.0.0.1:{plain_port}
    upstream: app
    timeouts:
      client_idle: 1s
upstreams:
  - name: app
    servers:
      - address: {server}
"#,
        tls_port = free_port(),
        plain_port = free_port(),
        pem = certs.path().join("site.pem").display(),
        key = certs.path().join("site.key").display(),
        server = server.addr(),
    ))
    .await;
    let tls = t.listener_addr("tls").await;
    let plain = t.listener_addr("plain").await;
    const HTTP1_GET: &[u8] = b"GET /bytes/200000000 HTTP/1.1\r\nHost: x\r\n\r\n";
    // HTTP/1.1 over plain TCP: `resources::a_client_that_never_reads_is_cut_by_the_write_stall_timeout`.
    for protocol in ["h2 over TLS", "HTTP/1.1 over TLS", "h2c"] {
        let requests_before = server.requests().await;
        let (listener, mut s): (&str, Box<dyn AsyncWrite + Unpin + Send>) = match protocol {
            "h2 over TLS" => {
                let mut s = tls_connect(tls, cert.clone(), b"h2").await;
                s.write_all(&greedy_client("/bytes/200000000", 1, true))
                    .await
                    .unwrap();
                ("tls", s)
            }
            "HTTP/1.1 over TLS" => {
                let mut s = tls_connect(tls, cert.clone(), b"http/1.1").await;
                s.write_all(HTTP1_GET).await.unwrap();
                ("tls", s)
            }
            _ => {
                let mut s = small_window_connect(plain).await;
                s.write_all(&greedy_client("/bytes/200000000", 1, false))
                    .await
                    .unwrap();
                ("plain", Box::new(s))
            }
        };
        s.flush().await.unwrap();
        eventually(
            Duration::from_secs(10),
            "the request reached the server",
            || async { server.requests().await > requests_before },
        )
        .await;
        let started = Instant::now();
        // Before the fix h2 over TLS was still open and served after 75 s.
        // client_idle (1 s) plus a margin: the buffers between the two fill
        // first, and the kernel lets a few more bytes through now and then
        // (progress, which restarts the stall timer): about 4 s in all here.
        eventually(
            Duration::from_secs(8),
            &format!("the stalled {protocol} connection is closed"),
            || async { active(&t, listener).await == 0.0 },
        )
        .await;
        println!(
            "{protocol}, client not reading: closed {:?} after its request reached the server",
            started.elapsed()
        );
        drop(s);
    }
}

#[tokio::test]
async fn the_configured_stream_limit_is_what_tandem_advertises() {
    let server = Express::start("h2-streams");
    let t = Tandem::start(&web_config(
        "    http2:\n      max_concurrent_streams: 7\n",
        "",
        &[server.addr()],
    ))
    .await;
    let s = TcpStream::connect(t.listener_addr("web").await)
        .await
        .unwrap();
    let (rd, mut wr) = s.into_split();
    let reader = tokio::spawn(read_until_closed(rd));
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    wr.write_all(&hello).await.unwrap();
    // The client's GOAWAY (no streams, NO_ERROR) lets tandem end the
    // connection, so the reader returns with what it saw.
    wr.write_all(&frame(GOAWAY, 0, 0, &[0; 8])).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("tandem ends the connection")
        .unwrap();
    assert!(seen.settings.contains(&(0x3, 7)), "{:?}", seen.settings);
}
