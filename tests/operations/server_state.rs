//! `GET`/`PUT /upstreams/{upstream}/servers/{address}`: drain under
//! load, maintenance stops probes, the state outlives reloads and restarts
//! (`admin.state_file`), bad requests get a JSON error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{get_server, put_server, stats};
use crate::support::{client, eventually, web_config, Express, Tandem};

/// One request of the load below: when it was sent and who answered.
struct Sent {
    at: Instant,
    instance: String,
}

/// Keep-alive clients sending `GET /` until stopped (or 20 s, or 20,000
/// requests in all); each records every answer and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Vec<Sent>, Vec<String>)>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let per_client = 20_000 / clients;
        let tasks = (0..clients)
            .map(|_| {
                let (url, stop) = (url.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let c = client();
                    let started = Instant::now();
                    let (mut sent, mut failed) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed)
                        && sent.len() + failed.len() < per_client
                        && started.elapsed() < Duration::from_secs(20)
                    {
                        let at = Instant::now();
                        match c.get(&url).send().await {
                            Ok(r) if r.status().is_success() => {
                                match r.json::<serde_json::Value>().await {
                                    Ok(v) => sent.push(Sent {
                                        at,
                                        instance: v["instance"].as_str().unwrap_or("").into(),
                                    }),
                                    Err(e) => failed.push(format!("body: {e}")),
                                }
                            }
                            Ok(r) => failed.push(format!("status {}", r.status())),
                            Err(e) => failed.push(format!("{e:?}")),
                        }
                    }
                    (sent, failed)
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn finish(self) -> (Vec<Sent>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut all, mut failed) = (Vec::new(), Vec::new());
        for t in self.tasks {
            let (s, f) = t.await.expect("load task");
            all.extend(s);
            failed.extend(f);
        }
        (all, failed)
    }
}

#[tokio::test]
async fn drain_under_keep_alive_load_sends_nothing_new_and_lets_the_in_flight_request_finish() {
    let (a, b) = (Express::start("drain-a"), Express::start("drain-b"));
    let t = Tandem::start(&web_config("", "", &[a.addr(), b.addr()])).await;
    let url = t.url("web", "/").await;

    // A slow request in flight on `a`: with `b` drained for a moment it can
    // only go there.
    let (s, _) = put_server(&t, &b.addr(), r#"{"state":"drain"}"#, None).await;
    assert_eq!(s, StatusCode::OK);
    // Long enough to outlast the warm-up below on a loaded machine.
    let slow_url = t.url("web", "/delay/5000").await;
    let slow = tokio::spawn(async move { client().get(slow_url).send().await });
    eventually(
        Duration::from_secs(5),
        "slow request in flight on a",
        || async { get_server(&t, &a.addr()).await.1["in_flight"] == 1 },
    )
    .await;
    let (s, v) = put_server(&t, &b.addr(), r#"{"state":"ready"}"#, None).await;
    assert_eq!(
        (s, v["admin_state"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let load = Load::start(&url, 4);
    eventually(
        Duration::from_secs(10),
        "both servers under load",
        || async { stats(&a).await.0 >= 30 && stats(&b).await.0 >= 30 },
    )
    .await;

    let (s, v) = put_server(&t, &a.addr(), r#"{"state":"drain"}"#, None).await;
    let put_returned = Instant::now();
    assert!(
        !slow.is_finished(),
        "the slow request was in flight at the PUT"
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["admin_state"], "drain", "{v}");
    assert!(
        v["in_flight"].as_u64() >= Some(1),
        "the slow request is still running: {v}"
    );

    // Requests the clients had in flight when the PUT returned end within one
    // round; from then on the Express counter of `a` must not move.
    let b_before = stats(&b).await.0;
    eventually(
        Duration::from_secs(10),
        "every client past the PUT",
        || async { stats(&b).await.0 >= b_before + 20 },
    )
    .await;
    let a_settled = stats(&a).await.0;
    eventually(
        Duration::from_secs(10),
        "200 more requests served",
        || async { stats(&b).await.0 >= b_before + 220 },
    )
    .await;
    let a_final = stats(&a).await.0;

    let slow = slow.await.expect("slow task").expect("slow request");
    assert_eq!(
        slow.status(),
        StatusCode::OK,
        "the in-flight request completes"
    );
    let v: serde_json::Value = slow.json().await.expect("slow body");
    assert_eq!(v["instance"], "drain-a");
    // Its connection and the idle pooled ones to `a` are closed, not kept.
    eventually(
        Duration::from_secs(3),
        "no connection to the drained server",
        || async { established_to(a.port) == 0 },
    )
    .await;

    let (sent, failed) = load.finish().await;
    let after: Vec<&Sent> = sent.iter().filter(|s| s.at >= put_returned).collect();
    let to_a_after = after.iter().filter(|s| s.instance == "drain-a").count();
    let from_a = sent.iter().filter(|s| s.instance == "drain-a").count() as u64;
    println!(
        "drain: {} requests, {} failed, {} sent after the PUT returned ({} to the drained server); \
         Express a: {a_settled} -> {a_final}",
        sent.len() + failed.len(),
        failed.len(),
        after.len(),
        to_a_after
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(
        after.len() >= 200,
        "load after the PUT too small: {}",
        after.len()
    );
    assert_eq!(
        to_a_after, 0,
        "requests sent after the PUT reached the drained server"
    );
    assert_eq!(
        a_final, a_settled,
        "Express a received requests after the drain"
    );
    // Every request `a` ever received is one a client saw answered (plus the
    // slow one): nothing reached it and was retried elsewhere.
    assert_eq!(a_final, from_a + 1);
    assert_eq!(
        t.metric(
            "tandem_upstream_server_admin_state",
            &[("server", &a.addr())]
        )
        .await,
        1.0
    );
    // Per-server metrics agree with what the clients saw.
    let from_b = sent.iter().filter(|s| s.instance == "drain-b").count() as f64;
    let ok_from = |server: String| {
        let t = &t;
        async move {
            t.metric(
                "tandem_upstream_server_requests_total",
                &[("server", &server), ("class", "2xx")],
            )
            .await
        }
    };
    assert_eq!(ok_from(a.addr()).await, a_final as f64);
    assert_eq!(ok_from(b.addr()).await, from_b);
    assert_eq!(
        t.metric(
            "tandem_upstream_server_response_seconds_count",
            &[("server", &a.addr())]
        )
        .await,
        a_final as f64
    );
    assert_eq!(
        t.metric("tandem_upstream_server_in_flight", &[("server", &a.addr())])
            .await,
        0.0
    );
}

/// Established TCP connections (IPv4) whose remote end is `127.0.0.1:port`:
/// tandem's connections to a backend (the backend's own sockets have the port
/// on the local side).
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&remote.as_str()) && f.get(3) == Some(&"01")
        })
        .count()
}

#[tokio::test]
async fn maint_stops_probes_and_ready_resumes_them() {
    let (a, b) = (Express::start("maint-a"), Express::start("maint-b"));
    let keys = "    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n";
    let t = Tandem::start(&web_config("", keys, &[a.addr(), b.addr()])).await;
    eventually(Duration::from_secs(10), "both probed", || async {
        stats(&a).await.1 >= 3 && stats(&b).await.1 >= 3
    })
    .await;

    let (s, v) = put_server(&t, &a.addr(), r#"{"state":"maint"}"#, None).await;
    assert_eq!(
        (s, v["admin_state"].as_str()),
        (StatusCode::OK, Some("maint"))
    );
    let a_at_put = stats(&a).await.1;
    let b_at_put = stats(&b).await.1;
    // Ten probe rounds of `b` later, `a` has had at most the one probe that
    // was already under way when the PUT landed.
    eventually(Duration::from_secs(15), "ten more probes of b", || async {
        stats(&b).await.1 >= b_at_put + 10
    })
    .await;
    let a_during = stats(&a).await.1 - a_at_put;
    println!("maint: probes of a during 10 rounds of b: {a_during}");
    assert!(
        a_during <= 1,
        "{a_during} probes reached a server in maintenance"
    );
    // No traffic either.
    for _ in 0..10 {
        let v: serde_json::Value = client()
            .get(t.url("web", "/").await)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["instance"], "maint-b");
    }
    let status = t.status().await;
    assert!(
        status.to_string().contains(r#""admin_state":"maint""#),
        "{status}"
    );
    assert_eq!(
        t.metric(
            "tandem_upstream_server_admin_state",
            &[("server", &a.addr())]
        )
        .await,
        2.0
    );

    let (s, _) = put_server(&t, &a.addr(), r#"{"state":"ready"}"#, None).await;
    assert_eq!(s, StatusCode::OK);
    let resumed_from = stats(&a).await.1;
    eventually(Duration::from_secs(5), "probes of a resume", || async {
        stats(&a).await.1 >= resumed_from + 3
    })
    .await;
}

fn state_config(state_file: &std::path::Path, a: &Express, b: &Express, extra: &str) -> String {
    web_config("", extra, &[a.addr(), b.addr()]).replace(
        "admin:\n  bind: \"{admin}\"\n",
        &format!(
            "admin:\n  bind: \"{{admin}}\"\n  state_file: {}\n",
            state_file.display()
        ),
    )
}

async fn instances(t: &Tandem, n: usize) -> Vec<String> {
    let url = t.url("web", "/").await;
    let mut out = Vec::new();
    for _ in 0..n {
        let v: serde_json::Value = client()
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.push(v["instance"].as_str().unwrap_or("").to_owned());
    }
    out
}

#[tokio::test]
async fn state_survives_sighup_and_a_restart_with_the_state_file() {
    let (a, b) = (Express::start("keep-a"), Express::start("keep-b"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let yaml = state_config(&file, &a, &b, "");
    let mut t = Tandem::start(&yaml).await;

    let (s, _) = put_server(&t, &a.addr(), r#"{"state":"drain"}"#, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = put_server(&t, &b.addr(), r#"{"weight":7}"#, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["weight"].as_u64(), v["configured_weight"].as_u64()),
        (Some(7), Some(1))
    );
    eventually(Duration::from_secs(5), "state file written", || async {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        text.contains("\"drain\"") && text.contains("\"weight\": 7")
    })
    .await;

    // A reload that changes something else keeps both.
    t.write_config(&state_config(&file, &a, &b, "    retries: 1\n"));
    t.signal("HUP");
    eventually(Duration::from_secs(10), "generation 2", || async {
        t.status().await["config"]["generation"] == 2
    })
    .await;
    assert_eq!(get_server(&t, &a.addr()).await.1["admin_state"], "drain");
    assert_eq!(get_server(&t, &b.addr()).await.1["weight"], 7);
    assert!(instances(&t, 10).await.iter().all(|i| i == "keep-b"));
    assert_eq!(
        t.metric("tandem_upstream_server_weight", &[("server", &b.addr())])
            .await,
        7.0
    );

    // A restart reads the file before it serves.
    let yaml2 = std::fs::read_to_string(&t.config_path).unwrap();
    let admin = t.admin.to_string();
    let code = t.stop_with("TERM", Duration::from_secs(20));
    assert!(code.success());
    let t2 = Tandem::start(&yaml2.replace(&admin, "{admin}")).await;
    let (s, v) = get_server(&t2, &a.addr()).await;
    assert_eq!(
        (s, v["admin_state"].as_str()),
        (StatusCode::OK, Some("drain")),
        "{v}"
    );
    assert_eq!(get_server(&t2, &b.addr()).await.1["weight"], 7);
    assert!(instances(&t2, 10).await.iter().all(|i| i == "keep-b"));
}

#[tokio::test]
async fn a_corrupt_state_file_is_reported_and_ignored() {
    let (a, b) = (Express::start("corrupt-a"), Express::start("corrupt-b"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, "{\"version\": 1, \"servers\": [trunc").unwrap();
    let t = Tandem::start(&state_config(&file, &a, &b, "")).await;
    let log = t.log();
    assert!(
        log.contains("is not valid") && log.contains("ignored"),
        "the corrupt file is reported: {log}"
    );
    assert_eq!(get_server(&t, &a.addr()).await.1["admin_state"], "ready");
    let seen = instances(&t, 10).await;
    assert!(seen.iter().any(|i| i == "corrupt-a") && seen.iter().any(|i| i == "corrupt-b"));
    // The next change replaces it with a valid file.
    put_server(&t, &a.addr(), r#"{"state":"maint"}"#, None).await;
    eventually(Duration::from_secs(5), "state file rewritten", || async {
        std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| v["servers"][0]["state"] == "maint")
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_writes_need_the_token() {
    let a = Express::start("errors-a");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let yaml = web_config("", "", &[a.addr()]).replace(
        "admin:\n  bind: \"{admin}\"\n",
        &format!(
            "admin:\n  bind: \"{{admin}}\"\n  token_file: {}\n",
            token_file.display()
        ),
    );
    let t = Tandem::start(&yaml).await;
    let tok = Some("s3cret");

    let (s, v) = put_server(&t, &a.addr(), r#"{"state":"drain"}"#, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].is_string());
    let (s, _) = put_server(&t, &a.addr(), r#"{"state":"drain"}"#, Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get_server(&t, &a.addr()).await.1["admin_state"],
        "ready",
        "nothing changed"
    );

    // Reads need no token; the address may be percent-encoded.
    let encoded = a.addr().replace(':', "%3A");
    let (s, v) = get_server(&t, &encoded).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for key in [
        "address",
        "health",
        "breaker",
        "admin_state",
        "weight",
        "configured_weight",
        "tier",
        "in_flight",
    ] {
        assert!(!v[key].is_null(), "GET lacks {key}: {v}");
    }
    assert_eq!(
        (v["tier"].as_u64(), v["weight"].as_u64()),
        (Some(0), Some(1))
    );

    let head = client()
        .head(super::server_url(&t, &a.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD is answered as GET");
    let (s, v) = put_server(&t, "127.0.0.1:1", r#"{"state":"drain"}"#, tok).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no server"), "{v}");
    let r = client()
        .get(t.admin_url(&format!("/upstreams/nope/servers/{}", a.addr())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for (body, why) in [
        ("{", "not valid JSON"),
        (r#"{"state":"down"}"#, "state must be"),
        (r#"{"weight":-3}"#, "weight must be"),
        (r#"{"state":"drain","colour":"red"}"#, "unknown key"),
        ("{}", "needs"),
    ] {
        let (s, v) = put_server(&t, &a.addr(), body, tok).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{body} -> {v}");
    }
    assert_eq!(get_server(&t, &a.addr()).await.1["admin_state"], "ready");

    let (s, v) = put_server(&t, &encoded, r#"{"state":"drain","weight":3}"#, tok).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["admin_state"].as_str(), v["weight"].as_u64()),
        (Some("drain"), Some(3))
    );
    let (s, v) = put_server(&t, &a.addr(), r#"{"weight":null}"#, tok).await;
    assert_eq!((s, v["weight"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    assert_eq!(v["admin_state"], "drain", "a weight change keeps the state");
}

#[tokio::test]
async fn a_weight_override_of_zero_takes_a_server_out_and_null_restores_it() {
    let (a, b) = (Express::start("weight-a"), Express::start("weight-b"));
    let t = Tandem::start(&web_config("", "", &[a.addr(), b.addr()])).await;
    let (s, v) = put_server(&t, &a.addr(), r#"{"weight":0}"#, None).await;
    assert_eq!((s, v["weight"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
    assert_eq!(v["admin_state"], "ready", "{v}");
    assert!(instances(&t, 10).await.iter().all(|i| i == "weight-b"));
    let (s, v) = put_server(&t, &a.addr(), r#"{"weight":null}"#, None).await;
    assert_eq!((s, v["weight"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    let seen = instances(&t, 10).await;
    assert!(seen.iter().any(|i| i == "weight-a"), "{seen:?}");
}
