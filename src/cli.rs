//! Command line: `run`, `check`, `reload`, `--version`, logging options.
//! Parsing only; `cli/reload.rs` carries out `reload`.

pub mod reload;

use std::net::SocketAddr;
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
    /// Ask the running tandem to reload (POST /reload on its admin API); exit 0
    /// with the new generation, 1 with every error if the configuration is refused.
    ///
    /// The file (`-c`, else ./proxy.yaml unless `--admin` is given) is checked
    /// first and gives the admin address and token; nothing is sent if it is invalid.
    Reload {
        /// Configuration file of the running tandem.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Admin API address (default: the file's admin.bind).
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// Bearer token file (default: the file's admin.token_file).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
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
        let c = Cli::parse_from(["tandem", "reload", "--admin", "127.0.0.1:9901"]);
        assert!(matches!(
            c.command,
            Command::Reload { config: None, admin: Some(a), token_file: None } if a.port() == 9901
        ));
    }
}
