//! `tandem check`, `tandem reload`, `--version` and log output as a user runs them.

use std::process::{Command, Stdio};

use crate::support::{free_port, repo_root, tandem_cli, web_config, Tandem};

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

fn reload_config(token_file: Option<&str>) -> String {
    let yaml = web_config("", "", &[format!("127.0.0.1:{}", free_port())]);
    match token_file {
        Some(f) => yaml.replace("admin:\n", &format!("admin:\n  token_file: {f}\n")),
        None => yaml,
    }
}

/// `tandem reload -c FILE` (the unit's `ExecReload`): exit 0 with the new
/// generation; a broken file is refused before anything is sent, exit 1 with
/// every located error, and the running configuration is kept.
#[tokio::test]
async fn reload_reports_the_generation_or_every_error() {
    let t = Tandem::start(&reload_config(None)).await;
    let dir = t.dir.path();
    let (code, out, err) = tandem_cli(&["reload", "-c", "proxy.yaml"], dir);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("generation 2"), "{out}");
    assert_eq!(t.status().await["config"]["generation"], 2);

    let good = std::fs::read_to_string(&t.config_path).unwrap();
    let broken = good.replace("upstream: app", "upstream: nope") + "workers: zero\n";
    t.write_config(&broken);
    let (code, out, err) = tandem_cli(&["reload", "-c", "proxy.yaml"], dir);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("proxy.yaml:") && l.contains("listeners[0].upstream")),
        "{err}"
    );
    assert!(err.contains(": workers: "), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");
    let v = t.status().await;
    assert_eq!(v["config"]["generation"], 2, "{v}");
    assert_eq!(
        v["config"]["last_reload"]["result"], "success",
        "not sent: {v}"
    );

    // Given only the address, the running tandem judges the file itself and
    // its answer carries the same located errors.
    let admin = t.admin.to_string();
    let (code, out, err) = tandem_cli(&["reload", "--admin", &admin], dir);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("listeners[0].upstream"), "{err}");
    assert!(err.contains("previous configuration kept"), "{err}");
    assert_eq!(
        t.status().await["config"]["last_reload"]["result"],
        "failure"
    );
    assert_eq!(t.status().await["config"]["generation"], 2);
}

#[tokio::test]
async fn reload_takes_the_token_from_the_file_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let t = Tandem::start(&reload_config(Some(&token.display().to_string()))).await;
    let admin = t.admin.to_string();

    let (code, out, err) = tandem_cli(&["reload", "-c", "proxy.yaml"], t.dir.path());
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");

    let (code, _, err) = tandem_cli(&["reload", "--admin", &admin], t.dir.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");

    let token_arg = token.display().to_string();
    let (code, out, err) = tandem_cli(
        &["reload", "--admin", &admin, "--token-file", &token_arg],
        t.dir.path(),
    );
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("generation 3"), "{out}");
}

#[test]
fn reload_without_a_running_tandem_fails_clearly() {
    let port = free_port();
    let admin = format!("127.0.0.1:{port}");
    let (code, _, err) = tandem_cli(&["reload", "--admin", &admin], &repo_root());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot reach the admin API at {admin}")),
        "{err}"
    );
}

/// A startup log line (debug, before the file is read) of `tandem run` on a
/// file that does not load: the process exits on its own.
fn log_line_args(dir: &std::path::Path) -> Vec<String> {
    std::fs::write(dir.join("bad.yaml"), "workers: zero\n").unwrap();
    ["--log-level", "debug", "run", "-c", "bad.yaml"]
        .map(String::from)
        .to_vec()
}

/// Logs written to a file or pipe carry no ANSI colour; a terminal gets colour
/// unless `NO_COLOR` is set.
#[test]
fn log_colour_only_on_a_terminal_and_never_with_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let args = log_line_args(dir.path());
    let bin = env!("CARGO_BIN_EXE_tandem");

    let piped = Command::new(bin)
        .args(&args)
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(err.contains("open files limit"), "{err}");
    assert!(!err.contains('\x1b'), "colour in a pipe: {err:?}");

    // `script` runs the command on a pseudo-terminal and copies what it wrote.
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec"])
            .arg(format!("{bin} {}", args.join(" ")))
            .arg("/dev/null")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().expect("script(1) from util-linux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_tty(None);
    assert!(tty.contains("open files limit"), "{tty}");
    assert!(tty.contains('\x1b'), "no colour on a terminal: {tty:?}");
    let no_color = on_tty(Some("1"));
    assert!(no_color.contains("open files limit"), "{no_color}");
    assert!(
        !no_color.contains('\x1b'),
        "colour despite NO_COLOR: {no_color:?}"
    );
}
