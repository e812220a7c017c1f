//! `bgp/tandem-bgp-check` against a real tandem (ready, and not ready because its only
//! server is down) and against fake admin servers that misbehave the ways a hung or
//! dying tandem does: accepts and never answers, answers only the first request, cuts
//! the body short, answers another status. The verdict and the 1 s bound are checked
//! for each.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{eventually, repo_root, web_config, Express, Tandem};

/// Runs the check against `admin`; its exit code and how long it took.
fn check(admin: &str) -> (i32, Duration) {
    let t0 = Instant::now();
    let status = Command::new(repo_root().join("bgp/tandem-bgp-check"))
        .env("TANDEM_ADMIN", admin)
        .status()
        .unwrap();
    (status.code().unwrap_or(-1), t0.elapsed())
}

/// A fake admin API on loopback: each accepted connection is handed to `answer` with
/// the request's path, on a thread of its own; the listener lives as long as the test.
fn fake_admin(answer: fn(&str, &mut std::net::TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                answer(&path, &mut s);
            });
        }
    });
    addr
}

fn ok_200(s: &mut std::net::TcpStream) {
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
}

/// Holds the connection open without a byte, like a tandem stuck in a busy loop.
fn hang(s: &mut std::net::TcpStream) {
    let mut sink = [0u8; 64];
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.read(&mut sink);
}

fn assert_fails_fast(admin: &str, what: &str) {
    let (code, took) = check(admin);
    assert_ne!(code, 0, "{what}: the check passed");
    assert!(
        took < Duration::from_secs(1),
        "{what}: the check took {took:?}"
    );
}

#[tokio::test]
async fn check_passes_on_a_ready_tandem_and_fails_once_its_upstream_is_down() {
    let backend = Express::start("b1");
    let hc = "    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n      timeout: 100ms\n      rise: 1\n      fall: 1\n";
    let t = Tandem::start(&web_config("", hc, &[backend.addr()])).await;
    let admin = t.admin.to_string();
    let (code, took) = check(&admin);
    assert_eq!(code, 0, "ready tandem: the check failed");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    backend.control(serde_json::json!({"health": "fail"})).await;
    let a = admin.clone();
    eventually(Duration::from_secs(5), "check fails on /readyz 503", || {
        let a = a.clone();
        async move { check(&a).0 != 0 }
    })
    .await;
    // /healthz is still 200 here: the failure comes from /readyz alone.
    let health = reqwest::get(t.admin_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    backend.control(serde_json::json!({"health": "ok"})).await;
    eventually(Duration::from_secs(5), "check passes again", || {
        let a = admin.clone();
        async move { check(&a).0 == 0 }
    })
    .await;
}

#[test]
fn check_fails_within_a_second_on_a_listener_that_accepts_and_never_answers() {
    let addr = fake_admin(|_, s| hang(s));
    assert_fails_fast(&addr.to_string(), "hung admin API");
}

#[test]
fn check_fails_within_a_second_when_only_readyz_hangs() {
    let addr = fake_admin(|path, s| {
        if path == "/healthz" {
            ok_200(s);
        } else {
            hang(s);
        }
    });
    assert_fails_fast(&addr.to_string(), "/readyz hangs");
}

#[test]
fn check_passes_only_on_two_complete_200s() {
    // The fake that answers both correctly passes: the failures below are the fakes'.
    let good = fake_admin(|_, s| ok_200(s));
    assert_eq!(check(&good.to_string()).0, 0, "a correct admin API failed");

    let short = fake_admin(|_, s| {
        // A 200 whose body stops early (the process died mid-answer).
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok\n");
    });
    assert_fails_fast(&short.to_string(), "short body");

    let stalled = fake_admin(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok\n");
        hang(s);
    });
    assert_fails_fast(&stalled.to_string(), "body stalls after the head");

    let not_ready = fake_admin(|path, s| {
        if path == "/readyz" {
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        } else {
            ok_200(s);
        }
    });
    assert_fails_fast(&not_ready.to_string(), "/readyz 503");

    let redirect = fake_admin(|_, s| {
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
    });
    assert_fails_fast(&redirect.to_string(), "204 is not 200");

    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = closed.local_addr().unwrap().to_string();
    drop(closed);
    assert_fails_fast(&refused, "nothing listening");
}

#[test]
fn check_refuses_a_malformed_admin_address() {
    for bad in ["127.0.0.1", "host name:9901", "127.0.0.1:9901/x", ":9901"] {
        let out = Command::new(repo_root().join("bgp/tandem-bgp-check"))
            .env("TANDEM_ADMIN", bad)
            .output()
            .unwrap();
        let code = out.status.code();
        assert_eq!(
            code,
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("TANDEM_ADMIN"));
    }
}
