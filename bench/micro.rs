//! Micro-benchmarks of the hot pieces (criterion): balancer picks per algorithm
//! at 3/30/300 servers, route look-up, snapshot load while another thread keeps
//! publishing new generations, request head rewriting (written straight
//! into the outgoing head) and response head parsing.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a short run). These measure
//! CPU work in isolation; end-to-end figures come from `bench/run.sh`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use tandem::config::types::BalanceKind;
use tandem::listener::http::headers::{
    client_ip_value, encode_request_head, Forwarded, OutFraming, Outgoing,
};
use tandem::snapshot::{self, SnapshotHandle};
use tandem::upstream::balance::{Balancer, Candidates};
use tandem::upstream::{h1, ServerRegistry};

/// Every server available, with some load and latency spread.
struct Fixed {
    active: Vec<u64>,
    latency: Vec<f64>,
}

impl Candidates for Fixed {
    fn len(&self) -> usize {
        self.active.len()
    }
    fn available(&self, i: usize) -> bool {
        i % 17 != 5 // a few unavailable, as in real pools
    }
    fn active(&self, i: usize) -> u64 {
        self.active.get(i).copied().unwrap_or(0)
    }
    fn latency_ns(&self, i: usize) -> f64 {
        self.latency.get(i).copied().unwrap_or(0.0)
    }
}

fn balancers(c: &mut Criterion) {
    let mut g = c.benchmark_group("balancer_pick");
    for n in [3usize, 30, 300] {
        let servers: Vec<(String, u32)> = (0..n)
            .map(|i| {
                (
                    format!("10.0.{}.{}:8080", i / 250, i % 250),
                    1 + (i % 3) as u32,
                )
            })
            .collect();
        let cands = Fixed {
            active: (0..n as u64).map(|i| i % 7).collect(),
            latency: (0..n).map(|i| 1e6 + (i % 5) as f64 * 2e5).collect(),
        };
        for (name, kind) in [
            ("round_robin", BalanceKind::RoundRobin),
            ("least_connections", BalanceKind::LeastConnections),
            ("random_two", BalanceKind::RandomTwo),
            ("peak_ewma", BalanceKind::PeakEwma),
            ("consistent_hash", BalanceKind::ConsistentHash),
        ] {
            let b = Balancer::new(kind, &servers);
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            g.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    black_box(b.pick(&cands, Some(x), x.rotate_left(17)))
                })
            });
        }
    }
    g.finish();
}

fn config_text(servers: usize, routes: usize) -> String {
    let mut s = String::from("admin:\n  bind: 127.0.0.1:0\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    upstream: app\n    routes:\n");
    for r in 0..routes {
        s.push_str(&format!(
            "      - host: \"*.svc{r}.example.com\"\n        path_prefix: /api/v{r}\n        upstream: app\n"
        ));
    }
    s.push_str("upstreams:\n  - name: app\n    servers:\n");
    for i in 0..servers {
        s.push_str(&format!(
            "      - address: 10.1.{}.{}:80\n",
            i / 250,
            i % 250
        ));
    }
    s
}

fn build(
    servers: usize,
    routes: usize,
    generation: u64,
    prev: Option<&snapshot::Snapshot>,
    reg: &ServerRegistry,
) -> snapshot::Snapshot {
    let cfg = tandem::config::parse(&config_text(servers, routes), "bench.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    snapshot::build(Arc::new(cfg), generation, prev, reg).unwrap_or_else(|e| panic!("build: {e:?}"))
}

fn routing(c: &mut Criterion) {
    let reg = ServerRegistry::default();
    let snap = build(3, 20, 1, None, &reg);
    let l = &snap.listeners[0];
    c.bench_function("route/20_routes_last_match", |b| {
        b.iter(|| {
            black_box(l.route(
                Some(black_box("Shop.SVC19.example.com")),
                black_box("/api/v19/items"),
            ))
        })
    });
    c.bench_function("route/20_routes_default", |b| {
        b.iter(|| black_box(l.route(Some(black_box("other.example.org")), black_box("/"))))
    });
    // Many tenants: 5,000 exact-host routes. The first and the last route must
    // cost the same (routes are compiled, not scanned).
    let snap = build_hosts(5000);
    let l = &snap.listeners[0];
    c.bench_function("route/5000_hosts_first", |b| {
        b.iter(|| black_box(l.route(Some(black_box("tenant0.example.com")), black_box("/"))))
    });
    c.bench_function("route/5000_hosts_last", |b| {
        b.iter(|| black_box(l.route(Some(black_box("tenant4999.example.com")), black_box("/"))))
    });
}

fn build_hosts(routes: usize) -> snapshot::Snapshot {
    let mut s = String::from("admin:\n  bind: 127.0.0.1:0\nlisteners:\n  - name: web\n    bind: 127.0.0.1:0\n    upstream: app\n    routes:\n");
    for r in 0..routes {
        s.push_str(&format!(
            "      - host: tenant{r}.example.com\n        upstream: app\n"
        ));
    }
    s.push_str("upstreams:\n  - name: app\n    servers:\n      - address: 10.1.0.1:80\n");
    let cfg = tandem::config::parse(&s, "bench.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    snapshot::build(Arc::new(cfg), 1, None, &ServerRegistry::default())
        .unwrap_or_else(|e| panic!("build: {e:?}"))
}

fn snapshot_load(c: &mut Criterion) {
    let reg = Arc::new(ServerRegistry::default());
    let handle = SnapshotHandle::new(build(30, 5, 1, None, &reg));
    let stop = Arc::new(AtomicBool::new(false));
    // Reload churn: another thread publishes a new generation continuously.
    let churn = {
        let (handle, stop, reg) = (handle.clone(), stop.clone(), reg.clone());
        std::thread::spawn(move || {
            let mut generation = 2;
            while !stop.load(Ordering::Relaxed) {
                let prev = handle.load();
                handle.publish(build(30, 5, generation, Some(&prev), &reg));
                generation += 1;
            }
        })
    };
    c.bench_function("snapshot/load_full_under_reload_churn", |b| {
        b.iter(|| black_box(handle.load().generation))
    });
    c.bench_function("snapshot/peek_under_reload_churn", |b| {
        b.iter(|| black_box(handle.peek().generation))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = churn.join();
}

fn headers(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-encoding", "gzip, br"),
        ("cookie", "session=abc123; theme=dark"),
        ("connection", "keep-alive"),
    ] {
        base.insert(k, HeaderValue::from_static(v));
    }
    let ip = client_ip_value(
        "203.0.113.9"
            .parse()
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()),
    );
    let host = base.get("host").cloned();
    let method = http::Method::GET;
    c.bench_function("headers/request_head_encode", |b| {
        let mut out = Vec::with_capacity(512);
        b.iter(|| {
            out.clear();
            encode_request_head(
                &Outgoing {
                    method: &method,
                    target: "/products/42?ref=home",
                    headers: &base,
                    upgrade: false,
                    framing: OutFraming::None,
                },
                &Forwarded {
                    client_ip: &ip,
                    https: false,
                    host: host.as_ref(),
                },
                &mut out,
            );
            out.len()
        })
    });
    let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\
        Content-Length: 38\r\nETag: W/\"26-abc\"\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\n\
        Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
    c.bench_function("headers/response_head_parse", |b| {
        b.iter_batched(
            || bytes::BytesMut::from(response),
            |mut buf| h1::response::parse(&mut buf, false, false).map(|h| h.is_some()),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, balancers, routing, snapshot_load, headers);
criterion_main!(benches);
