//! Day-2 operations: the operator's server states through the
//! admin API, the audit log, and the shipped dashboard's metric names.
//!
//! Every test runs the real binary in front of real Express backends and
//! counts at the Express side (`/__stats`) what reached each server.
//! Synchronisation is by observation (answers, counters, `eventually`).

mod audit;
mod dashboard;
mod server_state;

use reqwest::StatusCode;

use crate::support::{client, Express, Tandem};

/// `GET /__stats` of a backend: (data requests, health probes).
pub async fn stats(e: &Express) -> (u64, u64) {
    let v: serde_json::Value = client()
        .get(e.url("/__stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("stats json");
    (
        v["requests"].as_u64().expect("requests"),
        v["healthz"].as_u64().expect("healthz"),
    )
}

/// The admin URL of one server of upstream `app`.
pub fn server_url(t: &Tandem, address: &str) -> String {
    t.admin_url(&format!("/upstreams/app/servers/{address}"))
}

/// `PUT` a JSON body to a server's endpoint; (status, JSON answer).
pub async fn put_server(
    t: &Tandem,
    address: &str,
    body: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = client()
        .put(server_url(t, address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let r = req.send().await.expect("PUT");
    let status = r.status();
    let text = r.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// `GET` a server's state.
pub async fn get_server(t: &Tandem, address: &str) -> (StatusCode, serde_json::Value) {
    let r = client()
        .get(server_url(t, address))
        .send()
        .await
        .expect("GET");
    let status = r.status();
    (status, r.json().await.expect("JSON"))
}
