//! Logging setup: text or JSON lines through `tracing`.
//!
//! The level comes from `--log-level`, else `RUST_LOG`, else `info`. The access
//! log is not a tracing event: it has its own destination (`access_log` in the
//! config, see `crate::access_log`).

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("tandem: invalid --log-level {l:?}: {e}; using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
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
