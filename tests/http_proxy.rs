//! HTTP listeners end to end: balancing, routing, headers, streaming, errors.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{client, web_config, Express, Tandem};

fn two_backends_config(a: &Express, b: &Express, extra_upstream: &str) -> String {
    web_config(
        "    timeouts:\n      client_header: 1s\n",
        "",
        &[a.addr(), b.addr()],
    ) + extra_upstream
}

async fn instance(c: &reqwest::Client, url: &str) -> String {
    let v: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
    v["instance"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn round_robin_alternates_between_two_express_servers() {
    let (a, b) = (Express::start("rr-a"), Express::start("rr-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let url = t.url("web", "/").await;
    let c = client();
    let seen: Vec<String> = futures_seq(&c, &url, 10).await;
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin must alternate: {seen:?}");
    }
    assert_eq!(seen.iter().filter(|s| *s == "rr-a").count(), 5);
}

async fn futures_seq(c: &reqwest::Client, url: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(instance(c, url).await);
    }
    out
}

#[tokio::test]
async fn forwarding_headers_are_added_and_hop_by_hop_headers_stripped() {
    let (a, b) = (Express::start("hdr-a"), Express::start("hdr-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let addr = t.listener_addr("web").await;
    let v: serde_json::Value = client()
        .get(format!("http://{addr}/echo/x?y=1"))
        .header("Host", "Shop.Example:8080")
        .header("X-Forwarded-For", "203.0.113.7")
        .header("Connection", "keep-alive, X-Secret")
        .header("X-Secret", "must-not-pass")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "trailers")
        .header("X-Keep", "yes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &v["headers"];
    assert_eq!(v["url"], "/echo/x?y=1");
    assert_eq!(
        h["host"], "Shop.Example:8080",
        "Host passes through unchanged"
    );
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "Shop.Example:8080");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 32);
    assert_eq!(h["x-keep"], "yes");
    for gone in ["x-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(h.get(gone).is_none(), "{gone} must be stripped: {h}");
    }
}

#[tokio::test]
async fn routes_by_host_and_path_prefix_first_match_wins() {
    let (a, b, api) = (
        Express::start("route-a"),
        Express::start("route-b"),
        Express::start("route-api"),
    );
    let yaml = format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
    routes:
      - host: api.example.com
        upstream: api
      - host: "*.internal.test"
        path_prefix: /v1
        upstream: api
upstreams:
  - name: app
    servers:
      - address: {a}
      - address: {b}
  - name: api
    servers:
      - address: {api}
"#,
        a = a.addr(),
        b = b.addr(),
        api = api.addr()
    );
    let t = Tandem::start(&yaml).await;
    let addr = t.listener_addr("web").await;
    let c = client();
    let get = |host: &'static str, path: &'static str| {
        let c = c.clone();
        async move {
            let v: serde_json::Value = c
                .get(format!("http://{addr}{path}"))
                .header("Host", host)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["instance"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(get("API.example.com:8080", "/").await, "route-api");
    assert_eq!(get("x.internal.test", "/v1/users").await, "route-api");
    assert_ne!(get("x.internal.test", "/v2").await, "route-api");
    assert_ne!(
        get("internal.test", "/v1").await,
        "route-api",
        "wildcard matches subdomains only"
    );
    assert_ne!(get("other.example.com", "/").await, "route-api");
}

#[tokio::test]
async fn large_bodies_stream_both_ways_intact() {
    let (a, b) = (Express::start("big-a"), Express::start("big-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let addr = t.listener_addr("web").await;
    let c = client();
    // Download: 64 MiB with Content-Length, and 8 MiB chunked.
    for (path, len) in [
        ("/bytes/67108864", 67_108_864usize),
        ("/chunked/8388608", 8_388_608),
    ] {
        let direct = c
            .get(a.url(path))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let via = c.get(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(via.status(), 200);
        let via = via.bytes().await.unwrap();
        assert_eq!(via.len(), len);
        assert!(via == direct, "{path}: body differs from the server's");
    }
    // Upload: 32 MiB streamed; the server hashes what it received.
    let body: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = hex(&Sha256::digest(&body));
    let v: serde_json::Value = c
        .post(format!("http://{addr}/upload"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["bytes"], 32 * 1024 * 1024);
    assert_eq!(v["sha256"], expected);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (a, b) = (Express::start("h2c-a"), Express::start("h2c-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c.get(t.url("web", "/echo").await).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["httpVersion"], "1.1", "servers get HTTP/1.1");
    assert!(v["headers"]["host"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn a_dead_server_is_skipped_and_a_lone_dead_server_gives_502() {
    let a = Express::start("dead-a");
    let mut b = Express::start("dead-b");
    let dead_port = b.port;
    b.kill();
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let url = t.url("web", "/").await;
    let c = client();
    for _ in 0..10 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "connect failures move to the other server");
    }
    assert!(
        t.metric("tandem_upstream_errors_total", &[("kind", "connect")])
            .await
            >= 1.0
    );

    let yaml = web_config("", "    retries: 0\n", &[format!("127.0.0.1:{dead_port}")]);
    let t = Tandem::start(&yaml).await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("bad gateway"));
}

#[tokio::test]
async fn slow_server_gives_504_after_the_response_timeout() {
    let a = Express::start("slow-a");
    let yaml = web_config(
        "",
        "    retries: 0\n    timeouts:\n      response: 300ms\n",
        &[a.addr()],
    );
    let t = Tandem::start(&yaml).await;
    let c = client();
    let started = std::time::Instant::now();
    let r = c
        .get(t.url("web", "/delay/3000").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_millis(2500));
    let ok = c.get(t.url("web", "/delay/10").await).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn ambiguous_framing_and_oversized_heads_are_refused() {
    let (a, b) = (Express::start("bad-a"), Express::start("bad-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let addr = t.listener_addr("web").await;
    let before = a.requests().await + b.requests().await;

    let cl_te = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(cl_te.starts_with("HTTP/1.1 400"), "{cl_te}");

    let dup_cl = raw_exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    )
    .await;
    assert!(dup_cl.starts_with("HTTP/1.1 400"), "{dup_cl}");

    let folded = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
    )
    .await;
    assert!(folded.starts_with("HTTP/1.1 400"), "{folded}");

    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..80 {
        big.extend_from_slice(format!("X-Fill-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let too_big = raw_exchange(addr, &big).await;
    assert!(
        too_big.starts_with("HTTP/1.1 431"),
        "{}",
        &too_big[..too_big.len().min(200)]
    );

    let after = a.requests().await + b.requests().await;
    assert_eq!(before, after, "nothing refused may reach a server");

    // Other clients are unaffected.
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_slow_header_gets_408_within_client_header() {
    let (a, b) = (Express::start("slh-a"), Express::start("slh-b"));
    let t = Tandem::start(&two_backends_config(&a, &b, "")).await;
    let addr = t.listener_addr("web").await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    // Keep trickling a header byte every 200 ms: still must end at 1 s.
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), trickle).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn host_names_resolve_and_every_address_is_tried_before_a_failure() {
    // `localhost` may resolve to ::1 as well, where Express is not listening:
    // the other address must be tried before anything counts as a failure.
    let a = Express::start("name-a");
    let yaml = web_config(
        "",
        "    retries: 0\n    resolve_interval: 1s\n",
        &[format!("localhost:{}", a.port)],
    );
    let t = Tandem::start(&yaml).await;
    let url = t.url("web", "/").await;
    let c = client();
    for _ in 0..20 {
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let resolved = t
        .server_field("app", &format!("localhost:{}", a.port), "resolved")
        .await;
    assert!(
        resolved.contains(&format!("127.0.0.1:{}", a.port)),
        "{resolved}"
    );
    assert_eq!(t.metric("tandem_upstream_errors_total", &[]).await, 0.0);
}

#[tokio::test]
async fn pooled_connections_closed_by_the_server_are_not_failures() {
    // idle 10s is above Node's 5s keep-alive: Node closes our idle pooled
    // connections first, and the next requests must not see an error.
    let (a, b) = (Express::start("pool-a"), Express::start("pool-b"));
    let yaml = web_config(
        "",
        "    retries: 0\n    timeouts:\n      idle: 10s\n",
        &[a.addr(), b.addr()],
    );
    let t = Tandem::start(&yaml).await;
    let url = t.url("web", "/").await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    }
    // Wait past Node's keep-alive timeout (5 s) so it closes the pooled sockets.
    tokio::time::sleep(Duration::from_millis(5600)).await;
    for _ in 0..20 {
        assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    }
    assert_eq!(t.metric("tandem_upstream_errors_total", &[]).await, 0.0);
}
