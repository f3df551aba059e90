//! `notification-host check`: configuration, database and broker
//! reachability, the modules directory and the module store, as one report. Exits non-zero
//! when anything is wrong, so it can gate a rollout.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::ServeArgs;
use crate::modules::Modules;
use crate::storage::{Connections, Db};

/// Runs every check, writing one line per check to `out`.
pub async fn run(args: &ServeArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    let mut report = |ok: bool, what: &str, detail: String| -> anyhow::Result<()> {
        failed += usize::from(!ok);
        writeln!(out, "{} {what}: {detail}", if ok { "ok  " } else { "FAIL" })?;
        Ok(())
    };
    report(true, "configuration", "parsed".into())?;

    let mut database = None;
    match Db::connect(&args.db, Connections::for_command()) {
        Ok(db) => {
            let answered = tokio::time::timeout(Duration::from_secs(10), db.ping()).await.unwrap_or(false);
            report(answered, "database", if answered { "answers".into() } else { "does not answer".into() })?;
            if answered {
                match db.schema().await {
                    Ok(schema) => report(true, "database schema", schema.to_string())?,
                    Err(e) => report(false, "database schema", format!("cannot be chosen: {e}"))?,
                }
                database = Some(db);
            }
        }
        Err(e) => report(false, "database", format!("{e:#}"))?,
    }

    let kafka = args.kafka.clone();
    let broker = tokio::task::spawn_blocking(move || crate::kafka::probe(&kafka)).await?;
    match broker {
        Ok((topics, wanted)) => report(true, "broker", format!("{topics} topics, {wanted} to consume"))?,
        Err(e) => report(false, "broker", format!("{e:#}"))?,
    }

    match &args.modules.normalizers_dir {
        None => report(true, "modules", "no NORMALIZERS_DIR: every record uses the built-in default".into())?,
        Some(dir) if !dir.is_dir() => report(false, "modules", format!("{} is not a directory", dir.display()))?,
        Some(_) => {
            let modules = Modules::load(&args.modules, false, Default::default()).await?;
            let live: Vec<String> = modules.list().iter().map(|m| format!("{}@{}", m.name, m.version)).collect();
            let rejected = modules.rejections();
            report(true, "modules", format!("{} live: {}", live.len(), live.join(", ")))?;
            for r in rejected {
                report(false, "module", format!("{}: {}", r.manifest, r.reason))?;
            }
        }
    }
    if let Some(db) = database {
        match db.live_modules().await {
            Ok(live) => {
                let names: Vec<String> = live
                    .iter()
                    .map(|m| match &m.shadow {
                        Some((v, _)) => format!("{}@{} (shadow {v})", m.name, m.version),
                        None => format!("{}@{}", m.name, m.version),
                    })
                    .collect();
                report(true, "module store", format!("{} live: {}", names.len(), names.join(", ")))?;
            }
            // Before the first migration there is no store yet; `serve`
            // and `migrate` create it.
            Err(crate::storage::DbError::Missing(_)) => {
                report(true, "module store", "not created yet (serve or migrate creates it)".into())?
            }
            Err(e) => report(false, "module store", format!("cannot be read: {e}"))?,
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
