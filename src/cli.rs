//! Command line (SPEC §1): `run`, `check`, `--version`, logging options.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = "High-availability TCP/HTTP load balancer"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `debug`, `tandem=debug`); `RUST_LOG` also works.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with the configuration file.
    Run {
        #[arg(short, long, default_value = "proxy.yaml")]
        config: PathBuf,
    },
    /// Validate the configuration file; exit 0 if valid, 1 if not.
    Check {
        #[arg(short, long, default_value = "proxy.yaml")]
        config: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_defaults_to_proxy_yaml_and_check_takes_a_file() {
        let c = Cli::parse_from(["tandem", "run"]);
        assert!(
            matches!(c.command, Command::Run { ref config } if config == &PathBuf::from("proxy.yaml"))
        );
        let c = Cli::parse_from(["tandem", "--log-format", "json", "check", "-c", "x.yaml"]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(
            matches!(c.command, Command::Check { ref config } if config == &PathBuf::from("x.yaml"))
        );
    }
}
