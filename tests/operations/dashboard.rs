//! The shipped Grafana dashboard and alert rules use only metric names that
//! tandem exposes: every `tandem_*` name in their queries is checked
//! against a real `/metrics` scrape, which lists every family (HELP and TYPE)
//! even before its first sample.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::{client, eventually, repo_root, web_config, Express, Tandem};

/// Names the queries may use before this build exports them, each with why.
/// Remove an entry once its family is exported (the test prints a reminder).
const NOT_YET_EXPORTED: &[(&str, &str)] = &[];

/// Every `tandem_…` identifier in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("tandem_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Only a whole identifier (not a suffix of a longer word).
        let starts_word = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if starts_word {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Every query string of the dashboard (`expr` fields, at any depth).
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, out)),
        _ => {}
    }
}

/// Exposed sample names: each family, and a histogram's series.
fn exposed(scrape: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                out.insert(name.to_owned());
                if kind == "histogram" {
                    for sfx in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{sfx}"));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn dashboard_and_alert_rules_use_only_exposed_metric_names() {
    let a = Express::start("dash-a");
    let keys = "    health_check:\n      http:\n        path: /healthz\n      interval: 100ms\n";
    let t = Tandem::start(&web_config("", keys, &[a.addr()])).await;
    let url = t.url("web", "/").await;
    for _ in 0..5 {
        client().get(&url).send().await.unwrap();
    }
    eventually(Duration::from_secs(5), "a probe", || async {
        t.metric("tandem_health_checks_total", &[]).await >= 1.0
    })
    .await;
    let have = exposed(&t.metrics().await);
    for family in [
        "tandem_upstream_server_requests_total",
        "tandem_upstream_server_response_seconds_bucket",
        "tandem_upstream_server_in_flight",
        "tandem_upstream_server_weight",
        "tandem_upstream_server_admin_state",
        "tandem_upstream_server_tier",
    ] {
        assert!(have.contains(family), "{family} is not exported");
    }

    let dash_text =
        std::fs::read_to_string(repo_root().join("docs/grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dash_text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "dashboard queries found: {}",
        exprs.len()
    );
    let mut used: Vec<(String, &str)> = exprs
        .iter()
        .flat_map(|e| names_in(e))
        .map(|n| (n, "docs/grafana-dashboard.json"))
        .collect();
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&rules).expect("alerts.yml is YAML");
    let mut rule_count = 0;
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            rule_count += 1;
            used.extend(
                names_in(expr)
                    .into_iter()
                    .map(|n| (n, "deploy/prometheus/alerts.yml")),
            );
        }
    }
    assert!(rule_count >= 9, "alert rules found: {rule_count}");
    assert!(
        used.iter().any(|(_, f)| f.ends_with("alerts.yml")),
        "no names in the rules"
    );

    let allowed: BTreeSet<&str> = NOT_YET_EXPORTED.iter().map(|(n, _)| *n).collect();
    let unknown: BTreeSet<String> = used
        .iter()
        .filter(|(n, _)| !have.contains(n) && !allowed.contains(n.as_str()))
        .map(|(n, f)| format!("{f}: {n}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "names tandem does not expose: {unknown:#?}"
    );
    for (n, why) in NOT_YET_EXPORTED {
        if have.contains(*n) {
            println!("note: {n} is exported now; drop it from NOT_YET_EXPORTED ({why})");
        }
    }
}

#[test]
fn names_are_found_as_whole_identifiers() {
    let n =
        names_in(r#"sum(rate(tandem_requests_total{code=~"5.."}[5m])) / x_tandem_no + tandem_up"#);
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        vec!["tandem_requests_total".to_owned(), "tandem_up".to_owned()]
    );
}
