//! The `notification-host` binary: parse the configuration once, set up
//! logging, and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use notification_host::config::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Normalize(args)) => {
            match notification_host::cmd::normalize::run(&args, &mut std::io::stdout(), &mut std::io::stderr()) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!("error: not available yet");
            ExitCode::from(2)
        }
    }
}
