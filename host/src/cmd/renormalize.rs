//! `notification-host renormalize`: rebuild the fields of stored rows with
//! the normalizers configured now (after a normalizer fix, say).
//!
//! Every row keeps the record's exact value, key, headers and timestamp, so
//! normalizing it again gives exactly what a replay from Kafka would, and
//! works after the topic's retention has deleted the records. Rows are
//! processed in id order, 1000 at a time; only rows whose fields or
//! normalizer change are written. A row PostgreSQL refuses to update keeps
//! the fields it had and is listed with the reason; the rest go on.

use std::io::Write;

use anyhow::Context as _;

use crate::config::RenormalizeArgs;
use crate::modules::Modules;
use crate::storage::{Db, StoredRow};

const PAGE: i64 = 1000;

/// Runs the command; returns (rows examined, rows changed). Rows PostgreSQL
/// refused are written to `out` and not counted as changed.
pub async fn run(args: &RenormalizeArgs, db: &Db, out: &mut dyn Write) -> anyhow::Result<(u64, u64)> {
    let modules = Modules::load(&args.serve.modules, false, Default::default()).await?;
    // The module store's live versions too, as `serve` runs them.
    crate::modules::refresh_store(db, &modules).await.context("cannot read the module store")?;
    if let Some(r) = modules.rejections().first() {
        anyhow::bail!("module {} is rejected ({}); fix it before renormalizing", r.manifest, r.reason);
    }
    let (mut examined, mut changed, mut after) = (0u64, 0u64, 0i64);
    let mut refused = 0u64;
    loop {
        let page = db.stored_records(args.topic.as_deref(), (args.from_offset, args.to_offset), after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.notification_id;
        examined += page.len() as u64;
        let m = modules.clone();
        let page = tokio::task::spawn_blocking(move || {
            let records: Vec<_> = page.iter().map(|s| s.record.clone()).collect();
            let normalized = m.normalize(&records);
            page.into_iter()
                .zip(normalized)
                .filter_map(|(stored, n)| {
                    let row = StoredRow::from_record(stored.record, n);
                    let same = row.fields == stored.fields && row.normalizer == stored.normalizer;
                    (!same).then_some((stored.notification_id, row))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        let mut page_changed = page.len() as u64;
        if !page.is_empty() && !args.dry_run {
            let (_, kept) = db.update_fields(&page).await?;
            for (id, reason) in &kept {
                writeln!(out, "row {id}: PostgreSQL refused the new fields ({reason}); it keeps its fields")?;
            }
            page_changed -= kept.len() as u64;
            refused += kept.len() as u64;
        }
        changed += page_changed;
    }
    let verb = if args.dry_run { "would change" } else { "changed" };
    write!(out, "{examined} rows examined, {changed} {verb}")?;
    if refused > 0 {
        write!(out, ", {refused} refused by PostgreSQL (kept their fields)")?;
    }
    writeln!(out)?;
    Ok((examined, changed))
}
