//! The access log end to end: every field against what the client sent and
//! what the Express backend saw, retries, HTTP/2, TCP, the text format,
//! SIGUSR1 after a rename, and a destination that cannot keep up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{self, eventually, web_config, Express, Tandem};

/// `web_config` plus an `access_log` section writing to `path`.
fn logged_config(servers: &[String], path: &Path, format: &str, upstream_keys: &str) -> String {
    let mut yaml = web_config("", upstream_keys, servers);
    yaml.push_str(&format!(
        "access_log:\n  path: \"{}\"\n  format: {format}\n",
        path.display()
    ));
    yaml
}

/// The log's lines so far (a missing file reads as none).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits for the JSON line whose `key` is `value`.
async fn line_where(path: &Path, key: &str, value: &str) -> Value {
    let mut found = None;
    eventually(
        Duration::from_secs(10),
        &format!("an access log line with {key}={value}"),
        || {
            found = json_lines(path).into_iter().find(|l| l[key] == value);
            let done = found.is_some();
            async move { done }
        },
    )
    .await;
    found.unwrap()
}

/// One HTTP/1.1 request on a fresh connection; returns the client's local
/// address, the status and the response body.
async fn raw_request(addr: SocketAddr, request: &[u8]) -> (SocketAddr, u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (local, status, out[split + 4..].to_vec())
}

fn ms(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[tokio::test]
async fn every_http_field_matches_what_the_client_sent_and_the_server_saw() {
    let a = Express::start("log-a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t = Tandem::start(&logged_config(&[a.addr()], &path, "json", "")).await;
    let addr = t.listener_addr("web").await;

    let before = SystemTime::now();
    let request = b"POST /echo/one?x=1&y=%20 HTTP/1.1\r\nHost: shop.example\r\n\
        User-Agent: access-log-test/1.0 (\"quoted\")\r\nContent-Length: 5\r\n\
        Connection: close\r\n\r\nhello";
    let (local, status, body) = raw_request(addr, request).await;
    let after = SystemTime::now();
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    let l = line_where(&path, "path", "/echo/one?x=1&y=%20").await;

    let time = humantime::parse_rfc3339(l["time"].as_str().unwrap()).unwrap();
    let slack = Duration::from_millis(1);
    assert!(time + slack >= before && time <= after + slack, "{l}");
    assert!(l["time"].as_str().unwrap().ends_with('Z'), "UTC: {l}");
    assert_eq!(l["listener"], "web");
    assert_eq!(l["client"], local.to_string());
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], "shop.example");
    assert_eq!(echo["headers"]["host"], "shop.example");
    assert_eq!(l["path"], echo["url"]);
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 5);
    assert_eq!(echo["bodyBytes"], 5);
    assert_eq!(l["bytes_out"], body.len());
    assert_eq!(l["upstream"], "app");
    assert_eq!(l["server"], a.addr());
    assert_eq!(l["tier"], 0);
    assert_eq!(l["attempts"], 1);
    let id = echo["headers"]["x-request-id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "the proxy's id: {id}");
    assert_eq!(l["request_id"], id);
    let (duration, connect, response) = (
        ms(&l, "duration_ms"),
        ms(&l, "connect_ms"),
        ms(&l, "response_ms"),
    );
    assert!(
        0.0 <= connect && connect <= response && response <= duration,
        "{l}"
    );
    assert!(
        duration <= after.duration_since(before).unwrap().as_secs_f64() * 1000.0 + 1.0,
        "{l}"
    );
    assert!(l["tls"].is_null(), "{l}");
    assert_eq!(l["user_agent"], "access-log-test/1.0 (\"quoted\")");
    assert_eq!(echo["headers"]["user-agent"], l["user_agent"]);
    assert_eq!(l["complete"], true);

    // A request id sent by the client is the one passed on and logged.
    let request = b"GET /echo/two HTTP/1.1\r\nHost: shop.example\r\nX-Request-Id: client-id-42\r\n\
        Connection: close\r\n\r\n";
    let (_, status, body) = raw_request(addr, request).await;
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"], "client-id-42");
    let l = line_where(&path, "path", "/echo/two").await;
    assert_eq!(l["request_id"], "client-id-42");
    assert_eq!(l["bytes_in"], 0);
    assert!(l["user_agent"].is_null(), "{l}");
}

#[tokio::test]
async fn proxy_made_errors_are_logged_with_their_status() {
    let mut dead = Express::start("log-dead");
    let dead_addr = dead.addr();
    dead.kill();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t = Tandem::start(&logged_config(
        &[dead_addr],
        &path,
        "json",
        "    retries: 0\n",
    ))
    .await;
    let url = t.url("web", "/nowhere").await;
    let r = support::client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.bytes().await.unwrap();
    let l = line_where(&path, "path", "/nowhere").await;
    assert_eq!(l["status"], 502);
    assert_eq!(l["attempts"], 1);
    assert!(l["server"].is_null(), "no server answered: {l}");
    assert!(l["connect_ms"].is_null(), "no connection was made: {l}");
    assert!(l["response_ms"].is_null(), "{l}");
    assert_eq!(l["bytes_out"], body.len());
    assert_eq!(l["complete"], true);
}

#[tokio::test]
async fn a_request_retried_after_a_refusal_logs_two_attempts() {
    let a = Express::start("log-retry");
    let mut dead = Express::start("log-refuses");
    let dead_addr = dead.addr();
    dead.kill();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let servers = [dead_addr, a.addr()];
    let t = Tandem::start(&logged_config(&servers, &path, "json", "    retries: 2\n")).await;
    let client = support::client();
    // Round robin over two servers: of two requests, one starts on the
    // refusing server and moves on to the live one.
    for i in 0..2 {
        let url = t.url("web", &format!("/echo/retry-{i}")).await;
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut logged = Vec::new();
    eventually(Duration::from_secs(10), "two request lines", || {
        logged = json_lines(&path);
        let n = logged.len();
        async move { n >= 2 }
    })
    .await;
    let attempts: Vec<u64> = logged
        .iter()
        .map(|l| l["attempts"].as_u64().unwrap())
        .collect();
    assert!(attempts.contains(&2), "{logged:?}");
    for l in &logged {
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["server"], a.addr(), "the live server answered: {l}");
        assert!(l["connect_ms"].is_number(), "{l}");
    }
}

#[tokio::test]
async fn h2_requests_are_logged_as_http2() {
    let a = Express::start("log-h2");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t = Tandem::start(&logged_config(&[a.addr()], &path, "json", "")).await;
    let addr = t.listener_addr("web").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .user_agent("h2-test")
        .build()
        .unwrap();
    let r = client
        .post(format!("http://{addr}/echo/h2?q=2"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let l = line_where(&path, "path", "/echo/h2?q=2").await;
    assert_eq!(l["protocol"], "HTTP/2");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], addr.to_string(), "the :authority: {l}");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 1000);
    assert_eq!(echo["bodyBytes"], 1000);
    assert_eq!(l["request_id"], echo["headers"]["x-request-id"]);
    assert_eq!(l["user_agent"], "h2-test");
    assert_eq!(l["complete"], true);
}

#[tokio::test]
async fn a_tcp_connection_logs_its_bytes_both_ways() {
    let a = Express::start("log-tcp");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let yaml = format!(
        "admin:\n  bind: \"{{admin}}\"\nlisteners:\n  - name: raw\n    bind: 127.0.0.1:0\n    mode: tcp\n    upstream: app\nupstreams:\n  - name: app\n    servers:\n      - address: {}\naccess_log:\n  path: \"{}\"\n",
        a.addr(),
        path.display()
    );
    let t = Tandem::start(&yaml).await;
    let addr = t.listener_addr("raw").await;
    let request =
        b"POST /upload HTTP/1.1\r\nHost: tcp\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(request).await.unwrap();
    s.write_all(&[b'x'; 3000]).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(String::from_utf8_lossy(&out).contains("\"bytes\":3000"));
    // The relay ends (and is logged) once both directions are closed.
    drop(s);
    let l = line_where(&path, "client", &local.to_string()).await;
    assert_eq!(l["listener"], "raw");
    assert_eq!(l["upstream"], "app");
    assert_eq!(l["server"], a.addr());
    assert_eq!(l["bytes_in"], request.len() + 3000);
    assert_eq!(l["bytes_out"], out.len());
    // Express closes after answering `Connection: close`.
    assert_eq!(l["end"], "server_closed", "{l}");
    assert!(ms(&l, "duration_ms") >= 0.0);
    assert!(l.get("status").is_none(), "no HTTP fields: {l}");
}

#[tokio::test]
async fn text_format_is_one_logfmt_line_per_request() {
    let a = Express::start("log-text");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t = Tandem::start(&logged_config(&[a.addr()], &path, "text", "")).await;
    let client = support::client();
    for p in ["/echo/t1", "/echo/t2"] {
        let r = client
            .get(t.url("web", p).await)
            .header("user-agent", "text agent/1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut logged = Vec::new();
    eventually(Duration::from_secs(10), "two text lines", || {
        logged = lines(&path);
        let n = logged.len();
        async move { n >= 2 }
    })
    .await;
    assert_eq!(logged.len(), 2, "{logged:?}");
    for (line, p) in logged.iter().zip(["/echo/t1", "/echo/t2"]) {
        assert!(line.starts_with("time="), "{line}");
        for field in [
            " listener=web ".to_string(),
            " method=GET ".to_string(),
            format!(" path={p} "),
            " protocol=HTTP/1.1 ".to_string(),
            " status=200 ".to_string(),
            format!(" server={} ", a.addr()),
            " user_agent=\"text agent/1\" ".to_string(),
            " tls=- ".to_string(),
        ] {
            assert!(line.contains(&field), "{field:?} in {line}");
        }
        assert!(line.ends_with(" complete=true"), "{line}");
    }
}

#[tokio::test]
async fn sigusr1_after_a_rename_writes_to_a_new_file() {
    let a = Express::start("log-rotate");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t = Tandem::start(&logged_config(&[a.addr()], &path, "json", "")).await;
    let client = support::client();
    let r = client
        .get(t.url("web", "/before").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    line_where(&path, "path", "/before").await;

    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    t.signal("USR1");
    eventually(Duration::from_secs(10), "a new access.log", || {
        let exists = path.exists();
        async move { exists }
    })
    .await;
    let r = client
        .get(t.url("web", "/after").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    line_where(&path, "path", "/after").await;
    let old = json_lines(&rotated);
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0]["path"], "/before");
    assert_eq!(json_lines(&path).len(), 1);
}

#[tokio::test]
async fn a_log_that_cannot_keep_up_drops_lines_and_serving_goes_on() {
    use std::os::unix::fs::OpenOptionsExt;

    let a = Express::start("log-fifo");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // A reader that never reads: once the pipe's buffer is full, every write
    // to it blocks.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let t = Tandem::start(&logged_config(&[a.addr()], &fifo, "json", "")).await;
    let url = t.url("web", "/echo/fifo").await;
    let dropped = || async { t.metric("tandem_access_log_dropped_total", &[]).await };
    assert_eq!(dropped().await, 0.0);
    let mut rounds = 0;
    while dropped().await == 0.0 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no line dropped after {rounds} rounds of load"
        );
        let r = support::load(&url, 8, Duration::from_secs(3), 3000).await;
        assert!(r.errors.is_empty(), "requests failed: {:?}", r.errors);
    }
    // The writer is stuck: every line from now on is dropped and counted,
    // and requests still succeed.
    let first = dropped().await;
    let r = support::load(&url, 8, Duration::from_secs(2), 500).await;
    assert!(r.errors.is_empty(), "requests failed: {:?}", r.errors);
    assert!(r.ok > 0);
    let want = first + r.ok as f64;
    eventually(
        Duration::from_secs(10),
        "every new line counted as dropped",
        || async { dropped().await >= want },
    )
    .await;
}

#[tokio::test]
async fn a_reload_moves_the_log_to_a_new_path_and_can_turn_it_off() {
    let a = Express::start("log-reload");
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    let third = dir.path().join("third.log");
    let t = Tandem::start(&logged_config(&[a.addr()], &first, "json", "")).await;
    let client = support::client();
    let get = |path: &'static str| {
        let client = client.clone();
        let t = &t;
        async move {
            let r = client.get(t.url("web", path).await).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let reload = |yaml: String| {
        let client = client.clone();
        let t = &t;
        async move {
            t.write_config(&yaml);
            let r = client.post(t.admin_url("/reload")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
    };
    get("/one").await;
    line_where(&first, "path", "/one").await;

    reload(logged_config(&[a.addr()], &second, "text", "")).await;
    get("/two").await;
    eventually(Duration::from_secs(10), "/two in the new file", || {
        let found = lines(&second).iter().any(|l| l.contains(" path=/two "));
        async move { found }
    })
    .await;

    // Without access_log nothing is written; back on, lines flow again (in
    // order, so a line for /three would come before the one for /four).
    reload(web_config("", "", &[a.addr()])).await;
    get("/three").await;
    reload(logged_config(&[a.addr()], &third, "json", "")).await;
    get("/four").await;
    line_where(&third, "path", "/four").await;
    let all = [&first, &second, &third]
        .map(|p| lines(p).join("\n"))
        .join("\n");
    assert!(!all.contains("/three"), "logged while off: {all}");
    assert_eq!(
        json_lines(&first).len(),
        1,
        "the first file kept its one line"
    );
}

/// Writes a CA-signed certificate for `localhost` into `dir` (`site.pem`,
/// `site.key`) and returns a connector that trusts only that CA.
fn tls_material(dir: &Path) -> tokio_rustls::TlsConnector {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("site.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("site.key"), key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
}

#[tokio::test]
async fn requests_over_tls_log_the_tls_version() {
    let a = Express::start("log-tls");
    let dir = tempfile::tempdir().unwrap();
    let connector = tls_material(dir.path());
    let path = dir.path().join("access.log");
    let tls = format!(
        "    tls:\n      certificates:\n        - cert: {}\n          key: {}\n",
        dir.path().join("site.pem").display(),
        dir.path().join("site.key").display()
    );
    let mut yaml = web_config(&tls, "", &[a.addr()]);
    yaml.push_str(&format!("access_log:\n  path: \"{}\"\n", path.display()));
    let t = Tandem::start(&yaml).await;
    let addr = t.listener_addr("web").await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(b"GET /echo/tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    // The answer is read whole; how the TLS session is closed does not matter here.
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let l = line_where(&path, "path", "/echo/tls").await;
    assert_eq!(l["tls"], "TLSv1.3");
    assert_eq!(l["protocol"], "HTTP/1.1");
    assert_eq!(l["status"], 200);
}

#[tokio::test]
async fn the_answering_servers_tier_is_logged() {
    let a = Express::start("log-tier");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let yaml = format!(
        "admin:\n  bind: \"{{admin}}\"\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    upstream: app\nupstreams:\n  - name: app\n    servers:\n      - address: {}\n        tier: 2\naccess_log:\n  path: \"{}\"\n",
        a.addr(),
        path.display()
    );
    let t = Tandem::start(&yaml).await;
    let r = support::client()
        .get(t.url("web", "/echo/tier").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let l = line_where(&path, "path", "/echo/tier").await;
    assert_eq!(l["server"], a.addr());
    assert_eq!(l["tier"], 2);
}
