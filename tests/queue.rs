//! `max_requests_per_server` and the queue against a slow Express server: the cap is
//! checked from the server's side (`max_in_flight` in `/__stats`).

use std::time::{Duration, Instant};

use crate::support::{client, eventually, web_config, Express, Tandem};

fn config(server: &Express, queue: &str) -> String {
    web_config(
        "",
        &format!("    max_requests_per_server: 1\n    queue:\n{queue}    timeouts:\n      response: 10s\n"),
        &[server.addr()],
    )
}

#[tokio::test]
async fn a_capped_server_never_sees_two_requests_and_every_client_is_served() {
    let s = Express::start("cap-one");
    let t = Tandem::start(&config(&s, "      size: 100\n      timeout: 10s\n")).await;
    let url = t.url("web", "/delay/150").await;
    let clients = 8;
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { client().get(&url).send().await.map(|r| r.status()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    let elapsed = started.elapsed();
    let stats = s.stats().await;
    println!("cap 1: {clients} clients served in {elapsed:?}; server stats {stats}");
    assert_eq!(stats["max_in_flight"], 1, "{stats}");
    assert_eq!(stats["requests"], clients, "{stats}");
    // One at a time: at least clients x 150 ms.
    assert!(
        elapsed >= Duration::from_millis(150 * clients),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once() {
    let s = Express::start("cap-full");
    let t = Tandem::start(&config(&s, "      size: 1\n      timeout: 10s\n")).await;
    let held = t.url("web", "/delay/3000").await;
    let url = t.url("web", "/").await;
    let first = tokio::spawn(async move { client().get(&held).send().await.map(|r| r.status()) });
    eventually(
        Duration::from_secs(5),
        "first request at the server",
        || async { s.stats().await["in_flight"] == 1 },
    )
    .await;
    let waiting = tokio::spawn({
        let url = url.clone();
        async move { client().get(&url).send().await.map(|r| r.status()) }
    });
    eventually(Duration::from_secs(5), "one request queued", || async {
        t.metric("tandem_upstream_queue_length", &[("upstream", "app")])
            .await
            == 1.0
    })
    .await;
    let started = Instant::now();
    let r = client().get(&url).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        took < Duration::from_millis(500),
        "a full queue answers at once: {took:?}"
    );
    let full = t
        .metric(
            "tandem_upstream_queue_rejected_total",
            &[("upstream", "app"), ("reason", "full")],
        )
        .await;
    assert_eq!(full, 1.0);
    assert_eq!(first.await.unwrap().unwrap(), 200);
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        200,
        "the queued one is served"
    );
}

#[tokio::test]
async fn a_queue_timeout_answers_503_after_about_the_timeout() {
    let s = Express::start("cap-timeout");
    let t = Tandem::start(&config(&s, "      size: 10\n      timeout: 1s\n")).await;
    let held = t.url("web", "/delay/4000").await;
    let first = tokio::spawn(async move { client().get(&held).send().await.map(|r| r.status()) });
    eventually(
        Duration::from_secs(5),
        "first request at the server",
        || async { s.stats().await["in_flight"] == 1 },
    )
    .await;
    let started = Instant::now();
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    let took = started.elapsed();
    println!("queue timeout 1s: 503 after {took:?}");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let timeouts = t
        .metric(
            "tandem_upstream_queue_rejected_total",
            &[("upstream", "app"), ("reason", "timeout")],
        )
        .await;
    assert_eq!(timeouts, 1.0);
    assert_eq!(first.await.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn a_waiter_whose_client_left_never_reaches_the_server() {
    let s = Express::start("cap-gone");
    let t = Tandem::start(&config(&s, "      size: 10\n      timeout: 10s\n")).await;
    let held = t.url("web", "/delay/2000").await;
    let first = tokio::spawn(async move { client().get(&held).send().await.map(|r| r.status()) });
    eventually(
        Duration::from_secs(5),
        "first request at the server",
        || async { s.stats().await["in_flight"] == 1 },
    )
    .await;
    // A client that gives up after 300 ms while queued.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient.get(t.url("web", "/echo/gone").await).send().await;
    assert!(gone.is_err(), "{gone:?}");
    // It leaves the queue when its client goes, not at the queue timeout.
    eventually(Duration::from_secs(1), "queue empty", || async {
        t.metric("tandem_upstream_queue_length", &[("upstream", "app")])
            .await
            == 0.0
    })
    .await;
    assert_eq!(first.await.unwrap().unwrap(), 200);
    // The freed slot found nobody: a later request is served at once.
    let r = client().get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.stats().await["requests"],
        2,
        "the gone waiter never reached the server"
    );
}

#[tokio::test]
async fn a_tcp_relay_waits_for_a_capped_server() {
    let s = Express::start("cap-tcp");
    let yaml = format!(
        "admin:\n  bind: \"{{admin}}\"\nlisteners:\n  - name: raw\n    bind: 127.0.0.1:0\n    mode: tcp\n    upstream: app\nupstreams:\n  - name: app\n    max_requests_per_server: 1\n    servers:\n      - address: {}\n",
        s.addr()
    );
    let t = Tandem::start(&yaml).await;
    let url = t.url("raw", "/delay/300").await;
    // Separate clients: one relayed connection each, closed when the client goes.
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                let status = c.get(&url).send().await.map(|r| r.status());
                drop(c);
                status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    let stats = s.stats().await;
    assert_eq!(stats["max_in_flight"], 1, "{stats}");
}
