//! Golden fixtures (exact output of every file under `tests/golden/config/`) and
//! field-by-field checks of the valid fixtures.
//!
//! A fixture `<case>.yaml` is parsed with its file name as label and its directory
//! as base; `<case>.expected` holds the Display of the errors, or `ok` for a valid
//! file. `UPDATE_GOLDEN=1 cargo test` rewrites the expected files (review the diff).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::types::*;
use super::{load, parse};

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/config")
}

/// The fixtures' copy with generated TLS files (see the module doc). Kept for
/// the whole run because tests compare paths under it.
fn golden_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&source_dir(), tmp.path());
        let files = tmp.path().join("files");
        let gen = crate::listener::tls::tests::self_signed;
        let (cert, key) = gen(&["example.com", "*.example.com"], (2099, 1, 1));
        std::fs::write(files.join("site.pem"), cert).unwrap();
        std::fs::write(files.join("site.key"), key).unwrap();
        let (_, other_key) = gen(&["example.com"], (2099, 1, 1));
        std::fs::write(files.join("other.key"), other_key).unwrap();
        let (cert, key) = gen(&["old.example.com"], (2020, 1, 1));
        std::fs::write(files.join("expired.pem"), cert).unwrap();
        std::fs::write(files.join("expired.key"), key).unwrap();
        tmp
    })
    .path()
    .to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn run(case: &str) -> Result<Config, super::ConfigErrors> {
    let dir = golden_dir();
    let text = std::fs::read_to_string(dir.join(format!("{case}.yaml"))).unwrap();
    parse(&text, &format!("{case}.yaml"), &dir)
}

#[test]
fn golden_fixtures() {
    let dir = golden_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 16, "fixtures missing: {}", cases.len());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for yaml in &cases {
        let case = yaml.file_stem().unwrap().to_str().unwrap();
        let actual = match run(case) {
            Ok(_) => "ok\n".to_string(),
            Err(e) => format!("{e}\n"),
        };
        let expected_path = source_dir().join(format!("{case}.expected"));
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {case}: expected\n{expected}--- {case}: actual\n{actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errors_are_sorted_and_counted() {
    let errors = run("mixed_errors").unwrap_err();
    assert!(errors.len() >= 4);
    let positions: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
    let first = errors.iter().next().unwrap();
    assert_eq!(first.file, "mixed_errors.yaml");
    assert_eq!(first.path, "workers");
}

#[test]
fn minimal_config_gets_every_default() {
    let c = run("minimal").unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(c.workers, cores);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(
        c.admin,
        Admin {
            bind: "127.0.0.1:9901".parse().unwrap(),
            token: None,
            token_file: None,
            state_file: None,
        }
    );
    assert_eq!(c.ha, None);
    assert_eq!(
        c.listeners,
        vec![Listener {
            name: "web".into(),
            bind: "127.0.0.1:8080".parse().unwrap(),
            mode: ListenerMode::Http,
            upstream: "app".into(),
            routes: vec![],
            tls: None,
            timeouts: ListenerTimeouts {
                client_header: Duration::from_secs(10),
                client_idle: Duration::from_secs(60),
            },
            max_connections: 10_000,
            http2: Http2Limits {
                max_concurrent_streams: 100,
            },
        }]
    );
    assert_eq!(
        c.upstreams,
        vec![Upstream {
            name: "app".into(),
            balance: BalanceKind::RoundRobin,
            hash_key: None,
            servers: vec![Server {
                address: "127.0.0.1:3001".into(),
                host: "127.0.0.1".into(),
                port: 3001,
                weight: 1,
                tier: 0,
            }],
            resolve_interval: Duration::from_secs(30),
            health_check: None,
            circuit_breaker: CircuitBreaker {
                failure_threshold: 5,
                reset_timeout: Duration::from_secs(30),
                monitor_interval: Duration::from_secs(5),
                failure_status: vec![502, 503, 504],
            },
            retries: 2,
            timeouts: UpstreamTimeouts {
                connect: Duration::from_secs(2),
                response: Duration::from_secs(30),
                idle: Duration::from_secs(4),
                read: Duration::from_secs(30),
            },
            pool: Pool {
                max_idle_per_server: 64,
            },
            failover: Failover::AllDown,
            slow_start: None,
            max_requests_per_server: 0,
            queue: Queue::default(),
            notify: ServerNotify::default(),
            tls: None,
        }]
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_config_top_level_admin_and_listeners() {
    let dir = golden_dir();
    let c = run("full").unwrap();
    assert_eq!(c.workers, 4);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(45));
    assert_eq!(c.admin.bind, addr("127.0.0.1:9901"));
    assert_eq!(c.admin.token.as_deref(), Some("s3cret-token"));
    assert_eq!(c.admin.token_file, Some(dir.join("files/admin.token")));

    let web = &c.listeners[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.bind, addr("0.0.0.0:8080"));
    assert_eq!(web.mode, ListenerMode::Http);
    assert_eq!(web.upstream, "app");
    assert_eq!(
        web.routes,
        vec![
            Route {
                host: Some(HostMatch::Exact("api.example.com".into())),
                path_prefix: Some("/api".into()),
                upstream: "api".into(),
            },
            Route {
                host: Some(HostMatch::Suffix(".example.com".into())),
                path_prefix: None,
                upstream: "api".into(),
            },
        ]
    );
    let certs = vec![CertificatePaths {
        cert: dir.join("files/site.pem"),
        key: dir.join("files/site.key"),
    }];
    assert_eq!(
        web.tls,
        Some(Tls {
            certificates: certs.clone(),
            alpn: vec!["h2".into(), "http/1.1".into()],
        })
    );
    assert_eq!(web.timeouts.client_header, Duration::from_secs(10));
    assert_eq!(web.timeouts.client_idle, Duration::from_secs(60));
    assert_eq!(web.max_connections, 10_000);

    let raw = &c.listeners[1];
    assert_eq!(raw.bind, addr("[::1]:9000"));
    assert_eq!(raw.mode, ListenerMode::Tcp);
    assert_eq!(raw.upstream, "api");
    assert!(raw.routes.is_empty());
    // tcp listeners default to no ALPN.
    assert_eq!(
        raw.tls,
        Some(Tls {
            certificates: certs,
            alpn: vec![],
        })
    );
    assert_eq!(raw.timeouts.client_header, Duration::from_secs(10));
    assert_eq!(raw.timeouts.client_idle, Duration::from_secs(300));
}

#[test]
fn full_config_upstreams() {
    let c = run("full").unwrap();
    let app = c.upstream("app").unwrap();
    assert_eq!(app.balance, BalanceKind::RoundRobin);
    assert_eq!(app.hash_key, None);
    assert_eq!(app.servers.len(), 2);
    assert_eq!(app.servers[1].address, "127.0.0.1:3002");
    assert_eq!(app.servers[1].weight, 1);
    assert_eq!(
        app.health_check,
        Some(HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into(),
                host: Some("app.internal".into()),
                expect_status: (200, 399),
            },
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        })
    );
    assert_eq!(app.circuit_breaker, CircuitBreaker::default());
    assert_eq!(app.retries, 2);
    assert_eq!(app.pool.max_idle_per_server, 64);

    let api = c.upstream("api").unwrap();
    assert_eq!(api.balance, BalanceKind::ConsistentHash);
    assert_eq!(api.hash_key, Some(HashKey::Header("x-user-id".into())));
    assert_eq!(
        api.servers[0],
        Server {
            address: "api-1.internal:4000".into(),
            host: "api-1.internal".into(),
            port: 4000,
            weight: 1000,
            tier: 0,
        }
    );
    assert_eq!(api.servers[1].weight, 0);
    let hc = api.health_check.as_ref().unwrap();
    assert_eq!(hc.probe, Probe::Tcp);
    assert_eq!(hc.interval, Duration::from_millis(500));
    assert_eq!(
        (hc.timeout, hc.rise, hc.fall),
        (Duration::from_secs(1), 2, 3)
    );
    assert_eq!(api.circuit_breaker.failure_status, vec![500]);
    assert_eq!(api.circuit_breaker.failure_threshold, 5);
    assert_eq!(api.retries, 0);
    assert_eq!(api.timeouts.response, Duration::from_secs(90));
    assert_eq!(api.timeouts.connect, Duration::from_secs(2));
    assert_eq!(api.timeouts.idle, Duration::from_secs(4));
    assert_eq!(api.timeouts.read, Duration::from_secs(120));
}

#[test]
fn full_config_ha() {
    let dir = golden_dir();
    let ha = run("full").unwrap().ha.unwrap();
    let hook = Some(dir.join("files/notify.sh"));
    assert_eq!(
        ha,
        Ha {
            node_id: "lb-a".into(),
            bind: addr("10.0.0.2:7400"),
            peer: addr("10.0.0.3:7400"),
            priority: 200,
            preempt: false,
            heartbeat_interval: Duration::from_millis(200),
            dead_interval: Duration::from_secs(1),
            secret_file: dir.join("files/secret.key"),
            secret: b"0123456789abcdef0123456789abcdef01234567".to_vec(),
            vips: vec![Vip {
                address: "10.0.0.100".parse().unwrap(),
                prefix_len: 24,
                interface: "eth0".into(),
                gratuitous_arp: 5,
                priority: None,
            }],
            track_upstreams: vec!["app".into()],
            notify: Notify {
                master: hook.clone(),
                backup: hook.clone(),
                fault: hook,
            },
        }
    );
}

#[test]
fn ha_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), [7u8; 32]).unwrap();
    let text = "listeners: [{name: w, bind: '127.0.0.1:1', upstream: a}]\n\
                upstreams: [{name: a, servers: [{address: 'h:1'}]}]\n\
                ha: {node_id: n, bind: '10.0.0.1:7400', peer: '10.0.0.2:7400', secret_file: k, \
                vip: {address: 10.0.0.9/32, interface: eth0}}\n";
    let ha = parse(text, "t.yaml", dir.path()).unwrap().ha.unwrap();
    assert_eq!(ha.priority, 100);
    assert!(ha.preempt);
    assert_eq!(ha.heartbeat_interval, Duration::from_millis(200));
    assert_eq!(ha.dead_interval, Duration::from_secs(1));
    assert_eq!(ha.secret, vec![7u8; 32]);
    assert_eq!(ha.vips[0].gratuitous_arp, 3);
    assert!(ha.track_upstreams.is_empty());
    assert_eq!(ha.notify, Notify::default());
}

#[test]
fn ha_vips_with_priorities_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), [7u8; 32]).unwrap();
    let base = "listeners: [{name: w, bind: '127.0.0.1:1', upstream: a}]\n\
                upstreams: [{name: a, servers: [{address: 'h:1'}]}]\n\
                ha:\n  node_id: n\n  bind: '10.0.0.1:7400'\n  peer: '10.0.0.2:7400'\n  \
                secret_file: k\n  priority: 150\n";
    let good = format!(
        "{base}  vips:\n    - {{address: 10.0.0.9/24, interface: eth0, priority: 200}}\n    \
         - {{address: 'fd00::9/64', interface: eth0}}\n"
    );
    let ha = parse(&good, "t.yaml", dir.path()).unwrap().ha.unwrap();
    assert_eq!(ha.vips.len(), 2);
    assert_eq!(ha.vips[0].priority, Some(200));
    assert_eq!(ha.vips[1].priority, None);
    assert!(ha.vips[1].address.is_ipv6());
    let errors = |text: &str| parse(text, "t.yaml", dir.path()).unwrap_err().to_string();
    let both = format!(
        "{base}  vip: {{address: 10.0.0.9/24, interface: eth0}}\n  \
         vips: [{{address: 10.0.0.8/24, interface: eth0}}]\n"
    );
    assert!(
        errors(&both).contains("ha.vips: set either vip (one VIP) or vips (several), not both"),
        "{}",
        errors(&both)
    );
    let bad = format!(
        "{base}  vips:\n    - {{address: 10.0.0.9/24, interface: eth0, priority: 0}}\n    \
         - {{address: 10.0.0.9/24, interface: eth0, prio: 1}}\n"
    );
    let e = errors(&bad);
    assert!(
        e.contains("ha.vips[0].priority: must be between 1 and 254, found 0"),
        "{e}"
    );
    assert!(e.contains("ha.vips[1].prio"), "unknown key reported: {e}");
    let empty = format!("{base}  vips: []\n");
    assert!(errors(&empty).contains("ha.vips: vips must list at least one VIP"));
}

#[test]
fn load_resolves_paths_against_the_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "abc\n").unwrap();
    let file = dir.path().join("proxy.yaml");
    let text = "admin: {token_file: token}\n\
                listeners: [{name: w, bind: '127.0.0.1:0', upstream: a}]\n\
                upstreams: [{name: a, servers: [{address: 'h:1'}]}]\n";
    std::fs::write(&file, text).unwrap();
    let c = load(&file).unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("abc"));
    assert_eq!(c.admin.token_file, Some(dir.path().join("token")));
}

#[test]
fn state_file_needs_an_existing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let rest = "listeners: [{name: w, bind: '127.0.0.1:0', upstream: a}]\n\
                upstreams: [{name: a, servers: [{address: 'h:1'}]}]\n";
    let ok = format!("admin: {{state_file: state.json}}\n{rest}");
    let c = parse(&ok, "t.yaml", dir.path()).unwrap();
    assert_eq!(c.admin.state_file, Some(dir.path().join("state.json")));
    let missing = format!("admin:\n  state_file: nowhere/state.json\n{rest}");
    let e = parse(&missing, "t.yaml", dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("t.yaml:2:15: admin.state_file: the directory of state file \"nowhere/state.json\" does not exist"),
        "{e}"
    );
    let a_dir = format!("admin: {{state_file: .}}\n{rest}");
    let e = parse(&a_dir, "t.yaml", dir.path()).unwrap_err().to_string();
    assert!(e.contains("must name a file, not a directory"), "{e}");
}

#[test]
fn load_reports_an_unreadable_file() {
    let e = load(Path::new("/nonexistent/proxy.yaml")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert!(e
        .to_string()
        .starts_with("/nonexistent/proxy.yaml: cannot read the configuration file"));
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let text = "listeners: [{name: w, bind: '127.0.0.1:0', upstream: a}]\n\
                upstreams:\n  - &u {name: a, servers: [{address: 'h:1'}]}\n";
    let c = parse(text, "t.yaml", Path::new(".")).unwrap();
    assert_eq!(c.upstreams.len(), 1);
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..8 {
        let p = i - 1;
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let e = parse(&text, "bomb.yaml", Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("too many nodes"), "{e}");
}

#[test]
fn a_key_with_a_newline_stays_on_one_error_line() {
    // YAML's double-quoted `\n` is a real newline in the key.
    for text in [r#""a\nb": 1"#, "{a\n\na}_"] {
        let e = parse(text, "t.yaml", Path::new("."))
            .unwrap_err()
            .to_string();
        for line in e.lines() {
            assert!(line.starts_with("t.yaml:"), "{e}");
        }
    }
    let e = parse(r#""a\nb": 1"#, "t.yaml", Path::new(".")).unwrap_err();
    assert!(e.to_string().contains(r"a\nb"), "{e}");
}

#[test]
fn access_log_is_off_by_default_and_resolved_against_the_config_dir() {
    assert_eq!(run("minimal").unwrap().access_log, None);
    let c = run("access_log_text").unwrap();
    assert_eq!(
        c.access_log,
        Some(AccessLog {
            target: LogTarget::File(golden_dir().join("files/access.log")),
            format: AccessLogFormat::Text,
        })
    );
    let dir = golden_dir();
    let yaml = |path: &str| {
        format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:8080\n    upstream: app\n\
             upstreams:\n  - name: app\n    servers:\n      - address: 127.0.0.1:3001\n\
             access_log:\n  path: {path}\n"
        )
    };
    for (path, target) in [("stdout", LogTarget::Stdout), ("stderr", LogTarget::Stderr)] {
        let c = parse(&yaml(path), "p.yaml", &dir).unwrap();
        let log = c.access_log.unwrap();
        assert_eq!(log.target, target);
        assert_eq!(log.format, AccessLogFormat::Json, "json by default");
    }
}
