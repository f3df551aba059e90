//! `notification-host modules`: the module store, which every replica
//! follows. A push is judged exactly as a replica will load it before
//! anything is stored; nothing else a push or rollback names is touched.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{ModulesAction, ModulesCommand};
use crate::modules;
use crate::storage::module_store::StoreError;
use crate::storage::{Connections, Db};

/// Runs the action, reporting to `out`; refusals are printed and exit 1.
pub async fn run(args: &ModulesCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&args.db, Connections::for_command())?;
    db.migrate().await?;
    let by = args.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let result = match &args.action {
        ModulesAction::Push { manifest, shadow } => {
            let (text, component, samples) = modules::read_module_files(manifest).map_err(anyhow::Error::msg)?;
            let settings = args.modules.clone();
            let judged =
                tokio::task::spawn_blocking(move || modules::validate_for_store(&settings, text, component, samples))
                    .await?;
            let module = match judged {
                Ok(m) => m,
                Err(reason) => {
                    writeln!(out, "refused, nothing stored: {reason}")?;
                    return Ok(ExitCode::FAILURE);
                }
            };
            if *shadow {
                db.push_shadow_module(&module, &by).await.map(|()| {
                    format!(
                        "{}@{} ({}) runs in shadow beside the live version; see `modules diff {}`",
                        module.name, module.version, module.hash, module.name
                    )
                })
            } else {
                db.push_module(&module, &by)
                    .await
                    .map(|()| format!("{}@{} ({}) is live in the store", module.name, module.version, module.hash))
            }
        }
        ModulesAction::List => {
            let live = db.live_modules().await.context("cannot read the module store")?;
            if live.is_empty() {
                writeln!(out, "no modules in the store")?;
            }
            for m in live {
                writeln!(out, "{}@{}  {}  by {} at {}", m.name, m.version, m.hash, m.changed_by, m.changed_at)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ModulesAction::History { name } => {
            let (events, versions) = db.module_history(name).await.context("cannot read the module store")?;
            if events.is_empty() {
                writeln!(out, "{name} has no history in the store")?;
                return Ok(ExitCode::FAILURE);
            }
            for e in events {
                writeln!(out, "{}  {:<8} {:<12} by {}", e.at, e.action, e.version.as_deref().unwrap_or("-"), e.by)?;
            }
            let versions: Vec<String> =
                versions.into_iter().map(|(v, by, at)| format!("{v} (pushed by {by} at {at})")).collect();
            writeln!(out, "stored versions: {}", versions.join(", "))?;
            return Ok(ExitCode::SUCCESS);
        }
        ModulesAction::Rollback { target } => {
            let (name, version) = match target.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (target.as_str(), None),
            };
            db.rollback_module(name, version, &by).await.map(|v| format!("{name}@{v} is live in the store"))
        }
        ModulesAction::Promote { name } => {
            db.promote_module(name, &by).await.map(|v| format!("{name}@{v} is live in the store"))
        }
        ModulesAction::Diff { name } => {
            let Some((version, reports)) = db.shadow_reports(name).await.context("cannot read the module store")?
            else {
                writeln!(out, "{name} has no shadow version")?;
                return Ok(ExitCode::FAILURE);
            };
            let records: i64 = reports.iter().map(|r| r.records).sum();
            let differing: i64 = reports.iter().map(|r| r.differing).sum();
            writeln!(
                out,
                "{name}@{version} in shadow: {differing} of {records} records answered differently, on {} replicas",
                reports.len()
            )?;
            for r in &reports {
                writeln!(out, "  {}: {} of {} (at {})", r.replica, r.differing, r.records, r.updated_at)?;
                let samples: Vec<crate::modules::ShadowDiff> = serde_json::from_str(&r.samples).unwrap_or_default();
                for d in samples {
                    let fields: Vec<String> =
                        d.fields.iter().map(|f| format!("{}: {:?} → {:?}", f.field, f.live, f.shadow)).collect();
                    let error = d.shadow_error.map(|e| format!(" (shadow failed: {e})")).unwrap_or_default();
                    writeln!(out, "    {}[{}]@{}: {}{error}", d.topic, d.partition, d.offset, fields.join("; "))?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        ModulesAction::Remove { name } => {
            db.remove_module(name, &by).await.map(|()| format!("{name} is removed from the store"))
        }
    };
    match result {
        Ok(message) => {
            writeln!(out, "{message}")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(StoreError::Database(e)) => Err(anyhow::Error::new(e).context("the module store is unavailable")),
        Err(refused) => {
            writeln!(out, "refused, nothing changed: {refused}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}
