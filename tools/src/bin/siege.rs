//! The hostile-load suite at full size: the release host under 2,000
//! records/s over 20 topics while every attack of issue 23 is made on it in
//! turn. Run it with `scripts/siege`; `tests/src/siege.rs` says what each
//! attack does and checks. Prints one `SIEGE` line per attack and exits
//! non-zero when any check failed.
//!
//! Reads `KAFKA_BOOTSTRAP_SERVERS` and `NORMALIZER_WASM_DIR` (scripts/siege
//! sets both); runs a PostgreSQL of its own, which the outage stops.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use notification_e2e::siege::{Options, Size, run};

fn usage() -> anyhow::Error {
    anyhow::anyhow!(
        "usage: siege --host-bin PATH [--wasm-dir DIR] [--only NAME[,NAME...]] [--short]\n\
         (sizes: SIEGE_RATE, SIEGE_ATTACK_SECS, SIEGE_OUTAGE_SECS, SIEGE_READERS, SIEGE_METHODS, ...)"
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut host_bin: Option<PathBuf> = None;
    let mut wasm_dir: Option<PathBuf> = None;
    let mut only: Option<Vec<String>> = None;
    let mut size = Size::full();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--short" => size = Size::short(),
            "--host-bin" => host_bin = Some(args.next().ok_or_else(usage)?.into()),
            "--wasm-dir" => wasm_dir = Some(args.next().ok_or_else(usage)?.into()),
            "--only" => {
                only = Some(args.next().ok_or_else(usage)?.split(',').map(|s| s.trim().to_owned()).collect());
            }
            _ => return Err(usage()),
        }
    }
    let host_bin = host_bin.ok_or_else(usage)?;
    if !host_bin.is_file() {
        bail!("{} is not a file (build it: cargo build --release -p notification-host)", host_bin.display());
    }
    let wasm_dir = match wasm_dir {
        Some(d) => d,
        None => std::env::var_os("NORMALIZER_WASM_DIR").context("give --wasm-dir or set NORMALIZER_WASM_DIR")?.into(),
    };
    let only = only.unwrap_or_else(|| {
        std::env::var("SIEGE_ONLY")
            .map(|s| s.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    });
    let options = Options { size: size.with_env(), host_bin: Some(host_bin), wasm_dir, only };
    let report = run(options).await;
    if !report.failures.is_empty() {
        bail!("the siege failed {} checks", report.failures.len());
    }
    Ok(())
}
