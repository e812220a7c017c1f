//! The audit log: reloads by SIGHUP and by `POST /reload` with the
//! file's SHA-256 and what changed, admin writes with the client's address and
//! whether the token was used. Read from tandem's JSON log (`audit=true`).

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client, eventually, web_config, Express, Tandem};

/// Every audit record logged so far, in order.
fn records(t: &Tandem) -> Vec<serde_json::Value> {
    t.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["audit"] == true)
        .collect()
}

async fn wait_records(t: &Tandem, n: usize) -> Vec<serde_json::Value> {
    eventually(Duration::from_secs(10), "audit records", || async {
        records(t).len() >= n
    })
    .await;
    records(t)
}

fn sha256_of(path: &std::path::Path) -> String {
    let text = std::fs::read(path).unwrap();
    Sha256::digest(&text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn reloads_record_source_sha256_and_changes() {
    let (a, b, c) = (
        Express::start("audit-a"),
        Express::start("audit-b"),
        Express::start("audit-c"),
    );
    let t = Tandem::start_with(
        &web_config("", "", &[a.addr(), b.addr()]),
        &["--log-format", "json"],
    )
    .await;

    // SIGHUP: b leaves, c joins, a's weight changes, the upstream gets a setting.
    let second = web_config("", "    retries: 1\n", &[a.addr(), c.addr()]).replace(
        &format!("address: {}\n", a.addr()),
        &format!("address: {}\n        weight: 3\n", a.addr()),
    );
    t.write_config(&second);
    let sha = sha256_of(&t.config_path);
    t.signal("HUP");
    let recs = wait_records(&t, 1).await;
    let r = &recs[0];
    assert_eq!(r["target"], "tandem::audit", "{r}");
    assert_eq!(r["action"], "reload");
    assert_eq!(r["source"], "SIGHUP");
    assert_eq!(r["result"], "success");
    assert_eq!(r["generation"], 2);
    assert_eq!(r["sha256"], sha.as_str());
    assert_eq!(r["servers_added"], format!("app/{}", c.addr()));
    assert_eq!(r["servers_removed"], format!("app/{}", b.addr()));
    assert_eq!(r["servers_changed"], format!("app/{}", a.addr()));
    assert_eq!(r["upstreams_changed"], "app");
    assert_eq!(r["listeners_changed"], "");

    // POST /reload with an invalid file: recorded as a failure, with its hash.
    t.write_config("listeners: [oops\n");
    let bad_sha = sha256_of(&t.config_path);
    let resp = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let recs = wait_records(&t, 2).await;
    let r = &recs[1];
    assert_eq!(r["source"], "admin", "{r}");
    assert!(
        r["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r}"
    );
    assert_eq!(r["token"], false);
    assert_eq!(r["result"], "failure");
    assert_eq!(r["sha256"], bad_sha.as_str());
    assert!(!r["errors"].as_str().unwrap().is_empty(), "{r}");

    // And a good one: a new listener.
    let third = second.replace(
        "upstreams:\n",
        "  - name: extra\n    bind: 127.0.0.1:0\n    upstream: app\nupstreams:\n",
    );
    t.write_config(&third);
    let sha3 = sha256_of(&t.config_path);
    let resp = client().post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let recs = wait_records(&t, 3).await;
    let r = &recs[2];
    assert_eq!(
        (r["source"].as_str(), r["result"].as_str()),
        (Some("admin"), Some("success")),
        "{r}"
    );
    assert_eq!(r["sha256"], sha3.as_str());
    assert_eq!(r["listeners_added"], "extra");
    assert_eq!(r["servers_added"], "");
}

/// A raw `PUT` whose local address the test knows; returns (local address,
/// status line).
async fn raw_put(t: &Tandem, path: &str, body: &str, token: Option<&str>) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(t.admin).await.unwrap();
    let local = s.local_addr().unwrap().to_string();
    let auth = token
        .map(|tok| format!("Authorization: Bearer {tok}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "PUT {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    (local, answer.lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn admin_writes_record_the_remote_address_and_the_token() {
    let a = Express::start("audit-put");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "tok-123\n").unwrap();
    let yaml = web_config("", "", &[a.addr()]).replace(
        "admin:\n  bind: \"{admin}\"\n",
        &format!(
            "admin:\n  bind: \"{{admin}}\"\n  token_file: {}\n",
            token_file.display()
        ),
    );
    let t = Tandem::start_with(&yaml, &["--log-format", "json"]).await;
    let path = format!("/upstreams/app/servers/{}", a.addr());

    let (local, status) = raw_put(&t, &path, r#"{"state":"drain"}"#, Some("tok-123")).await;
    assert!(status.contains("200"), "{status}");
    let recs = wait_records(&t, 1).await;
    let r = &recs[0];
    assert_eq!(r["remote"], local.as_str(), "{r}");
    assert_eq!(r["token"], true);
    assert_eq!(r["source"], "admin");
    assert!(
        r["action"]
            .as_str()
            .unwrap()
            .starts_with(&format!("PUT {path}")),
        "{r}"
    );
    assert_eq!(r["result"], "200 state=drain weight=null");

    let (local, status) = raw_put(&t, &path, r#"{"state":"ready"}"#, None).await;
    assert!(status.contains("401"), "{status}");
    let recs = wait_records(&t, 2).await;
    let r = &recs[1];
    assert_eq!(r["remote"], local.as_str(), "{r}");
    assert_eq!(r["token"], false);
    assert_eq!(r["result"], "401 unauthorized");

    let (_, status) = raw_put(&t, &path, r#"{"state":"sideways"}"#, Some("tok-123")).await;
    assert!(status.contains("400"), "{status}");
    let recs = wait_records(&t, 3).await;
    assert!(
        recs[2]["result"].as_str().unwrap().starts_with("400 "),
        "{}",
        recs[2]
    );
}
