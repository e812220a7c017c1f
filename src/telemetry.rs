//! Logging setup: text or JSON lines through `tracing`.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. The access
//! log is not a tracing event: it has its own destination (`access_log` in the
//! config, see `crate::access_log`).
//!
//! Colour (ANSI escapes) only when stderr is a terminal and `NO_COLOR` is unset
//! or empty (no-color.org): files, pipes and the journal get plain text.
//!
//! Two targets get a level of their own unless the filter names them:
//!
//! - The HTTP/2 library (`h2`) logs a WARN line per connection it ends for
//!   abuse (rapid reset, too many errored streams): a flood would write one
//!   line per attacking connection, around tandem's rate-limited refusal log
//!   (`listener::ratelog`), which already reports each such connection as
//!   `reason=h2_flood`. It is kept at `error` (`--log-level info,h2=debug`
//!   still shows everything).
//! - Audit events (`tandem::audit`) stay on at `info` whatever the level: a
//!   quieter log must not lose the record of who changed what
//!   (`--log-level warn,tandem::audit=off` turns them off).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Directives added to every filter that does not name their target.
const DEFAULTS: [(&str, &str); 2] = [("h2", "h2=error"), ("tandem::audit", "tandem::audit=info")];

pub fn init(format: LogFormat, level: Option<&str>) {
    let spec = match level {
        Some(l) => l.to_owned(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".to_owned()),
    };
    let filter = EnvFilter::try_new(with_defaults(&spec)).unwrap_or_else(|e| {
        eprintln!("tandem: invalid log level {spec:?}: {e}; using info");
        EnvFilter::new(with_defaults("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ));
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("tandem: logging already initialised: {e}");
    }
}

/// Whether log lines get ANSI colour: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value.
fn colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `spec` with each of [`DEFAULTS`] added, unless a directive of `spec`
/// names that target (or one of its modules) itself.
fn with_defaults(spec: &str) -> String {
    let names = |wanted: &str| {
        spec.split(',').any(|d| {
            let target = d.trim().split(['=', '[']).next().unwrap_or("");
            target == wanted
                || target
                    .strip_prefix(wanted)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    };
    let mut out: Vec<&str> = Some(spec.trim())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    out.extend(
        DEFAULTS
            .iter()
            .filter(|(target, _)| !names(target))
            .map(|(_, directive)| *directive),
    );
    out.join(",")
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{colour, with_defaults};

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        assert!(!colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn h2_is_quiet_unless_the_filter_names_it() {
        let a = ",tandem::audit=info";
        assert_eq!(with_defaults("info"), format!("info,h2=error{a}"));
        assert_eq!(
            with_defaults("warn,tandem=debug"),
            format!("warn,tandem=debug,h2=error{a}")
        );
        assert_eq!(with_defaults(""), format!("h2=error{a}"));
        assert_eq!(with_defaults("info,h2=debug"), format!("info,h2=debug{a}"));
        assert_eq!(
            with_defaults("h2::proto=trace"),
            format!("h2::proto=trace{a}")
        );
        // A target that merely starts with the same letters is not h2.
        assert_eq!(
            with_defaults("h2spec=debug"),
            format!("h2spec=debug,h2=error{a}")
        );
    }

    #[test]
    fn audit_stays_on_unless_the_filter_names_it() {
        assert_eq!(with_defaults("error"), "error,h2=error,tandem::audit=info");
        assert_eq!(
            with_defaults("warn,tandem::audit=off"),
            "warn,tandem::audit=off,h2=error"
        );
        // `tandem` alone does not name the audit target.
        assert_eq!(
            with_defaults("tandem=warn"),
            "tandem=warn,h2=error,tandem::audit=info"
        );
    }

    #[test]
    fn the_filter_built_from_it_parses() {
        for spec in ["info", "debug", "warn,tandem::access=off", "trace", ""] {
            tracing_subscriber::EnvFilter::try_new(with_defaults(spec)).unwrap();
        }
    }
}
