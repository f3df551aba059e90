//! `notification-host capture`: sample lines from a live topic, for
//! `normalize` and a module's samples file, without `kcat`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::CaptureArgs;
use crate::kafka::{self, CaptureRequest};
use crate::samples;

/// Reads the records and writes one sample line each.
pub async fn run(args: &CaptureArgs) -> anyhow::Result<ExitCode> {
    let kafka = args.kafka.clone();
    let topic = args.topic.clone();
    let key = args.key.clone();
    let (count, from_beginning, timeout) = (args.count, args.from_beginning, args.timeout);
    let records = tokio::task::spawn_blocking(move || {
        kafka::capture(
            &kafka,
            &CaptureRequest { topic: &topic, count, key: key.as_deref().map(str::as_bytes), from_beginning, timeout },
        )
    })
    .await??;
    let mut text = String::new();
    for record in &records {
        text.push_str(&samples::to_line(record));
        text.push('\n');
    }
    match &args.out {
        Some(path) => {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    eprintln!("captured {} records from {}", records.len(), args.topic);
    Ok(ExitCode::SUCCESS)
}
