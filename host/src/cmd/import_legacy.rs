//! `notification-host import-legacy`: the cut-over from the original
//! service. Copies its rows into the log with their original ids, or with
//! `--offsets` starts the consumer group where it stopped reading. Its
//! database is only read.
//!
//! An original row becomes a row like one the API stores: no Kafka
//! coordinates, its ids with placeholders (`''`, `'unknown'`,
//! `'unavailable'`, ...) absent, its `event` text as the document, its
//! insert time as the record time, and its id in `legacy_id`, which
//! `API_COMPAT=original` answers as `notificationId`. Rows are read in id
//! order, a batch per transaction that also records how far the import got:
//! run it again after an interruption and it continues; run it again after
//! it finished and it reads everything again and stores only what is new.

use std::collections::BTreeSet;
use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};

use crate::config::ImportLegacyArgs;
use crate::kafka::{GroupPosition, SeedError};
use crate::record::Fields;
use crate::storage::legacy::{ImportRow, LegacyDb, LegacyRow, LegacyScope};
use crate::storage::{Connections, Db, partition_window};

/// How often the plain progress line is written when standard error is not
/// a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Runs the command, writing its report to `out`.
pub async fn run(args: &ImportLegacyArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let legacy = LegacyDb::open(&args.from).await?;
    if args.offsets {
        return seed_offsets(args, &legacy, out).await;
    }
    import_rows(args, &legacy, out).await
}

/// What an import counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub read: u64,
    pub imported: u64,
    pub present: u64,
}

async fn import_rows(args: &ImportLegacyArgs, legacy: &LegacyDb, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let db = Db::connect(&args.db, Connections::for_command())?;
    db.migrate().await?;
    let schema = db.schema().await.context("cannot read the host's schema")?;
    writeln!(out, "from {} into the host's tables in {schema}", legacy.source())?;
    let scope = if args.only_api { LegacyScope::Api } else { LegacyScope::All };
    if scope == LegacyScope::All {
        refuse_duplicates(&db, legacy).await?;
    }

    let source = legacy.source().to_owned();
    let progress = db.begin_legacy_import(&source, scope).await.context("cannot record the import's progress")?;
    let mut after = progress.after_id.clone();
    if let Some(id) = &after {
        writeln!(
            out,
            "resuming an interrupted import after row {id} ({} rows read, {} imported before)",
            progress.rows_read, progress.imported
        )?;
    }
    let total = legacy.count(scope, after.as_deref()).await.context("cannot count the original's rows")?;
    let mut bar = Progress::new(total);
    let window = partition_window(
        Utc::now(),
        args.db.partition_history_months,
        args.db.retention_days,
        args.db.partitions_ahead,
    );
    let mut months = BTreeSet::new();
    let mut counts = Counts::default();
    let started = Instant::now();
    loop {
        let page =
            legacy.page(scope, after.as_deref(), args.batch_size).await.context("cannot read the original's rows")?;
        let Some(last) = page.last().map(|r| r.notification_id.clone()) else { break };
        let rows: Vec<ImportRow> = page.iter().map(import_row).collect();
        prepare_partitions(&db, &rows, window, &mut months).await;
        let batch = db
            .import_legacy_batch(&source, scope, &rows, &last)
            .await
            .with_context(|| format!("cannot store the batch after row {}", after.as_deref().unwrap_or("(start)")))?;
        counts.read += rows.len() as u64;
        counts.imported += batch.imported;
        counts.present += batch.present;
        bar.update(&counts);
        after = Some(last);
    }
    db.finish_legacy_import(&source, scope).await.context("cannot record the import's end")?;
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "read {}, imported {}, already present {} ({:.1} s, {:.0} rows/s)",
        counts.read,
        counts.imported,
        counts.present,
        seconds,
        counts.read as f64 / seconds.max(0.001)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses to import the original's Kafka rows where the host itself has
/// stored records the original had read: both would be rows.
async fn refuse_duplicates(db: &Db, legacy: &LegacyDb) -> anyhow::Result<()> {
    let Some(positions) = legacy.offsets().await.context("cannot read the original's kafka_offsets")? else {
        return Ok(());
    };
    let overlap = db.live_rows_before(&positions).await.context("cannot read the host's rows")?;
    if overlap.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> =
        overlap.iter().take(5).map(|p| format!("{}[{}] before offset {}", p.topic, p.partition, p.offset)).collect();
    anyhow::bail!(
        "the host already stored records that the original service stored too ({}{}): importing its rows would \
         keep those events twice. Import into a schema without them (DATABASE_SCHEMA), or, when the host reads \
         the topics from the earliest offset itself, import only the rows created through the original's API \
         (--only-api)",
        shown.join(", "),
        if overlap.len() > shown.len() {
            format!(" and {} more partitions", overlap.len() - shown.len())
        } else {
            String::new()
        }
    )
}

/// Creates the month partitions the batch needs (within the write path's
/// window), once per month; a month that cannot be created now leaves its
/// rows in the default partition, from which creating it later moves them.
async fn prepare_partitions(
    db: &Db,
    rows: &[ImportRow],
    window: (NaiveDate, NaiveDate),
    known: &mut BTreeSet<NaiveDate>,
) {
    let needed: BTreeSet<NaiveDate> = rows
        .iter()
        .filter_map(|r| r.created_at.date_naive().with_day0(0))
        .filter(|m| (window.0..=window.1).contains(m) && !known.contains(m))
        .collect();
    for month in needed {
        match db.ensure_partitions(month, month).await {
            Ok(_) => {
                known.insert(month);
            }
            Err(error) => {
                tracing::warn!(%month, %error, "Cannot create a month partition now; its rows go to the default partition.")
            }
        }
    }
}

/// An original row as the host stores it: see the module documentation.
pub fn import_row(row: &LegacyRow) -> ImportRow {
    let mut fields = Fields {
        customer_id: row.customer_id.clone(),
        runner_id: row.runner_id.clone(),
        order_id: row.order_id.clone(),
        event_type: row.event_type.clone(),
        correlation_id: row.correlation_id.clone(),
        source_service: row.source_service.clone(),
        status: row.status.clone(),
    };
    let mut notes: Vec<String> = normalizer_rules::strip_placeholders(&mut fields)
        .into_iter()
        .map(|p| {
            let shown: String = p.value.chars().take(40).collect();
            format!("the original stored {} {shown:?}, a placeholder, stored as absent", p.field)
        })
        .collect();
    let created_at = match row.created_at {
        Some(t) => t.and_utc(),
        None => {
            notes.push("the original row has no created_at; stored at the Unix epoch".to_owned());
            DateTime::<Utc>::UNIX_EPOCH
        }
    };
    let (document, raw_value) = match json_document(&row.event) {
        Ok(()) => (Some(row.event.clone()), None),
        Err(why) => {
            notes.push(format!("the original's event {why}; kept as text"));
            (None, Some(row.event.clone().into_bytes()))
        }
    };
    let source_topic = match row.source_topic.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(topic) => topic.to_owned(),
        None => {
            let from_wrapper = serde_json::from_str::<serde_json::Value>(&row.event)
                .ok()
                .and_then(|e| e.get("topic").and_then(|t| t.as_str()).map(str::to_owned))
                .filter(|t| !t.is_empty());
            notes.push(match &from_wrapper {
                Some(_) => "the original row has no source_topic; taken from its event's topic".to_owned(),
                None => "the original row has no source_topic".to_owned(),
            });
            from_wrapper.unwrap_or_default()
        }
    };
    ImportRow {
        legacy_id: row.notification_id.clone(),
        fields,
        document,
        raw_value,
        created_at,
        source_topic,
        ingest_note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

/// Whether PostgreSQL's JSONB takes `text`: JSON whose strings decode (an
/// unpaired surrogate escape does not, in serde_json as in JSONB), without a
/// `\u0000` escape, which JSONB refuses.
fn json_document(text: &str) -> Result<(), String> {
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| format!("is not JSON ({e})"))?;
    if text.contains("\\u0000") {
        return Err("holds \\u0000, which a JSON document in PostgreSQL cannot".to_owned());
    }
    Ok(())
}

/// `--offsets`: the group starts where the original stopped reading.
async fn seed_offsets(args: &ImportLegacyArgs, legacy: &LegacyDb, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let Some(recorded) = legacy.offsets().await.context("cannot read the original's kafka_offsets")? else {
        anyhow::bail!("{} has no kafka_offsets table: the original recorded no positions", legacy.source());
    };
    anyhow::ensure!(
        !recorded.is_empty(),
        "{}'s kafka_offsets is empty: the original recorded no positions",
        legacy.source()
    );
    let positions: Vec<GroupPosition> = recorded
        .into_iter()
        .map(|p| GroupPosition { topic: p.topic, partition: p.partition, offset: p.offset })
        .collect();
    let kafka = args.kafka.clone();
    let force = args.force;
    let result = tokio::task::spawn_blocking(move || crate::kafka::commit_positions(&kafka, &positions, force))
        .await
        .context("the offsets task failed")?;
    let seeded = match result {
        Ok(seeded) => seeded,
        Err(e @ SeedError::AlreadyCommitted { .. }) => {
            writeln!(out, "refused: {e}")?;
            return Ok(ExitCode::FAILURE);
        }
        Err(SeedError::Kafka(e)) => return Err(e),
    };
    for replaced in &seeded.replaced {
        writeln!(out, "replaced {replaced}")?;
    }
    for c in &seeded.committed {
        let lost = c.lost();
        if lost > 0 {
            writeln!(
                out,
                "committed {} (the broker holds {}..{}: {lost} records the original had not read were deleted before \
                 the switch; the group starts at {})",
                c.position, c.low, c.high, c.low
            )?;
        } else {
            writeln!(out, "committed {} ({} records to read)", c.position, c.high - c.position.offset)?;
        }
    }
    for (position, why) in &seeded.skipped {
        writeln!(out, "skipped {position}: {why}")?;
    }
    writeln!(
        out,
        "group {:?}: {} positions committed, {} skipped",
        args.kafka.group_id,
        seeded.committed.len(),
        seeded.skipped.len()
    )?;
    // Nothing committed: the wrong broker or group, most likely.
    Ok(if seeded.committed.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The progress of an import: a bar on a terminal, a plain line every few
/// seconds otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    last_line: Instant,
    started: Instant,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{wide_bar} {pos}/{len} rows ({per_sec}, {eta} left) {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        let now = Instant::now();
        Progress { bar, total, last_line: now, started: now }
    }

    fn update(&mut self, counts: &Counts) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(counts.read);
                bar.set_message(format!("{} new", counts.imported));
            }
            None if self.last_line.elapsed() >= PLAIN_PROGRESS_EVERY => {
                self.last_line = Instant::now();
                let rate = counts.read as f64 / self.started.elapsed().as_secs_f64().max(0.001);
                eprintln!(
                    "import: {} of {} rows read, {} imported, {} already present ({rate:.0} rows/s)",
                    counts.read, self.total, counts.imported, counts.present
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(event: &str) -> LegacyRow {
        LegacyRow {
            notification_id: "7d0e5c5e-8f3b-4c52-9d1a-0f8d9f6b8a11".into(),
            customer_id: Some(String::new()),
            runner_id: None,
            order_id: Some("4242".into()),
            event: event.into(),
            status: Some("unknown".into()),
            created_at: chrono::NaiveDate::from_ymd_opt(2025, 4, 4)
                .and_then(|d| d.and_hms_micro_opt(10, 0, 0, 123_456)),
            source_topic: Some("order_events".into()),
            event_type: Some("order.created".into()),
            correlation_id: Some("unavailable".into()),
            source_service: Some("order-service".into()),
        }
    }

    #[test]
    fn placeholders_become_absent_and_say_so() {
        let row = import_row(&legacy(r#"{"topic": "order_events", "payload": {"order_id": "4242"}}"#));
        assert_eq!(row.fields.customer_id, None);
        assert_eq!(row.fields.status, None);
        assert_eq!(row.fields.correlation_id, None);
        assert_eq!(row.fields.order_id.as_deref(), Some("4242"));
        let note = row.ingest_note.unwrap();
        assert!(note.contains(r#"customer_id """#) && note.contains(r#"status "unknown""#), "{note}");
        assert_eq!(row.legacy_id, "7d0e5c5e-8f3b-4c52-9d1a-0f8d9f6b8a11");
        assert_eq!(row.created_at.to_rfc3339(), "2025-04-04T10:00:00.123456+00:00");
        assert!(row.document.is_some() && row.raw_value.is_none());
    }

    #[test]
    fn an_event_a_document_cannot_hold_is_kept_as_text() {
        for event in ["not json", r#"{"a": "x\u0000y"}"#, r#"{"a": "\ud800"}"#] {
            let row = import_row(&legacy(event));
            assert_eq!(row.document, None, "{event}");
            assert_eq!(row.raw_value.as_deref(), Some(event.as_bytes()));
            assert!(row.ingest_note.unwrap().contains("kept as text"));
        }
    }

    #[test]
    fn missing_times_and_topics() {
        let mut old = legacy(r#"{"topic": "payment_events"}"#);
        old.created_at = None;
        old.source_topic = None;
        let row = import_row(&old);
        assert_eq!(row.created_at, DateTime::<Utc>::UNIX_EPOCH);
        assert_eq!(row.source_topic, "payment_events");
        let mut api = legacy(r#"{"message": "hi"}"#);
        api.source_topic = Some("api".into());
        assert_eq!(import_row(&api).source_topic, "api");
    }
}
