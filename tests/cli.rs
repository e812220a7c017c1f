//! `tandem check` and `--version` as a user runs them.

use crate::support::{repo_root, tandem_cli};

#[test]
fn check_accepts_the_shipped_example() {
    let (code, out, err) = tandem_cli(&["check", "-c", "proxy.yaml"], &repo_root());
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("configuration is valid"));
}

#[test]
fn check_reports_every_problem_with_location_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "listeners:\n  - name: web\n    bind: 127.0.0.1:8080\n    upstream: nope\n    ballance: x\nupstreams:\n  - name: app\n    servers:\n      - address: \"app-2:\"\n",
    )
    .unwrap();
    let (code, out, err) = tandem_cli(&["check", "-c", "bad.yaml"], dir.path());
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("bad.yaml:4:15: listeners[0].upstream: "),
        "{err}"
    );
    assert!(
        lines[1].starts_with("bad.yaml:5:5: listeners[0].ballance: unknown key"),
        "{err}"
    );
    assert!(
        lines[2].starts_with(
            "bad.yaml:9:18: upstreams[0].servers[0].address: invalid socket address \"app-2:\""
        ),
        "{err}"
    );
}

#[test]
fn run_with_an_invalid_config_fails_with_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), "workers: zero\n").unwrap();
    let (code, _, err) = tandem_cli(&["run", "-c", "p.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("p.yaml:1:10: workers:"), "{err}");
}

#[test]
fn version_is_printed() {
    let (code, out, _) = tandem_cli(&["--version"], &repo_root());
    assert_eq!(code, 0);
    assert!(out.starts_with("tandem "), "{out}");
}
