//! Why a reload changed nothing: [`ReloadError`], kept typed until printed.
//!
//! Owns the text of every reload failure. Config errors keep their file, line,
//! column and key path ([`ConfigErrors`]); the other problems are prefixed with
//! the file name. [`ReloadError::problems`] yields one located message per
//! problem, and every place that shows a failed reload — the `POST /reload`
//! answer (and so `tandem reload`), `/status`, the audit record and the log —
//! prints those same messages. Tested below and by `tests/lifecycle/refused.rs`.

use std::fmt;
use std::net::SocketAddr;

use crate::config::{ConfigError, ConfigErrors};
use crate::snapshot::BuildErrors;

/// A listener socket that cannot be had; also fails start-up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("listeners.{listener}: cannot bind {bind}: {source}")]
    Bind {
        listener: String,
        bind: SocketAddr,
        source: std::io::Error,
    },
    #[error("listeners.{listener}: no worker to listen")]
    NoWorker { listener: String },
    /// A listener configured on the very port the kernel gave a port-0 one.
    #[error(
        "listeners.{listener}: bind {bind} is already used by listener {other} (bound there from port 0)"
    )]
    PortTaken {
        listener: String,
        bind: SocketAddr,
        other: String,
    },
}

/// Why the first generation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("invalid configuration:\n{0}")]
    Build(#[from] BuildErrors),
    #[error("starting worker thread {index}: {source}")]
    Worker {
        index: usize,
        source: std::io::Error,
    },
}

/// A setting that only a restart can change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartOnly {
    #[error("admin.bind: changing the admin address ({from} -> {to}) needs a restart")]
    AdminBind { from: SocketAddr, to: SocketAddr },
    #[error("workers: changing the worker count ({from} -> {to}) needs a restart")]
    Workers { from: usize, to: usize },
    #[error("ha: changing the ha section needs a restart")]
    Ha,
}

/// Why a reload kept the previous generation. `file` is the config file's path
/// as shown to people; config errors carry their own.
#[derive(Debug)]
pub enum ReloadError {
    /// The file cannot be read or is not a valid configuration.
    Config(ConfigErrors),
    /// Valid, but changes settings that need a restart (never empty).
    RestartOnly {
        file: String,
        changes: Vec<RestartOnly>,
    },
    /// A new listener cannot bind.
    Listen { file: String, source: ListenError },
    /// TLS material cannot be loaded.
    Build { file: String, errors: BuildErrors },
}

/// One located problem of a [`ReloadError`], ready to print on one line.
pub enum Problem<'a> {
    Config(&'a ConfigError),
    InFile(&'a str, &'a dyn fmt::Display),
}

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Config(e) => write!(f, "{e}"),
            Problem::InFile(file, e) => write!(f, "{file}: {e}"),
        }
    }
}

impl ReloadError {
    /// Every problem, in the order found (config errors sorted by position).
    pub fn problems(&self) -> Vec<Problem<'_>> {
        match self {
            ReloadError::Config(errors) => errors.iter().map(Problem::Config).collect(),
            ReloadError::RestartOnly { file, changes } => changes
                .iter()
                .map(|c| Problem::InFile(file, c as &dyn fmt::Display))
                .collect(),
            ReloadError::Listen { file, source } => vec![Problem::InFile(file, source)],
            ReloadError::Build { file, errors } => errors
                .iter()
                .map(|e| Problem::InFile(file, e as &dyn fmt::Display))
                .collect(),
        }
    }
}

/// One problem per line.
impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems().iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReloadError::Config(e) => Some(e),
            ReloadError::Listen { source, .. } => Some(source),
            ReloadError::Build { errors, .. } => Some(errors),
            ReloadError::RestartOnly { .. } => None,
        }
    }
}

impl From<ConfigErrors> for ReloadError {
    fn from(e: ConfigErrors) -> Self {
        ReloadError::Config(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_changes_print_one_located_line_each() {
        let e = ReloadError::RestartOnly {
            file: "/etc/tandem.yaml".into(),
            changes: vec![RestartOnly::Workers { from: 2, to: 4 }, RestartOnly::Ha],
        };
        let lines: Vec<String> = e.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "/etc/tandem.yaml: workers: changing the worker count (2 -> 4) needs a restart",
                "/etc/tandem.yaml: ha: changing the ha section needs a restart",
            ]
        );
        assert_eq!(e.to_string(), lines.join("\n"));
    }

    #[test]
    fn config_errors_keep_their_position_until_printed() {
        let text = "listeners: [oops\n";
        let Err(errors) = crate::config::parse(text, "p.yaml", std::path::Path::new(".")) else {
            panic!("invalid YAML accepted");
        };
        let first = errors.iter().next().map(|e| (e.line, e.col));
        assert!(first.is_some_and(|(line, _)| line > 0), "{errors}");
        let e = ReloadError::from(errors);
        let ReloadError::Config(kept) = &e else {
            panic!("not a config error: {e:?}");
        };
        assert_eq!(kept.iter().next().map(|e| (e.line, e.col)), first);
        assert!(e.to_string().starts_with("p.yaml:"), "{e}");
        assert!(e.problems().iter().all(|p| matches!(p, Problem::Config(_))));
    }

    #[test]
    fn bind_failures_name_the_file_and_the_listener() {
        let e = ReloadError::Listen {
            file: "t.yaml".into(),
            source: ListenError::Bind {
                listener: "web".into(),
                bind: SocketAddr::from(([127, 0, 0, 1], 80)),
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            },
        };
        let s = e.to_string();
        assert!(
            s.starts_with("t.yaml: listeners.web: cannot bind 127.0.0.1:80: "),
            "{s}"
        );
        assert_eq!(e.problems().len(), 1);
    }
}
