//! Every endpoint of the admin API, its errors and the bearer token.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::support::{client, eventually, free_port, Express, Tandem};

fn config(server: &Express, dead_port: u16, token_file: Option<&std::path::Path>) -> String {
    let token = token_file
        .map(|p| format!("  token_file: {}\n", p.display()))
        .unwrap_or_default();
    format!(
        r#"
admin:
  bind: "{{admin}}"
{token}listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: app
    routes:
      - path_prefix: /dead
        upstream: dead
upstreams:
  - name: app
    servers:
      - address: {}
        weight: 2
  - name: dead
    health_check:
      tcp: {{}}
      interval: 100ms
      fall: 1
    servers:
      - address: 127.0.0.1:{dead_port}
"#,
        server.addr()
    )
}

async fn call(t: &Tandem, method: Method, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = client().request(method, t.admin_url(path));
    if let Some(tok) = token {
        req = req.bearer_auth(tok);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn every_endpoint_answers_as_specified() {
    let a = Express::start("admin-a");
    let t = Tandem::start(&config(&a, free_port(), None)).await;

    let (s, body) = call(&t, Method::GET, "/healthz", None).await;
    assert_eq!((s, body.trim()), (StatusCode::OK, "ok"));

    // The dead upstream's only server fails its first probe: not ready.
    eventually(Duration::from_secs(5), "/readyz 503", || async {
        call(&t, Method::GET, "/readyz", None).await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = call(&t, Method::GET, "/readyz", None).await;
    let v = json(&body);
    assert!(
        v["reasons"]
            .to_string()
            .contains("upstream dead has no healthy server"),
        "{v}"
    );

    let (s, body) = call(&t, Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("# TYPE tandem_config_generation gauge"),
        "{body}"
    );

    let (s, body) = call(&t, Method::GET, "/status", None).await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let cfg = &v["config"];
    assert_eq!(cfg["path"], t.config_path.display().to_string());
    assert_eq!(cfg["generation"], 1);
    assert!(
        cfg["loaded_at_unix_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{v}"
    );
    assert!(cfg["loaded_at"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(cfg["last_reload"].is_null(), "no reload yet: {v}");
    assert!(v["ha"].is_null(), "no ha section: {v}");
    let app = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "app")
        .unwrap();
    let server = &app["servers"][0];
    assert_eq!(server["address"], a.addr());
    assert_eq!(server["health"], "healthy");
    assert_eq!(server["breaker"], "closed");
    assert_eq!(server["weight"], 2);
    assert_eq!(server["active_requests"], 0);

    let (s, body) = call(&t, Method::POST, "/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["generation"], 2);
    let v = t.status().await;
    assert_eq!(v["config"]["last_reload"]["result"], "success", "{v}");
    assert!(v["config"]["last_reload"]["time"].as_str().is_some(), "{v}");
    assert_eq!(v["config"]["last_reload"]["errors"], serde_json::json!([]));

    for m in [Method::POST, Method::DELETE] {
        let (s, body) = call(&t, m.clone(), "/ha/maintenance", None).await;
        assert_eq!(s, StatusCode::CONFLICT, "{m} {body}");
        assert!(
            json(&body)["error"].as_str().unwrap().contains("ha"),
            "{body}"
        );
    }

    let (s, body) = call(&t, Method::GET, "/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].is_string());
    for (m, path) in [
        (Method::PUT, "/status"),
        (Method::GET, "/reload"),
        (Method::POST, "/healthz"),
        (Method::GET, "/ha/maintenance"),
    ] {
        let (s, body) = call(&t, m.clone(), path, None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}: {body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn with_a_token_file_post_and_delete_need_the_bearer_token() {
    let a = Express::start("token-a");
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-admin-token\n").unwrap();
    let t = Tandem::start(&config(&a, free_port(), Some(&token_file))).await;

    for (m, path) in [
        (Method::POST, "/reload"),
        (Method::POST, "/ha/maintenance"),
        (Method::DELETE, "/ha/maintenance"),
    ] {
        for token in [None, Some("wrong"), Some("s3cret-admin-token-and-more")] {
            let (s, body) = call(&t, m.clone(), path, token).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {path} {token:?}: {body}");
            assert!(json(&body)["error"].is_string(), "{body}");
        }
    }
    assert_eq!(t.status().await["config"]["generation"], 1);

    let good = Some("s3cret-admin-token");
    let (s, body) = call(&t, Method::POST, "/reload", good).await;
    assert_eq!(
        (s, json(&body)["generation"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let (s, _) = call(&t, Method::POST, "/ha/maintenance", good).await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "authorised, but there is no ha section"
    );

    // GET endpoints need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        let (s, _) = call(&t, Method::GET, path, None).await;
        assert_ne!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// `/status` shows each enum as the configuration spells it (`round_robin`, not
/// `RoundRobin`), so what an operator reads can be pasted back into the file.
#[tokio::test]
async fn status_uses_the_configuration_spelling() {
    let a = Express::start("admin-spelling");
    let yaml = format!(
        r#"
admin:
  bind: "{{admin}}"
listeners:
  - name: web
    bind: 127.0.0.1:0
    upstream: rr
  - name: raw
    bind: 127.0.0.1:0
    mode: tcp
    upstream: hashed
upstreams:
  - name: rr
    servers:
      - address: {addr}
  - name: least
    balance: least_connections
    servers:
      - address: {addr}
  - name: hashed
    balance: consistent_hash
    hash_key: "header:X-User"
    servers:
      - address: {addr}
"#,
        addr = a.addr()
    );
    let t = Tandem::start(&yaml).await;
    let v = t.status().await;
    let field = |list: &str, name: &str, key: &str| {
        v[list]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["name"] == name))
            .map(|x| x[key].clone())
            .unwrap_or_else(|| panic!("no {list} {name} in {v}"))
    };
    assert_eq!(field("listeners", "web", "mode"), "http", "{v}");
    assert_eq!(field("listeners", "raw", "mode"), "tcp", "{v}");
    assert_eq!(field("upstreams", "rr", "balance"), "round_robin", "{v}");
    assert_eq!(
        field("upstreams", "rr", "hash_key"),
        serde_json::Value::Null
    );
    assert_eq!(field("upstreams", "least", "balance"), "least_connections");
    assert_eq!(field("upstreams", "hashed", "balance"), "consistent_hash");
    assert_eq!(field("upstreams", "hashed", "hash_key"), "header:x-user");
}

#[tokio::test]
async fn head_on_a_get_endpoint_answers_like_get_without_a_body() {
    let a = Express::start("admin-head");
    let t = Tandem::start(&config(&a, free_port(), None)).await;
    for path in ["/metrics", "/healthz", "/readyz", "/status"] {
        let get = client().get(t.admin_url(path)).send().await.unwrap();
        let head = client().head(t.admin_url(path)).send().await.unwrap();
        assert_eq!(head.status(), get.status(), "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        let body = head.bytes().await.unwrap();
        assert!(body.is_empty(), "HEAD {path} sent a body: {body:?}");
    }
    let head = client().head(t.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    // Still refused where GET is.
    let (s, _) = call(&t, Method::HEAD, "/reload", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
}
