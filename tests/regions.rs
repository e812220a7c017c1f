//! Regions and recovery (failover tiers, slow start) against real Express servers:
//! traffic shares are counted per instance from the answers' `instance` field.

use std::time::{Duration, Instant};

use crate::support::{eventually, load, web_config, Express, Tandem};

const HEALTH: &str = "    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n      timeout: 100ms\n      rise: 1\n      fall: 1\n";

/// `servers` as (server, tier).
fn config(servers: &[(&Express, u8)], upstream_keys: &str) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(s, tier)| format!("{}\n        tier: {tier}", s.addr()))
        .collect();
    web_config(
        "",
        &format!("    retries: 2\n    timeouts:\n      connect: 500ms\n      response: 2s\n{HEALTH}{upstream_keys}"),
        &list,
    )
}

async fn wait_health(t: &Tandem, s: &Express, want: &str) {
    eventually(
        Duration::from_secs(5),
        &format!("{} {want}", s.name),
        || async { t.server_field("app", &s.addr(), "health").await == want },
    )
    .await;
}

fn share(report: &crate::support::LoadReport, names: &[&str]) -> f64 {
    let total: u64 = report.by_instance.values().sum();
    let got: u64 = names
        .iter()
        .map(|n| report.by_instance.get(*n).copied().unwrap_or(0))
        .sum();
    got as f64 / total.max(1) as f64
}

#[tokio::test]
async fn the_failover_tier_serves_only_when_every_primary_is_out_and_hands_back() {
    let mut a = Express::start("tier-a");
    let mut b = Express::start("tier-b");
    let c = Express::start("tier-c");
    let breaker = "    circuit_breaker:\n      reset_timeout: 500ms\n";
    let t = Tandem::start(&config(&[(&a, 0), (&b, 0), (&c, 1)], breaker)).await;
    let url = t.url("web", "/").await;

    assert_eq!(t.server_field("app", &c.addr(), "tier").await, "1");
    assert_eq!(t.server_field("app", &a.addr(), "tier").await, "0");
    let report = load(&url, 4, Duration::from_secs(2), 400).await;
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
    assert_eq!(share(&report, &["tier-c"]), 0.0, "{:?}", report.by_instance);

    // One primary killed: the other takes everything, tier 1 still nothing.
    a.kill();
    wait_health(&t, &a, "unhealthy").await;
    let report = load(&url, 4, Duration::from_secs(2), 300).await;
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
    assert_eq!(share(&report, &["tier-b"]), 1.0, "{:?}", report.by_instance);

    // The last primary dies under load: after its ejection, not one failure.
    let run = tokio::spawn({
        let url = url.clone();
        async move { load(&url, 4, Duration::from_secs(3), 5_000).await }
    });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await; // let load build up first
    b.kill();
    wait_health(&t, &b, "unhealthy").await;
    let ejected_ms = started.elapsed().as_millis();
    let report = run.await.unwrap();
    println!(
        "all primaries out: {} ok, {} errors ({} after ejection at {ejected_ms} ms)",
        report.ok,
        report.errors.len(),
        report.errors_after(ejected_ms)
    );
    assert_eq!(report.errors_after(ejected_ms), 0, "{:?}", report.errors);
    assert!(report.by_instance.get("tier-c").copied().unwrap_or(0) > 0);

    // A primary comes back: tier 0 again, tier 1 idle (once its breaker, opened by
    // the kill, has let its trial through).
    let b2 = Express::start_on("tier-b2", b.port);
    wait_health(&t, &b2, "healthy").await;
    eventually(
        Duration::from_secs(10),
        "traffic back on tier 0",
        || async {
            share(
                &load(&url, 1, Duration::from_secs(1), 20).await,
                &["tier-b2"],
            ) == 1.0
        },
    )
    .await;
    let report = load(&url, 4, Duration::from_secs(2), 300).await;
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
    assert_eq!(
        share(&report, &["tier-b2"]),
        1.0,
        "{:?}",
        report.by_instance
    );
}

#[tokio::test]
async fn gradual_failover_spills_the_envoy_share_to_the_next_tier() {
    let primaries: Vec<Express> = (0..4)
        .map(|i| Express::start(&format!("grad-p{i}")))
        .collect();
    let backups: Vec<Express> = (0..2)
        .map(|i| Express::start(&format!("grad-b{i}")))
        .collect();
    let mut servers: Vec<(&Express, u8)> = primaries.iter().map(|p| (p, 0)).collect();
    servers.extend(backups.iter().map(|b| (b, 1)));
    let t = Tandem::start(&config(&servers, "    failover: gradual\n")).await;
    let url = t.url("web", "/").await;
    let names: Vec<&str> = primaries.iter().map(|p| p.name.as_str()).collect();
    // (primaries down, tier-0 share): min(1, 1.4 * up / 4).
    for (down, want) in [(1, 1.0), (2, 0.7), (3, 0.35)] {
        let p = &primaries[down - 1];
        p.control(serde_json::json!({"health": "fail"})).await;
        wait_health(&t, p, "unhealthy").await;
        let report = load(&url, 4, Duration::from_secs(5), 800).await;
        assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
        let got = share(&report, &names);
        println!("gradual, {down} of 4 primaries down: tier-0 share {got:.3} (formula {want})");
        assert!(
            (got - want).abs() <= 0.08,
            "{down} down: tier-0 share {got:.3}, want {want} ({:?})",
            report.by_instance
        );
    }
}

#[tokio::test]
async fn slow_start_ramps_a_returning_server_up_to_its_share() {
    let a = Express::start("slow-a");
    let b = Express::start("slow-b");
    let t = Tandem::start(&config(&[(&a, 0), (&b, 0)], "    slow_start: 8s\n")).await;
    let url = t.url("web", "/").await;
    b.control(serde_json::json!({"health": "fail"})).await;
    wait_health(&t, &b, "unhealthy").await;
    b.control(serde_json::json!({"health": "ok"})).await;
    wait_health(&t, &b, "healthy").await;
    // The ramp is visible in /status and the weight gauge (fractional, below 1).
    let shown: f64 = t
        .server_field("app", &b.addr(), "weight")
        .await
        .parse()
        .unwrap();
    assert!(shown > 0.0 && shown < 0.6, "weight in /status: {shown}");
    let gauge = t
        .metric("tandem_upstream_server_weight", &[("server", &b.addr())])
        .await;
    assert!(gauge > 0.0 && gauge < 0.6, "weight gauge: {gauge}");
    // One-second buckets: b's factor goes 0.1 -> 1 over 8 s, its share 9 % -> 50 %.
    let mut shares = Vec::new();
    for _ in 0..9 {
        let report = load(&url, 2, Duration::from_secs(1), 2_000).await;
        assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
        shares.push(share(&report, &["slow-b"]));
    }
    println!("slow start, returning server's share per second: {shares:.2?}");
    assert!(
        shares[0] < 0.3,
        "first second {:.2}: {shares:.2?}",
        shares[0]
    );
    let last = shares[5];
    assert!(
        (last - 0.5).abs() < 0.1,
        "full share at the end: {shares:.2?}"
    );
    assert!(shares[2] > shares[0], "rising: {shares:.2?}");
}

#[test]
fn check_warns_when_no_server_is_in_tier_0_and_when_tls_is_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy.yaml"),
        "listeners:\n  - name: web\n    bind: 127.0.0.1:18080\n    upstream: app\nupstreams:\n  - name: app\n    tls:\n      verify: false\n    servers:\n      - address: 127.0.0.1:3001\n        tier: 1\n  - name: fine\n    servers:\n      - address: 127.0.0.1:3002\n",
    )
    .unwrap();
    let (code, out, err) = crate::support::tandem_cli(&["check", "-c", "proxy.yaml"], dir.path());
    assert_eq!(code, 0, "warnings do not fail the check: {err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(
        err.contains("warning: upstreams.app: no server is in tier 0"),
        "{err}"
    );
    assert!(
        err.contains("warning: upstreams.app: tls.verify is false"),
        "{err}"
    );
    assert!(!err.contains("upstreams.fine"), "{err}");
}

#[tokio::test]
async fn random_two_keeps_traffic_off_a_slow_server_of_two() {
    let fast = Express::start("r2-fast");
    let slow = Express::start("r2-slow");
    slow.control(serde_json::json!({"delay_ms": 300})).await;
    let t = Tandem::start(&web_config(
        "",
        "    balance: random_two\n",
        &[fast.addr(), slow.addr()],
    ))
    .await;
    let url = t.url("web", "/").await;
    let report = load(&url, 4, Duration::from_secs(3), 3_000).await;
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
    let slow_share = share(&report, &["r2-slow"]);
    println!("random_two, one server 300 ms slower: its share {slow_share:.3}");
    // Two distinct draws always compare both servers, so the slow one (with
    // requests piling up) loses; independent draws gave it 25-35 %.
    assert!(slow_share < 0.1, "{:?}", report.by_instance);
}
