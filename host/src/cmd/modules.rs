//! `notification-host modules`: the module store, which every replica
//! follows. A push is judged exactly as a replica will load it before
//! anything is stored; nothing else a push or rollback names is touched.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{ModulesAction, ModulesCommand};
use crate::modules;
use crate::storage::Db;
use crate::storage::module_store::{self, StoreError};

/// Runs the action, reporting to `out`; refusals are printed and exit 1.
pub async fn run(args: &ModulesCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let db = Db::connect_lazy(args.db.url()?, 2)?;
    db.migrate().await?;
    let by = args.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
    let result = match &args.action {
        ModulesAction::Push { manifest } => {
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
            module_store::push(db.pool(), &module, &by)
                .await
                .map(|()| format!("{}@{} ({}) is live in the store", module.name, module.version, module.hash))
        }
        ModulesAction::List => {
            let live = module_store::live(db.pool()).await.context("cannot read the module store")?;
            if live.is_empty() {
                writeln!(out, "no modules in the store")?;
            }
            for m in live {
                writeln!(out, "{}@{}  {}  by {} at {}", m.name, m.version, m.hash, m.changed_by, m.changed_at)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ModulesAction::History { name } => {
            let (events, versions) =
                module_store::history(db.pool(), name).await.context("cannot read the module store")?;
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
            module_store::rollback(db.pool(), name, version, &by)
                .await
                .map(|v| format!("{name}@{v} is live in the store"))
        }
        ModulesAction::Remove { name } => {
            module_store::remove(db.pool(), name, &by).await.map(|()| format!("{name} is removed from the store"))
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
