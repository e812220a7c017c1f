//! SIGHUP and `POST /reload` that change things: 60 reloads under
//! load lose no request, servers that stay keep their health and breaker
//! state, a removed listener finishes its requests and closes. Reloads that
//! must change nothing are in `refused.rs`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{assert_no_failures, raw_get, Client, Traffic};
use crate::support::{client, eventually, free_port, Express, Tandem};

/// The parts of the config the reload loop varies.
pub(super) struct Shape {
    /// (address, weight) of `app`'s servers.
    pub app: Vec<(String, u32)>,
    pub api_route: bool,
    pub extra_listener: Option<u16>,
}

pub(super) fn config(tcp_port: u16, api: &Express, s: &Shape) -> String {
    let servers: String = s
        .app
        .iter()
        .map(|(a, w)| format!("      - address: {a}\n        weight: {w}\n"))
        .collect();
    let routes = if s.api_route {
        "    routes:\n      - path_prefix: /api\n        upstream: api\n"
    } else {
        ""
    };
    let extra = s
        .extra_listener
        .map(|p| format!("  - name: extra\n    bind: 127.0.0.1:{p}\n    upstream: api\n"))
        .unwrap_or_default();
    format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
{routes}  - name: raw
    bind: 127.0.0.1:{tcp_port}
    mode: tcp
    upstream: app
{extra}upstreams:
  - name: app
    health_check:
      http:
        path: /healthz
      interval: 200ms
    servers:
{servers}  - name: api
    servers:
      - address: {api}
"#,
        api = api.addr()
    )
}

async fn generation(t: &Tandem) -> u64 {
    t.status().await["config"]["generation"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let (a, b, c, api) = (
        Express::start("rl-a"),
        Express::start("rl-b"),
        Express::start("rl-c"),
        Express::start("rl-api"),
    );
    let tcp_port = free_port();
    let extra_port = free_port();
    let shape = |i: u32| Shape {
        app: {
            let mut v = vec![
                (a.addr(), if i % 7 == 3 { 0 } else { 1 + i % 3 }),
                (b.addr(), 1 + i % 2),
            ];
            if i % 4 < 2 {
                v.push((c.addr(), 2));
            }
            v
        },
        api_route: i % 3 != 0,
        extra_listener: (i % 5 < 2).then_some(extra_port),
    };
    let t = Tandem::start(&config(tcp_port, &api, &shape(0))).await;
    let web = t.url("web", "/").await;
    let web_api = t.url("web", "/api/items").await;
    let raw = format!("http://127.0.0.1:{tcp_port}/");

    let mut traffic = Traffic::new();
    traffic.start("http keep-alive", Client::KeepAlive, &web, 3);
    traffic.start("http keep-alive /api", Client::KeepAlive, &web_api, 1);
    traffic.start("http new connection", Client::NewConnection, &web, 2);
    traffic.start("h2c", Client::H2, &web, 2);
    traffic.start("tcp keep-alive", Client::KeepAlive, &raw, 1);
    traffic.start("tcp raw socket", Client::RawSocket, &raw, 1);
    traffic.warm_up(50).await;

    let http = client();
    let reloads = 60u32;
    let mut extra_checked = 0;
    for i in 1..=reloads {
        let s = shape(i);
        t.write_config(&config(tcp_port, &api, &s));
        let expected = u64::from(i) + 1;
        if i % 2 == 1 {
            t.signal("HUP");
            eventually(
                Duration::from_secs(10),
                "SIGHUP reload published",
                || async { generation(&t).await == expected },
            )
            .await;
        } else {
            let r = http.post(t.admin_url("/reload")).send().await.unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(status, 200, "reload {i}: {body}");
            assert_eq!(body["generation"], expected, "reload {i}: {body}");
        }
        if s.extra_listener.is_some() {
            // A listener added by this reload answers at once.
            raw_get(&format!("http://127.0.0.1:{extra_port}/"))
                .await
                .unwrap_or_else(|e| panic!("reload {i}: new listener: {e}"));
            extra_checked += 1;
        }
    }
    let served_during = traffic.served();
    let tallies = traffic.finish().await;
    println!(
        "reload loop: {reloads} reloads (SIGHUP and POST /reload alternating), \
         {extra_checked} checks of the added listener, {served_during} requests served"
    );
    assert_no_failures("reload loop", &tallies, 20);
    let s = t.status().await;
    assert_eq!(s["config"]["generation"], u64::from(reloads) + 1);
    assert_eq!(s["config"]["last_reload"]["result"], "success");
    // Nothing leaked across 60 generations: once the clients are gone, no
    // connection and no request is counted as open.
    eventually(
        Duration::from_secs(10),
        "connections and requests back to 0",
        || async {
            let m = t.metrics().await;
            let conns = crate::support::metric_value(&m, "tandem_connections_active", &[]);
            let s = t.status().await;
            let active: u64 = s["upstreams"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|u| u["servers"].as_array().unwrap().iter())
                .map(|x| x["active_requests"].as_u64().unwrap())
                .sum();
            conns == 0.0 && active == 0
        },
    )
    .await;
}

#[tokio::test]
async fn servers_that_stay_keep_their_health_and_breaker_state() {
    let (a, b, c) = (
        Express::start("keep-a"),
        Express::start("keep-b"),
        Express::start("keep-c"),
    );
    // A 1 s probe interval: a server whose state were reset by the reload
    // would count as healthy again for about a second, long enough to see.
    let yaml = |c_weight: u32| {
        format!(
            r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
upstreams:
  - name: app
    retries: 0
    health_check:
      http:
        path: /healthz
      interval: 1s
      rise: 2
      fall: 1
    circuit_breaker:
      failure_threshold: 2
      reset_timeout: 60s
    servers:
      - address: {}
      - address: {}
      - address: {}
        weight: {c_weight}
"#,
            a.addr(),
            b.addr(),
            c.addr()
        )
    };
    let t = Tandem::start(&yaml(1)).await;
    a.control(serde_json::json!({ "health": "fail" })).await;
    b.control(serde_json::json!({ "status": 503 })).await;
    eventually(Duration::from_secs(5), "a ejected", || async {
        t.server_field("app", &a.addr(), "health").await == "unhealthy"
    })
    .await;
    let url = t.url("web", "/").await;
    let http = client();
    eventually(Duration::from_secs(5), "b's breaker open", || async {
        let _ = http.get(&url).send().await;
        t.server_field("app", &b.addr(), "breaker").await == "open"
    })
    .await;

    t.write_config(&yaml(3));
    let r = http.post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.server_field("app", &a.addr(), "health").await,
        "unhealthy"
    );
    assert_eq!(t.server_field("app", &b.addr(), "breaker").await, "open");
    assert_eq!(t.server_field("app", &c.addr(), "weight").await, "3");
    assert_eq!(
        t.metric(
            "tandem_circuit_breaker_state",
            &[("server", b.addr().as_str())]
        )
        .await,
        1.0
    );
    assert_eq!(
        t.metric(
            "tandem_upstream_server_up",
            &[("server", a.addr().as_str())]
        )
        .await,
        0.0
    );
    // Only c serves now.
    for _ in 0..10 {
        let v: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["instance"], "keep-c");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_finishes_its_requests_then_closes_its_connections() {
    let (a, api) = (Express::start("rm-a"), Express::start("rm-api"));
    let (tcp_port, extra_port) = (free_port(), free_port());
    let shape = |extra| Shape {
        app: vec![(a.addr(), 1)],
        api_route: false,
        extra_listener: extra,
    };
    let t = Tandem::start(&config(tcp_port, &api, &shape(Some(extra_port)))).await;
    let extra = format!("127.0.0.1:{extra_port}");

    // One keep-alive connection idle, one with a request in flight.
    let mut idle = TcpStream::connect(&extra).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let answer = read_head(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut busy = TcpStream::connect(&extra).await.unwrap();
    busy.write_all(b"GET /delay/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "request in flight", || async {
        t.server_field("api", &api.addr(), "active_requests").await == "1"
    })
    .await;

    t.write_config(&config(tcp_port, &api, &shape(None)));
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The idle connection closes; the busy one gets its answer, marked as the
    // last one, then closes too.
    let mut rest = Vec::new();
    let idle_end = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest)).await;
    assert!(matches!(idle_end, Ok(Ok(0))), "idle: {idle_end:?} {rest:?}");
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut all))
        .await
        .expect("busy connection closes after its answer")
        .unwrap();
    let text = String::from_utf8_lossy(&all).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // And the port is closed for new connections.
    eventually(
        Duration::from_secs(2),
        "removed listener refuses",
        || async { TcpStream::connect(&extra).await.is_err() },
    )
    .await;
}

/// Reads until the end of a response head (enough for a status check).
async fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn port_zero_listeners_stay_distinct_and_keep_their_ports_across_reloads() {
    let (a, b) = (Express::start("zero-a"), Express::start("zero-b"));
    let yaml = |names: &[&str]| {
        let listeners: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let up = if i % 2 == 0 { "app" } else { "api" };
                format!("  - name: {n}\n    bind: 127.0.0.1:0\n    upstream: {up}\n")
            })
            .collect();
        format!(
            "admin:\n  bind: \"{{admin}}\"\nlisteners:\n{listeners}upstreams:\n  - name: app\n    servers:\n      - address: {}\n  - name: api\n    servers:\n      - address: {}\n",
            a.addr(),
            b.addr()
        )
    };
    let instance = |url: String| async move {
        let v: serde_json::Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["instance"].as_str().unwrap_or_default().to_owned()
    };
    let t = Tandem::start(&yaml(&["one", "two"])).await;
    let (one, two) = (t.listener_addr("one").await, t.listener_addr("two").await);
    assert_ne!(one, two);
    assert_eq!(instance(format!("http://{one}/")).await, "zero-a");
    assert_eq!(instance(format!("http://{two}/")).await, "zero-b");

    // A third port-0 listener added by reload gets its own port; the others keep theirs.
    t.write_config(&yaml(&["one", "two", "three"]));
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let three = t.listener_addr("three").await;
    assert_eq!(t.listener_addr("one").await, one);
    assert_eq!(t.listener_addr("two").await, two);
    assert!(three != one && three != two, "{three}");
    assert_eq!(instance(format!("http://{three}/")).await, "zero-a");
    assert_eq!(instance(format!("http://{two}/")).await, "zero-b");

    // A listener configured on the port the kernel chose for `one` is refused
    // by name; nothing changes.
    let clash = format!("  - name: clash\n    bind: {one}\n    upstream: api\n");
    let with_clash =
        yaml(&["one", "two", "three"]).replace("upstreams:\n", &format!("{clash}upstreams:\n"));
    t.write_config(&with_clash);
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("listeners.clash") && body.contains("listener one"),
        "{body}"
    );
    assert_eq!(instance(format!("http://{one}/")).await, "zero-a");

    // Renamed, a port-0 listener is a new listener: a new port, the old one closed.
    t.write_config(&yaml(&["one", "deux"]));
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let deux = t.listener_addr("deux").await;
    assert_ne!(deux, two);
    assert_eq!(instance(format!("http://{deux}/")).await, "zero-b");
    eventually(Duration::from_secs(2), "old ports refuse", || async {
        TcpStream::connect(two).await.is_err() && TcpStream::connect(three).await.is_err()
    })
    .await;
}
