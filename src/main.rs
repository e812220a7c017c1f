//! The `tandem` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use tandem::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tandem::telemetry::init(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::Check { config } => match tandem::config::load(&config) {
            Ok(valid) => {
                // Warnings (certificates near expiry) do not fail the check.
                let now = std::time::SystemTime::now();
                for w in tandem::listener::tls::expiry_warnings(&valid, now) {
                    eprintln!("{}: warning: {w}", config.display());
                }
                for w in tandem::upstream::tls::warnings(&valid) {
                    eprintln!("{}: warning: {w}", config.display());
                }
                for w in tandem::upstream::tier::warnings(&valid) {
                    eprintln!("{}: warning: {w}", config.display());
                }
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Reload {
            config,
            admin,
            token_file,
        } => {
            let reloaded =
                tandem::cli::reload::target(config.as_deref(), admin, token_file.as_deref())
                    .and_then(|target| tandem::cli::reload::send(&target));
            match reloaded {
                Ok(generation) => {
                    println!("tandem: configuration reloaded, generation {generation}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => match tandem::app::run(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tandem: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
