//! Logging setup: text or JSON lines through `tracing`.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. The access
//! log is not a tracing event: it has its own destination (`access_log` in the
//! config, see `crate::access_log`).
//!
//! The HTTP/2 library (`h2`) logs a WARN line per connection it ends for
//! abuse (rapid reset, too many errored streams): a flood would write one
//! line per attacking connection, around tandem's rate-limited refusal log
//! (`listener::ratelog`), which already reports each such connection as
//! `reason=h2_flood`. Its target is therefore kept at `error` unless the
//! filter names it (`--log-level info,h2=debug` still shows everything).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The directive added to every filter that does not name the `h2` target.
const H2_DIRECTIVE: &str = "h2=error";

pub fn init(format: LogFormat, level: Option<&str>) {
    let spec = match level {
        Some(l) => l.to_owned(),
        None => std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| "info".to_owned()),
    };
    let filter = EnvFilter::try_new(with_h2_quiet(&spec)).unwrap_or_else(|e| {
        eprintln!("tandem: invalid log level {spec:?}: {e}; using info");
        EnvFilter::new(with_h2_quiet("info"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("tandem: logging already initialised: {e}");
    }
}

/// `spec` with [`H2_DIRECTIVE`] added, unless a directive of `spec` names
/// the `h2` target (or one of its modules) itself.
fn with_h2_quiet(spec: &str) -> String {
    let names_h2 = spec.split(',').any(|d| {
        let target = d.trim().split(['=', '[']).next().unwrap_or("");
        target == "h2" || target.starts_with("h2::")
    });
    match (names_h2, spec.trim().is_empty()) {
        (true, _) => spec.to_owned(),
        (false, true) => H2_DIRECTIVE.to_owned(),
        (false, false) => format!("{spec},{H2_DIRECTIVE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_h2_quiet;

    #[test]
    fn h2_is_quiet_unless_the_filter_names_it() {
        assert_eq!(with_h2_quiet("info"), "info,h2=error");
        assert_eq!(
            with_h2_quiet("warn,tandem=debug"),
            "warn,tandem=debug,h2=error"
        );
        assert_eq!(with_h2_quiet(""), "h2=error");
        assert_eq!(with_h2_quiet("info,h2=debug"), "info,h2=debug");
        assert_eq!(with_h2_quiet("h2::proto=trace"), "h2::proto=trace");
        // A target that merely starts with the same letters is not h2.
        assert_eq!(with_h2_quiet("h2spec=debug"), "h2spec=debug,h2=error");
    }

    #[test]
    fn the_filter_built_from_it_parses() {
        for spec in ["info", "debug", "warn,tandem::access=off", "trace"] {
            tracing_subscriber::EnvFilter::try_new(with_h2_quiet(spec)).unwrap();
        }
    }
}
