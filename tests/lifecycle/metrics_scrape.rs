//! The `/metrics` exposition: every family with its type, and a
//! scrape that `promtool check metrics` accepts without a remark.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{client, eventually, web_config, Express, Tandem};

/// Every family docs/metrics.md names, with its Prometheus type.
const FAMILIES: &[(&str, &str)] = &[
    ("tandem_requests_total", "counter"),
    ("tandem_request_duration_seconds", "histogram"),
    ("tandem_connections_active", "gauge"),
    ("tandem_connections_total", "counter"),
    ("tandem_upstream_server_up", "gauge"),
    ("tandem_circuit_breaker_state", "gauge"),
    ("tandem_circuit_breaker_transitions_total", "counter"),
    ("tandem_health_checks_total", "counter"),
    ("tandem_retries_total", "counter"),
    ("tandem_upstream_errors_total", "counter"),
    ("tandem_config_reloads_total", "counter"),
    ("tandem_config_generation", "gauge"),
    ("tandem_ha_role", "gauge"),
    ("tandem_ha_transitions_total", "counter"),
    ("tandem_ha_heartbeats_total", "counter"),
];

/// Families that must carry samples after the traffic below (the HA ones
/// have none without an `ha` section, only their HELP and TYPE lines).
const WITH_SAMPLES: &[&str] = &[
    "tandem_requests_total",
    "tandem_request_duration_seconds_bucket",
    "tandem_connections_active",
    "tandem_connections_total",
    "tandem_upstream_server_up",
    "tandem_circuit_breaker_state",
    "tandem_circuit_breaker_transitions_total",
    "tandem_health_checks_total",
    "tandem_retries_total",
    "tandem_upstream_errors_total",
    "tandem_config_reloads_total",
    "tandem_config_generation",
    "tandem_ha_role",
];

#[tokio::test]
async fn every_family_is_exported_with_its_type_and_promtool_accepts_the_scrape() {
    let (a, b) = (Express::start("metrics-a"), Express::start("metrics-b"));
    let upstream_keys = "    retries: 1
    health_check:
      http:
        path: /healthz
      interval: 100ms
    circuit_breaker:
      failure_threshold: 2
      reset_timeout: 60s
";
    let t = Tandem::start(&web_config("", upstream_keys, &[a.addr(), b.addr()])).await;
    // Failing answers from b: upstream errors, retries, a breaker transition.
    b.control(serde_json::json!({ "status": 502 })).await;
    let url = t.url("web", "/").await;
    let http = client();
    eventually(Duration::from_secs(5), "b's breaker open", || async {
        let _ = http.get(&url).send().await;
        t.server_field("app", &b.addr(), "breaker").await == "open"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
    let r = http.post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(5), "health checks counted", || async {
        t.metric("tandem_health_checks_total", &[("result", "success")])
            .await
            > 0.0
    })
    .await;

    let scrape = t.metrics().await;
    for (name, kind) in FAMILIES {
        assert!(
            scrape.contains(&format!("\n# TYPE {name} {kind}\n")),
            "missing `# TYPE {name} {kind}` in\n{scrape}"
        );
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "missing HELP for {name}"
        );
    }
    for name in WITH_SAMPLES {
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
            "no sample of {name} in\n{scrape}"
        );
    }
    assert_eq!(t.metric("tandem_config_generation", &[]).await, 2.0);
    assert_eq!(
        t.metric("tandem_ha_role", &[]).await,
        1.0,
        "no ha: always master"
    );

    let out = promtool_check(&scrape);
    println!(
        "metrics: {} lines scraped, promtool: {:?}",
        scrape.lines().count(),
        out
    );
    assert_eq!(
        out,
        Ok(String::new()),
        "promtool check metrics found problems"
    );
}

/// Runs `promtool check metrics` on `scrape`; Ok(its output) when it passed.
fn promtool_check(scrape: &str) -> Result<String, String> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool not found ({e}): install it (`apt-get install prometheus`, \
             which .ci/run does) — this test needs it to lint the /metrics output"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}
