//! Reloads that must change nothing: an invalid file under load, and
//! settings that only a restart can change. The running configuration keeps
//! serving and the failure is reported (answer, `/status`, counter).

use std::time::Duration;

use super::reload::{config, Shape};
use super::{assert_no_failures, Client, Traffic};
use crate::support::{client, eventually, free_port, web_config, Express, Tandem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_under_load_changes_nothing() {
    let (a, api) = (Express::start("inv-a"), Express::start("inv-api"));
    let tcp_port = free_port();
    let good = config(
        tcp_port,
        &api,
        &Shape {
            app: vec![(a.addr(), 1)],
            api_route: true,
            extra_listener: None,
        },
    );
    let t = Tandem::start(&good).await;
    let web = t.url("web", "/").await;
    let mut traffic = Traffic::new();
    traffic.start("http keep-alive", Client::KeepAlive, &web, 2);
    traffic.start("http new connection", Client::NewConnection, &web, 1);
    traffic.start(
        "tcp raw socket",
        Client::RawSocket,
        &format!("http://127.0.0.1:{tcp_port}/"),
        1,
    );
    traffic.warm_up(20).await;

    // Two independent mistakes: both must be reported, each with its location.
    let bad = good
        .replace("upstream: api", "upstream: nowhere")
        .replace("interval: 200ms", "interval: 200ms\n      colour: blue");
    t.write_config(&bad);
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors in {body}"))
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert!(errors.len() >= 2, "every error is reported: {errors:?}");
    for e in &errors {
        assert!(e.contains("proxy.yaml:"), "error without its location: {e}");
    }
    assert!(errors.iter().any(|e| e.contains("nowhere")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("colour")), "{errors:?}");

    // More failed reloads, by SIGHUP and POST, while the clients keep going.
    let first_at = t.status().await["config"]["last_reload"]["time_unix_ms"].clone();
    let failures = 20u32;
    for i in 2..=failures {
        if i % 2 == 0 {
            t.signal("HUP");
            eventually(
                Duration::from_secs(10),
                "failed reload recorded",
                || async {
                    t.metric("tandem_config_reloads_total", &[("result", "failure")])
                        .await
                        == f64::from(i)
                },
            )
            .await;
        } else {
            let r = client().post(t.admin_url("/reload")).send().await.unwrap();
            assert_eq!(r.status(), 400);
        }
    }
    traffic.warm_up(traffic.served() + 100).await;
    let s = t.status().await;
    assert_eq!(s["config"]["generation"], 1, "{s}");
    let last = &s["config"]["last_reload"];
    assert_eq!(last["result"], "failure", "{s}");
    assert!(last["time_unix_ms"].as_u64() >= first_at.as_u64(), "{s}");
    assert_eq!(last["errors"].as_array().map(Vec::len), Some(errors.len()));
    assert_eq!(t.metric("tandem_config_generation", &[]).await, 1.0);
    assert_eq!(
        t.metric("tandem_config_reloads_total", &[("result", "failure")])
            .await,
        f64::from(failures)
    );
    assert_eq!(
        t.metric("tandem_config_reloads_total", &[("result", "success")])
            .await,
        0.0
    );
    // The old routes still apply.
    let r = client()
        .get(t.url("web", "/api/x").await)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["instance"], "inv-api");

    let tallies = traffic.finish().await;
    println!("invalid reload: {failures} failed reloads, generation still 1");
    assert_no_failures("invalid reload", &tallies, 10);
}

#[tokio::test]
async fn restart_only_settings_are_refused_and_the_old_config_kept() {
    let a = Express::start("ro-a");
    let yaml = format!("workers: 2\n{}", web_config("", "", &[a.addr()]));
    let t = Tandem::start(&yaml).await;
    let other_admin = format!("127.0.0.1:{}", free_port());

    t.write_config(&yaml.replace("{admin}", &other_admin));
    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("admin.bind") && body.contains("needs a restart"),
        "{body}"
    );

    t.write_config(&yaml.replace("workers: 2", "workers: 1"));
    t.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "failed reload recorded",
        || async {
            t.status().await["config"]["last_reload"]["errors"]
                .to_string()
                .contains("workers")
        },
    )
    .await;
    let s = t.status().await;
    let errors = s["config"]["last_reload"]["errors"].to_string();
    assert!(errors.contains("needs a restart"), "{errors}");
    assert_eq!(s["config"]["generation"], 1);
    assert_eq!(s["config"]["last_reload"]["result"], "failure");
    // Still serving on the old admin address and the old listener.
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A refused reload is one typed error until printed: the `POST /reload`
/// answer, `/status`, the audit record and the log all show the same located
/// messages, one per problem.
#[tokio::test]
async fn a_refused_reload_prints_the_same_located_messages_everywhere() {
    let a = Express::start("same-a");
    let yaml = format!("workers: 2\n{}", web_config("", "", &[a.addr()]));
    let t = Tandem::start_with(&yaml, &["--log-format", "json"]).await;
    let other_admin = format!("127.0.0.1:{}", free_port());
    t.write_config(
        &yaml
            .replace("{admin}", &other_admin)
            .replace("workers: 2", "workers: 1"),
    );
    let file = t.config_path.display();
    let expected = vec![
        format!(
            "{file}: admin.bind: changing the admin address ({} -> {other_admin}) needs a restart",
            t.admin
        ),
        format!("{file}: workers: changing the worker count (2 -> 1) needs a restart"),
    ];

    let r = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"], serde_json::json!(expected), "{body}");
    let s = t.status().await;
    assert_eq!(s["config"]["last_reload"]["errors"], body["errors"], "{s}");

    let logged = |msg: &str| {
        let quoted = serde_json::Value::from(msg).to_string();
        t.log().lines().any(|l| l.contains(&quoted))
    };
    let joined = expected.join("; ");
    eventually(
        Duration::from_secs(10),
        "the failure in the audit record and the log",
        || async { expected.iter().all(|m| logged(m)) && logged(&joined) },
    )
    .await;
}
