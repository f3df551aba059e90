//! The `notification-host` binary: parse the configuration once, set up
//! logging, and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use notification_host::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CompileModule { memory_bytes }) = cli.command {
        // A child of the host: no logging, its exit code is its answer.
        return ExitCode::from(u8::try_from(notification_host::runtime::compile_module(memory_bytes)).unwrap_or(1));
    }
    // The authoring tools report on their own (the tester prints every
    // rejection the modules would log); the log says only what is wrong.
    let level = match cli.command {
        Some(Command::Normalize(_)) => "off",
        Some(
            Command::New(_)
            | Command::Capture(_)
            | Command::Modules(_)
            | Command::ImportLegacy(_)
            | Command::CompareLegacy(_),
        ) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, level);
    let result = match cli.command {
        Some(Command::Normalize(args)) => {
            notification_host::cmd::normalize::run(&args, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Some(Command::New(args)) => {
            notification_host::cmd::new::run(&args, &mut std::io::stdout()).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::Capture(args)) => block_on(notification_host::cmd::capture::run(&args)),
        Some(Command::Modules(args)) => {
            block_on(async move { notification_host::cmd::modules::run(&args, &mut std::io::stdout()).await })
        }
        Some(Command::Renormalize(args)) => block_on(async move {
            let db = notification_host::storage::Db::connect(
                &args.serve.db,
                notification_host::storage::Connections::for_command(),
            )?;
            notification_host::cmd::renormalize::run(&args, &db, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }),
        Some(Command::ImportLegacy(args)) => {
            block_on(async move { notification_host::cmd::import_legacy::run(&args, &mut std::io::stdout()).await })
        }
        Some(Command::CompareLegacy(args)) => {
            block_on(async move { notification_host::cmd::compare_legacy::run(&args, &mut std::io::stdout()).await })
        }
        Some(Command::Check) => block_on(notification_host::cmd::check::run(&cli.serve, &mut std::io::stdout())),
        Some(Command::Migrate) => {
            block_on(notification_host::cmd::serve::migrate(&cli.serve)).map(|()| ExitCode::SUCCESS)
        }
        Some(Command::CompileModule { .. }) => Ok(ExitCode::SUCCESS),
        Some(Command::Serve) | None => {
            block_on(notification_host::cmd::serve::serve(cli.serve)).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::from(2)
    })
}

fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(future);
    // A blocking call stuck on an unreachable broker must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Logs go to standard error, filtered by RUST_LOG (default `default`).
fn init_logging(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
