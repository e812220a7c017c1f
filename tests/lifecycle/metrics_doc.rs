//! `docs/metrics.md` and a real `/metrics` scrape in step: every `tandem_*`
//! family the process exports has a row on that page with the same type, and
//! every family the page documents is exported and, after the traffic below,
//! has samples — except those in [`NO_SAMPLES_HERE`], each with its reason.
//!
//! Adding a metric: add its row to `docs/metrics.md`; if this test's setup
//! cannot produce a sample of it, either add the traffic that does or list it
//! in `NO_SAMPLES_HERE` with why.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client, eventually, repo_root, web_config, Express, Tandem};

/// Documented families this test's setup cannot give a sample, and why. Their
/// HELP and TYPE lines must still be exported.
const NO_SAMPLES_HERE: &[(&str, &str)] = &[
    (
        "tandem_ha_transitions_total",
        "needs an `ha` section (network namespaces: tests/ha.rs)",
    ),
    (
        "tandem_ha_heartbeats_total",
        "needs an `ha` section (network namespaces: tests/ha.rs)",
    ),
    (
        "tandem_ha_vip_held",
        "one series per configured VIP: needs an `ha` section with a VIP",
    ),
    (
        "tandem_ha_vip_errors_total",
        "needs an `ha` section and a failing VIP operation",
    ),
];

/// `(name, type)` of every row of the tables in `docs/metrics.md` whose first
/// cell is a backquoted `tandem_` name.
fn documented(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let name = cells.next()?.strip_prefix("`tandem_")?.strip_suffix('`')?;
            let kind = cells.next()?;
            Some((format!("tandem_{name}"), kind.to_owned()))
        })
        .collect()
}

/// `(name, type)` of every `# TYPE tandem_...` line of a scrape.
fn exported(scrape: &str) -> Vec<(String, String)> {
    scrape
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("# TYPE ")?.split_whitespace();
            let name = f.next().filter(|n| n.starts_with("tandem_"))?;
            Some((name.to_owned(), f.next()?.to_owned()))
        })
        .collect()
}

/// A sample line of the family `name` (histograms: its `_bucket`, `_sum`, `_count`).
fn has_sample(scrape: &str, name: &str) -> bool {
    scrape.lines().filter(|l| !l.starts_with('#')).any(|l| {
        ["", "_bucket", "_sum", "_count"].iter().any(|suffix| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(suffix))
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
    })
}

/// Every mismatch between the page and the scrape, one line each.
fn mismatches(page: &[(String, String)], scrape: &str, no_samples: &[(&str, &str)]) -> Vec<String> {
    let exported = exported(scrape);
    let mut out = Vec::new();
    for (name, kind) in &exported {
        match page.iter().find(|(n, _)| n == name) {
            None => out.push(format!(
                "`{name}` ({kind}) is exported by /metrics but has no row in docs/metrics.md"
            )),
            Some((_, doc_kind)) if doc_kind != kind => out.push(format!(
                "`{name}` is a {kind} in /metrics but docs/metrics.md says {doc_kind}"
            )),
            Some(_) => {}
        }
    }
    for (name, _) in page {
        let excused = no_samples.iter().any(|(n, _)| n == name);
        if !exported.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "`{name}` is documented in docs/metrics.md but /metrics does not export it"
            ));
        } else if !excused && !has_sample(scrape, name) {
            out.push(format!(
                "`{name}` is documented in docs/metrics.md but has no sample in this test's \
                 scrape: add traffic that produces it to tests/lifecycle/metrics_doc.rs, or \
                 list it in NO_SAMPLES_HERE with the reason"
            ));
        }
    }
    for (name, why) in no_samples {
        if !page.iter().any(|(n, _)| n == name) {
            out.push(format!(
                "NO_SAMPLES_HERE lists `{name}` ({why}), which docs/metrics.md does not document"
            ));
        }
    }
    out
}

#[test]
fn the_comparison_names_what_is_missing_where() {
    let page = documented(
        "| `tandem_a_total` | counter | `x` | a |\n| `tandem_b` | gauge | — | b |\n\
         | `tandem_ha_vip_errors_total` | counter | `op` | c |\n",
    );
    let scrape =
        "# HELP tandem_a_total a\n# TYPE tandem_a_total counter\ntandem_a_total{x=\"1\"} 2\n\
                  # TYPE tandem_b counter\n# TYPE tandem_c_seconds histogram\n\
                  # TYPE tandem_ha_vip_errors_total counter\n";
    assert_eq!(
        mismatches(&page, scrape, &[("tandem_ha_vip_errors_total", "no ha")]),
        [
            "`tandem_b` is a counter in /metrics but docs/metrics.md says gauge",
            "`tandem_c_seconds` (histogram) is exported by /metrics but has no row in docs/metrics.md",
            "`tandem_b` is documented in docs/metrics.md but has no sample in this test's scrape: \
             add traffic that produces it to tests/lifecycle/metrics_doc.rs, or list it in \
             NO_SAMPLES_HERE with the reason",
        ]
    );
}

/// Sends one request with both `Content-Length` and `Transfer-Encoding`, which
/// tandem refuses (a `tandem_rejected_requests_total` sample).
async fn smuggling_attempt(addr: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn docs_metrics_md_and_the_scrape_agree() {
    let (a, b) = (
        Express::start("metrics-doc-a"),
        Express::start("metrics-doc-b"),
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["metrics.test".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let upstream_keys = "    retries: 1
    health_check:
      http:
        path: /healthz
      interval: 100ms
    circuit_breaker:
      failure_threshold: 2
      reset_timeout: 60s
";
    let yaml = web_config("", upstream_keys, &[a.addr(), b.addr()]).replace(
        "upstreams:\n",
        &format!(
            "  - name: secure\n    bind: 127.0.0.1:0\n    upstream: app\n    tls:\n      certificates:\n        - cert: {}\n          key: {}\nupstreams:\n",
            cert_path.display(),
            key_path.display()
        ),
    );
    let t = Tandem::start(&yaml).await;
    // Failing answers from b: upstream errors, retries, a breaker transition.
    b.control(serde_json::json!({ "status": 502 })).await;
    let url = t.url("web", "/").await;
    let http = client();
    eventually(Duration::from_secs(5), "b's breaker open", || async {
        let _ = http.get(&url).send().await;
        t.server_field("app", &b.addr(), "breaker").await == "open"
    })
    .await;
    let answer = smuggling_attempt(&t.listener_addr("web").await.to_string()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let r = http.post(t.admin_url("/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(5), "health checks counted", || async {
        t.metric("tandem_health_checks_total", &[]).await > 0.0
    })
    .await;

    let page_path = repo_root().join("docs/metrics.md");
    let page = documented(&std::fs::read_to_string(&page_path).unwrap());
    assert!(
        page.len() >= 10,
        "no metric rows found in {}",
        page_path.display()
    );
    let scrape = t.metrics().await;
    let problems = mismatches(&page, &scrape, NO_SAMPLES_HERE);
    assert!(
        problems.is_empty(),
        "docs/metrics.md and /metrics disagree:\n  {}\n\nscrape:\n{scrape}",
        problems.join("\n  ")
    );
}
