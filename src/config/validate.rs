//! `Raw*` -> validated [`Config`]: defaults, ranges, value syntax, files and every
//! cross-reference.
//!
//! Owns the meaning of each key (docs/configuration.md) and the checks between keys (names
//! resolve, names and binds are unique, tcp listeners have no routes, TLS and key
//! files are readable). Does not parse YAML or decide positions: errors name a key
//! path and `SpanIndex` places them. Invariants: every problem is reported (a value
//! that fails gets a placeholder so checking continues), and a `Config` is returned
//! only when nothing was reported; nothing already reported by `raw` is reported
//! again. File reads happen here, resolved against the config file's directory.
//! Tested by the golden fixtures and the field-by-field tests in `config::tests`.

mod access_log;
mod ha;
mod listener;
mod upstream;
mod value;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::Report;
use super::raw::RawConfig;
use super::span::{child, SpanIndex};
use super::types::{Admin, Config};

/// Shared state of one validation run.
pub struct Ctx<'a> {
    spans: &'a SpanIndex,
    report: &'a mut Report,
    base_dir: &'a Path,
}

/// Stands in for an address that failed to parse; never reaches a `Config`.
const NO_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

pub fn validate(raw: RawConfig, spans: &SpanIndex, report: &mut Report, base_dir: &Path) -> Config {
    let mut cx = Ctx {
        spans,
        report,
        base_dir,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = cx
        .parse(raw.workers.as_deref(), "workers", |s| {
            value::workers(s, cores)
        })
        .unwrap_or(cores);
    let shutdown_timeout = cx.duration_or_zero(
        raw.shutdown_timeout.as_deref(),
        "shutdown_timeout",
        Duration::from_secs(30),
    );
    let admin = admin(&mut cx, raw.admin.unwrap_or_default());

    let upstreams = upstream::all(&mut cx, raw.upstreams);
    let names: Vec<String> = upstreams.iter().map(|u| u.name.clone()).collect();
    let listeners = listener::all(&mut cx, raw.listeners, &names);
    let ha = raw.ha.map(|h| ha::ha(&mut cx, h, &names));
    let access_log = raw.access_log.map(|a| access_log::access_log(&mut cx, a));

    // Binds: listeners among themselves, then admin and ha against listeners.
    // Port 0 asks the kernel for a fresh port, so it never collides.
    let mut binds: HashMap<SocketAddr, String> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        let path = format!("listeners[{i}].bind");
        if l.bind.port() == 0 || !cx.spans.contains(&path) {
            continue;
        }
        match binds.get(&l.bind) {
            Some(first) => {
                let msg = format!("bind {} is already used by {first}", l.bind);
                cx.err(&path, msg);
            }
            None => {
                binds.insert(l.bind, path);
            }
        }
    }
    let mut others = vec![("admin.bind", admin.bind)];
    if let Some(h) = &ha {
        others.push(("ha.bind", h.bind));
    }
    for (path, addr) in others {
        if let Some(first) = binds.get(&addr).filter(|_| addr.port() != 0) {
            let msg = format!("bind {addr} is already used by {first}");
            cx.err(path, msg);
        }
    }

    Config {
        workers,
        shutdown_timeout,
        admin,
        listeners,
        upstreams,
        ha,
        access_log: access_log.flatten(),
    }
}

fn admin(cx: &mut Ctx<'_>, raw: super::raw::RawAdmin) -> Admin {
    let bind = match raw.bind {
        Some(b) => cx.parse(Some(&b), "admin.bind", value::bind),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    let (token, token_file) = match raw.token_file {
        Some(written) => {
            let file = cx.resolve(&written);
            (token(cx, &written, &file), Some(file))
        }
        None => (None, None),
    };
    let state_file = raw.state_file.and_then(|w| state_file(cx, &w));
    Admin {
        bind: bind.unwrap_or(NO_ADDR),
        token,
        token_file,
        state_file,
    }
}

/// `admin.state_file`: the file need not exist yet (it is written on the first
/// change), but its directory must, or every state change would be lost.
fn state_file(cx: &mut Ctx<'_>, written: &str) -> Option<PathBuf> {
    let path = "admin.state_file";
    let file = cx.resolve(written);
    if written.is_empty() || written.ends_with('/') || file.is_dir() {
        cx.err(
            path,
            format!("state file \"{written}\" must name a file, not a directory"),
        );
        return None;
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        cx.err(
            path,
            format!(
                "the directory of state file \"{written}\" does not exist ({})",
                dir.display()
            ),
        );
        return None;
    }
    Some(file)
}

/// The admin token: the file's text without trailing whitespace, never empty.
fn token(cx: &mut Ctx<'_>, written: &str, file: &Path) -> Option<String> {
    let path = "admin.token_file";
    let bytes = cx.read(path, written, file, "token file")?;
    let Ok(text) = String::from_utf8(bytes) else {
        cx.err(path, format!("token file \"{written}\" is not valid UTF-8"));
        return None;
    };
    let token = text.trim_end();
    if token.is_empty() {
        cx.err(path, format!("token file \"{written}\" is empty"));
        return None;
    }
    Some(token.to_string())
}

impl Ctx<'_> {
    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.spans.pos(path);
        self.report.push(pos, path, message);
    }

    /// `v`, or a "missing" error at the enclosing mapping; silent when the key was
    /// written but failed to decode (already reported).
    pub fn required<T>(&mut self, v: Option<T>, path: &str) -> Option<T> {
        if v.is_none() && !self.spans.contains(path) {
            let key = path.rsplit('.').next().unwrap_or(path);
            match self.spans.null_at(path) {
                Some(pos) => self
                    .report
                    .push(pos, path, format!("\"{key}\" needs a value")),
                None => self.err(path, format!("missing required key \"{key}\"")),
            }
        }
        v
    }

    /// Runs a value parser, reporting its message at `path`.
    pub fn parse<T>(
        &mut self,
        v: Option<&str>,
        path: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match parse(v?) {
            Ok(t) => Some(t),
            Err(msg) => {
                self.err(path, msg);
                None
            }
        }
    }

    /// A positive duration; `default` when absent.
    pub fn duration(&mut self, v: Option<&str>, path: &str, default: Duration) -> Duration {
        let d = self.duration_or_zero(v, path, default);
        if d.is_zero() && v.is_some() {
            self.err(path, "must be greater than 0");
            return default;
        }
        d
    }

    fn duration_or_zero(&mut self, v: Option<&str>, path: &str, default: Duration) -> Duration {
        self.parse(v, path, value::duration).unwrap_or(default)
    }

    /// An integer in `lo..=hi`; `default` when absent or out of range.
    pub fn int(&mut self, v: Option<i64>, path: &str, default: i64, lo: i64, hi: i64) -> i64 {
        match v {
            Some(n) if (lo..=hi).contains(&n) => n,
            Some(n) => {
                let msg = if hi == i64::MAX {
                    format!("must be at least {lo}, found {n}")
                } else {
                    format!("must be between {lo} and {hi}, found {n}")
                };
                self.err(path, msg);
                default
            }
            None => default,
        }
    }

    /// A listener or upstream name, required and well-formed.
    pub fn name(&mut self, v: Option<String>, parent: &str) -> Option<String> {
        let path = child(parent, "name");
        let n = self.required(v, &path)?;
        self.parse(Some(&n), &path, value::name)?;
        Some(n)
    }

    pub fn resolve(&self, written: &str) -> PathBuf {
        self.base_dir.join(written)
    }

    /// Reads a whole file, reporting why it cannot be read.
    pub fn read(&mut self, path: &str, written: &str, file: &Path, what: &str) -> Option<Vec<u8>> {
        if file.is_dir() {
            self.err(
                path,
                format!("cannot read {what} \"{written}\": it is a directory"),
            );
            return None;
        }
        match std::fs::read(file) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.err(
                    path,
                    format!("cannot read {what} \"{written}\": {}", io_reason(&e)),
                );
                None
            }
        }
    }
}

/// Short, stable wording for the common cases (the golden files pin it).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}
