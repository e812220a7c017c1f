//! Logging setup: text or JSON lines through `tracing`.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. Access log
//! events use the target `tandem::access` so they can be filtered on their own
//! (`--log-level info,tandem::access=off`). Audit events (target
//! `tandem::audit`) stay on at `info` whatever the level, unless the filter
//! names that target itself (`--log-level warn,tandem::audit=off`): a quieter
//! log must not lose the record of who changed what.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

const AUDIT_TARGET: &str = "tandem::audit";

pub fn init(format: LogFormat, level: Option<&str>) {
    let written = level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_default();
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("tandem: invalid --log-level {l:?}: {e}; using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let filter = if written.contains(AUDIT_TARGET) {
        filter
    } else {
        match format!("{AUDIT_TARGET}=info").parse() {
            Ok(d) => filter.add_directive(d),
            Err(_) => filter,
        }
    };
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
