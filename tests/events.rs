//! Server event hooks (`upstreams[].notify`): a script that records its environment
//! runs on down, up and breaker open; a hook that sleeps does not slow traffic.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{client, eventually, web_config, Express, Tandem};

/// A hook that appends "EVENT UPSTREAM SERVER" to `record`, then sleeps 3 s on `down`.
fn script(dir: &Path, record: &Path) -> std::path::PathBuf {
    let path = dir.join("event.sh");
    let body = format!(
        "#!/bin/sh\necho \"$TANDEM_EVENT $TANDEM_UPSTREAM $TANDEM_SERVER\" >> {}\n[ \"$TANDEM_EVENT\" = down ] && sleep 3\nexit 0\n",
        record.display()
    );
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn lines(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn hooks_run_on_down_up_and_breaker_open_without_slowing_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("events.log");
    let hook = script(dir.path(), &record);
    let (a, b) = (Express::start("ev-a"), Express::start("ev-b"));
    let keys = format!(
        "    retries: 2\n    notify:\n      down: {h}\n      up: {h}\n      breaker_open: {h}\n    circuit_breaker:\n      failure_threshold: 2\n      reset_timeout: 60s\n    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n      timeout: 100ms\n      rise: 1\n      fall: 1\n",
        h = hook.display()
    );
    let t = Tandem::start(&web_config("", &keys, &[a.addr(), b.addr()])).await;
    let url = t.url("web", "/").await;

    b.control(serde_json::json!({"health": "fail"})).await;
    let down = format!("down app {}", b.addr());
    eventually(Duration::from_secs(5), "down hook ran", || async {
        lines(&record).contains(&down)
    })
    .await;
    // The down hook now sleeps 3 s: requests meanwhile are as fast as ever.
    let c = client();
    for _ in 0..20 {
        let started = Instant::now();
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "slowed by a hook: {took:?}"
        );
    }

    b.control(serde_json::json!({"health": "ok"})).await;
    let up = format!("up app {}", b.addr());
    eventually(Duration::from_secs(5), "up hook ran", || async {
        lines(&record).contains(&up)
    })
    .await;

    // 503s from a trip the breaker (failure_threshold 2); GETs are retried on b.
    a.control(serde_json::json!({"status": 503})).await;
    let open = format!("breaker_open app {}", a.addr());
    eventually(Duration::from_secs(5), "breaker_open hook ran", || async {
        let _ = c.get(&url).send().await;
        lines(&record).contains(&open)
    })
    .await;
    let got = lines(&record);
    assert_eq!(got.iter().filter(|l| **l == open).count(), 1, "{got:?}");
}

#[test]
fn check_refuses_a_hook_that_is_not_executable() {
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("event.sh");
    std::fs::write(&hook, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
    let yaml = format!(
        "listeners:\n  - name: web\n    bind: 127.0.0.1:18080\n    upstream: app\nupstreams:\n  - name: app\n    notify:\n      up: {}\n    servers:\n      - address: 127.0.0.1:3001\n",
        hook.display()
    );
    std::fs::write(dir.path().join("proxy.yaml"), yaml).unwrap();
    let (code, _out, err) = crate::support::tandem_cli(&["check", "-c", "proxy.yaml"], dir.path());
    assert_ne!(code, 0);
    assert!(
        err.contains("upstreams[0].notify.up") && err.contains("not executable"),
        "{err}"
    );
}
