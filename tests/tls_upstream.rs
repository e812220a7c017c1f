//! TLS to servers (`upstreams[].tls`) against Node `https` servers whose
//! certificates come from a CA made by rcgen in the test.

use std::path::Path;
use std::time::Duration;

use crate::support::{client, eventually, web_config, Express, Tandem};

/// A CA that writes `<stem>.pem`/`.key` leaves and its own `ca.pem` into `dir`.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(dir: &Path, stem: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("tandem {stem}"));
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        Self {
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), written as `<stem>.pem`/`.key`.
    fn leaf(&self, dir: &Path, stem: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
}

fn https(name: &str, dir: &Path, stem: &str, client_ca: Option<&str>) -> Express {
    let cert = dir.join(format!("{stem}.pem"));
    let key = dir.join(format!("{stem}.key"));
    let ca = client_ca.map(|c| dir.join(c));
    let mut env: Vec<(&str, &Path)> = vec![("TLS_CERT", &cert), ("TLS_KEY", &key)];
    if let Some(ca) = &ca {
        env.push(("TLS_CLIENT_CA", ca));
    }
    Express::start_env(name, 0, &env)
}

fn config(server: &Express, tls: &str, extra: &str) -> String {
    web_config(
        "",
        &format!("    retries: 0\n    tls:\n{tls}{extra}"),
        &[server.addr()],
    )
}

#[tokio::test]
async fn tls_to_servers_verifies_the_ca_and_the_name_and_counts_failures_as_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let _other = Ca::new(d, "other-ca");
    ca.leaf(d, "server", &["127.0.0.1", "app.internal"]);
    let s = https("tls-up", d, "server", None);
    let ca_file = d.join("ca.pem");
    let other_file = d.join("other-ca.pem");
    let c = client();

    // Right CA: the IP in the address is checked as an IP SAN.
    let t = Tandem::start(&config(
        &s,
        &format!("      ca: {}\n", ca_file.display()),
        "",
    ))
    .await;
    let r = c.get(t.url("web", "/echo").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["instance"], "tls-up");
    // Pooled: a second request reuses the TLS connection.
    let r = c.get(t.url("web", "/echo").await).send().await.unwrap();
    let again: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        again["remotePort"], body["remotePort"],
        "pooled TLS connection reused"
    );
    drop(t);

    // server_name: SNI and the checked name.
    let tls = format!(
        "      ca: {}\n      server_name: app.internal\n",
        ca_file.display()
    );
    let t = Tandem::start(&config(&s, &tls, "")).await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
    drop(t);

    // Wrong CA: 502 and kind="tls".
    let t = Tandem::start(&config(
        &s,
        &format!("      ca: {}\n", other_file.display()),
        "",
    ))
    .await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let tls_errors = t
        .metric(
            "tandem_upstream_errors_total",
            &[("server", &s.addr()), ("kind", "tls")],
        )
        .await;
    assert_eq!(tls_errors, 1.0);
    drop(t);

    // Wrong name: 502.
    let tls = format!(
        "      ca: {}\n      server_name: other.internal\n",
        ca_file.display()
    );
    let t = Tandem::start(&config(&s, &tls, "")).await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 502);
    drop(t);

    // verify: false accepts any certificate.
    let t = Tandem::start(&config(&s, "      verify: false\n", "")).await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_gets_ours_and_probes_go_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let clients = Ca::new(d, "client-ca");
    ca.leaf(d, "server", &["127.0.0.1"]);
    clients.leaf(d, "client", &["tandem.test"]);
    let s = https("tls-mtls", d, "server", Some("client-ca.pem"));
    let health = "    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n      timeout: 500ms\n      rise: 1\n      fall: 1\n";
    let ca_line = format!("      ca: {}\n", d.join("ca.pem").display());
    let c = client();

    // Without a client certificate the handshake fails: 502, and the probes
    // (over TLS as well) mark the server unhealthy.
    let t = Tandem::start(&config(&s, &ca_line, health)).await;
    eventually(
        Duration::from_secs(5),
        "unhealthy without a client cert",
        || async { t.server_field("app", &s.addr(), "health").await == "unhealthy" },
    )
    .await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 503, "the only server is unhealthy");

    // Reload with a client certificate: the TLS probes pass and mark it healthy.
    let tls = format!(
        "{ca_line}      cert: {}\n      key: {}\n",
        d.join("client.pem").display(),
        d.join("client.key").display()
    );
    t.write_config(&config(&s, &tls, health));
    t.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "healthy through TLS probes",
        || async { t.server_field("app", &s.addr(), "health").await == "healthy" },
    )
    .await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_tcp_listener_relays_to_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    ca.leaf(d, "server", &["127.0.0.1"]);
    let s = https("tls-tcp", d, "server", None);
    let yaml = format!(
        "admin:\n  bind: \"{{admin}}\"\nlisteners:\n  - name: raw\n    bind: 127.0.0.1:0\n    mode: tcp\n    upstream: app\nupstreams:\n  - name: app\n    tls:\n      ca: {}\n    servers:\n      - address: {}\n",
        d.join("ca.pem").display(),
        s.addr()
    );
    let t = Tandem::start(&yaml).await;
    // Plain HTTP in, TLS out: tandem originates the TLS.
    let r = client()
        .get(t.url("raw", "/echo").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["instance"], "tls-tcp");
}

#[tokio::test]
async fn new_connections_to_a_tls_server_resume_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    ca.leaf(d, "server", &["127.0.0.1"]);
    let s = https("tls-resume", d, "server", None);
    // No pooling: every request opens a connection and handshakes.
    let tls = format!("      ca: {}\n", d.join("ca.pem").display());
    let t = Tandem::start(&config(
        &s,
        &tls,
        "    pool:\n      max_idle_per_server: 0\n",
    ))
    .await;
    let url = t.url("web", "/echo").await;
    let c = client();
    let mut reused = Vec::new();
    for _ in 0..4 {
        let v: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        reused.push(v["tlsSessionReused"].as_bool().unwrap());
    }
    assert!(!reused[0], "the first handshake is a full one: {reused:?}");
    assert!(
        reused[1..].iter().any(|r| *r),
        "later connections resume: {reused:?}"
    );
}

#[tokio::test]
async fn a_reload_that_changes_tls_does_not_reuse_connections_made_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "ca");
    let _other = Ca::new(d, "other-ca");
    ca.leaf(d, "server", &["127.0.0.1"]);
    let s = https("tls-reload", d, "server", None);
    let good = format!("      ca: {}\n", d.join("ca.pem").display());
    // One worker, so the next request meets the pooled connection.
    let t = Tandem::start(&format!("workers: 1\n{}", config(&s, &good, ""))).await;
    let c = client();
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 200); // leaves a pooled TLS connection behind
    let untrusted = format!("      ca: {}\n", d.join("other-ca.pem").display());
    t.write_config(&format!("workers: 1\n{}", config(&s, &untrusted, "")));
    t.signal("HUP");
    eventually(Duration::from_secs(5), "reloaded", || async {
        t.status().await["config"]["generation"] == 2
    })
    .await;
    let r = c.get(t.url("web", "/").await).send().await.unwrap();
    assert_eq!(r.status(), 502, "the server is no longer trusted");
}
