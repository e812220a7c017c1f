//! Backends failing under load (docs/resilience.md): every scenario counts the errors a
//! client saw and fails when they exceed what the documented behaviour allows. Each test prints
//! its figures (`cargo test -- --nocapture` shows them).

use std::time::{Duration, Instant};

use crate::support::{client, eventually, load, signal, web_config, Express, Tandem};

/// Three servers, fast health checks, short timeouts so failures show quickly.
fn config(servers: &[&Express], health: bool, breaker: &str) -> String {
    let hc = if health {
        "    health_check:\n      http:\n        path: /healthz\n      interval: 200ms\n      timeout: 150ms\n      rise: 2\n      fall: 2\n"
    } else {
        ""
    };
    let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
    web_config(
        "",
        &format!("    retries: 2\n    timeouts:\n      connect: 500ms\n      response: 500ms\n{hc}{breaker}"),
        &addrs,
    )
}

#[tokio::test]
async fn a_server_killed_under_load_costs_at_most_its_in_flight_requests() {
    let (a, b) = (Express::start("kill-a"), Express::start("kill-b"));
    let mut c = Express::start("kill-c");
    let c_addr = c.addr();
    let t = Tandem::start(&config(&[&a, &b, &c], true, "")).await;
    let url = t.url("web", "/").await;
    let concurrency = 8;
    let run = tokio::spawn({
        let url = url.clone();
        async move { load(&url, concurrency, Duration::from_secs(4), 20_000).await }
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed_at = Instant::now();
    c.kill();
    eventually(Duration::from_secs(3), "killed server ejected", || async {
        t.server_field("app", &c_addr, "health").await == "unhealthy"
    })
    .await;
    let ejected_after = killed_at.elapsed();
    let report = run.await.unwrap();
    println!(
        "kill: {} ok, {} errors ({:?}), ejected {:?} after SIGKILL",
        report.ok,
        report.errors.len(),
        report.errors,
        ejected_after
    );
    assert!(
        report.ok > 100,
        "load too small to mean anything: {report:?}"
    );
    assert!(
        report.errors.len() <= concurrency,
        "at most the requests in flight on the killed server may fail: {:?}",
        report.errors
    );
    let ejected_ms = (1000 + ejected_after.as_millis()) + 50;
    assert_eq!(report.errors_after(ejected_ms), 0, "no errors once ejected");
}

#[tokio::test]
async fn a_hung_server_times_out_is_ejected_and_traffic_continues() {
    let (a, b, c) = (
        Express::start("hang-a"),
        Express::start("hang-b"),
        Express::start("hang-c"),
    );
    let t = Tandem::start(&config(&[&a, &b, &c], true, "")).await;
    let url = t.url("web", "/").await;
    signal(c.pid(), "STOP");
    eventually(Duration::from_secs(3), "hung server ejected", || async {
        t.server_field("app", &c.addr(), "health").await == "unhealthy"
    })
    .await;
    let report = load(&url, 4, Duration::from_secs(2), 5_000).await;
    signal(c.pid(), "CONT");
    println!("hang: {} ok, {} errors", report.ok, report.errors.len());
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
    assert!(
        !report.by_instance.contains_key("hang-c"),
        "{:?}",
        report.by_instance
    );

    // Without health checks the hung server is found by the response timeout;
    // GETs are retried on another server so clients still see no error.
    let (d, e) = (Express::start("hang-d"), Express::start("hang-e"));
    let t = Tandem::start(&config(&[&d, &e], false, "")).await;
    signal(e.pid(), "STOP");
    let report = load(&t.url("web", "/").await, 2, Duration::from_secs(2), 400).await;
    signal(e.pid(), "CONT");
    let timeouts = t
        .metric(
            "tandem_upstream_errors_total",
            &[("kind", "response_timeout")],
        )
        .await;
    println!(
        "hang without probes: {} ok, {} errors, {timeouts} response timeouts",
        report.ok,
        report.errors.len()
    );
    assert!(timeouts >= 1.0);
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
}

#[tokio::test]
async fn failing_healthz_ejects_after_fall_and_returns_after_rise() {
    let (a, b) = (Express::start("hz-a"), Express::start("hz-b"));
    let t = Tandem::start(&config(&[&a, &b], true, "")).await;
    let url = t.url("web", "/").await;
    b.control(serde_json::json!({"health": "fail"})).await;
    eventually(Duration::from_secs(3), "ejected after fall", || async {
        t.server_field("app", &b.addr(), "health").await == "unhealthy"
    })
    .await;
    assert!(
        t.metric("tandem_upstream_server_up", &[("server", &b.addr())])
            .await
            == 0.0
    );
    let before = b.requests().await;
    let report = load(&url, 2, Duration::from_secs(1), 200).await;
    assert_eq!(report.errors.len(), 0);
    assert_eq!(
        b.requests().await,
        before,
        "an unhealthy server gets no requests"
    );

    b.control(serde_json::json!({"health": "ok"})).await;
    eventually(Duration::from_secs(3), "back after rise", || async {
        t.server_field("app", &b.addr(), "health").await == "healthy"
    })
    .await;
    let report = load(&url, 2, Duration::from_secs(1), 200).await;
    assert!(
        report.by_instance.get("hz-b").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_instance
    );
    let readyz = reqwest::get(t.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);
}

#[tokio::test]
async fn a_server_answering_503_trips_its_breaker_then_recovers_through_one_trial() {
    let (a, b) = (Express::start("cb-a"), Express::start("cb-b"));
    let breaker = "    circuit_breaker:\n      failure_threshold: 5\n      reset_timeout: 2s\n      monitor_interval: 5s\n";
    let t = Tandem::start(&config(&[&a, &b], false, breaker)).await;
    let url = t.url("web", "/").await;
    b.control(serde_json::json!({"status": 503})).await;
    let c = client();
    let mut errors = 0;
    for _ in 0..20 {
        if !c.get(&url).send().await.unwrap().status().is_success() {
            errors += 1;
        }
    }
    assert_eq!(
        errors, 0,
        "GETs answered 503 are retried on the other server"
    );
    assert_eq!(t.server_field("app", &b.addr(), "breaker").await, "open");
    assert_eq!(
        b.requests().await,
        5,
        "the breaker opened after exactly 5 failures"
    );
    let opened = Instant::now();

    // Open: no traffic to it for reset_timeout.
    while opened.elapsed() < Duration::from_millis(1500) {
        assert!(c.get(&url).send().await.unwrap().status().is_success());
    }
    assert_eq!(b.requests().await, 5, "no requests while open");

    // Still failing: the single trial fails and it opens again.
    eventually(
        Duration::from_secs(3),
        "one trial after reset_timeout",
        || async {
            let _ = c.get(&url).send().await;
            b.requests().await == 6
        },
    )
    .await;
    assert_eq!(t.server_field("app", &b.addr(), "breaker").await, "open");

    // Recovered: the next trial succeeds and the breaker closes.
    b.control(serde_json::json!({"status": null})).await;
    eventually(
        Duration::from_secs(4),
        "closed after a successful trial",
        || async {
            let _ = c.get(&url).send().await;
            t.server_field("app", &b.addr(), "breaker").await == "closed"
        },
    )
    .await;
    let m = t.metrics().await;
    for to in ["open", "half_open", "closed"] {
        assert!(
            crate::support::metric_value(
                &m,
                "tandem_circuit_breaker_transitions_total",
                &[("to", to)]
            ) >= 1.0,
            "transition to {to} counted"
        );
    }
    assert!(
        crate::support::metric_value(&m, "tandem_retries_total", &[("upstream", "app")]) >= 5.0
    );
}

#[tokio::test]
async fn with_every_server_down_clients_get_503_with_retry_after_at_once() {
    let (mut a, mut b) = (Express::start("down-a"), Express::start("down-b"));
    let t = Tandem::start(&config(&[&a, &b], true, "")).await;
    a.kill();
    b.kill();
    eventually(Duration::from_secs(3), "both ejected", || async {
        reqwest::get(t.admin_url("/readyz")).await.unwrap().status() == 503
    })
    .await;
    let c = client();
    let started = Instant::now();
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    println!("all down: 503 in {took:?}");
    assert!(
        took < Duration::from_millis(500),
        "no connection attempt is made: {took:?}"
    );
    let errs_before = t.metric("tandem_upstream_errors_total", &[]).await;
    let _ = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(
        t.metric("tandem_upstream_errors_total", &[]).await,
        errs_before
    );
}

#[tokio::test]
async fn a_flapping_server_causes_no_errors_for_get_traffic() {
    let a = Express::start("flap-a");
    let mut b = Express::start("flap-b");
    let port = b.port;
    let t = Tandem::start(&config(&[&a, &b], true, "")).await;
    let url = t.url("web", "/").await;
    let run = tokio::spawn(async move { load(&url, 4, Duration::from_secs(6), 30_000).await });
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        b = Express::start_on("flap-b", port);
    }
    let report = run.await.unwrap();
    println!(
        "flapping: {} ok, {} errors {:?}",
        report.ok,
        report.errors.len(),
        report.errors
    );
    assert!(report.ok > 100);
    assert_eq!(report.errors.len(), 0, "{:?}", report.errors);
}
