//! The write path stores every record whatever PostgreSQL refuses, against a
//! real PostgreSQL: a refusal of any column ends in the last resort (exact
//! bytes, coordinates and a note), ids of any length are stored and found by
//! their hash indexes, no index covers an unbounded value, and a refusal that
//! is not about the record is an error, never a silent loop. Each holds for
//! both write methods: the binary `COPY` the pipeline uses and the `INSERT`
//! it falls back to.

use std::time::{Duration, Instant};

use notification_host::record::{Fields, Normalized, Record};
use notification_host::storage::{Connections, Db, Heard, StoredRow, WriteError, Written, stored_value};
use sqlx::{PgPool, Row};

use crate::support::{self, RecordExt};

/// The two ways a batch is written.
#[derive(Debug, Clone, Copy)]
enum Method {
    Copy,
    Insert,
}

const METHODS: [Method; 2] = [Method::Copy, Method::Insert];

async fn write(db: &Db, method: Method, rows: &[StoredRow]) -> Result<Written, WriteError> {
    match method {
        Method::Copy => db.copy(rows).await,
        Method::Insert => db.insert(rows).await,
    }
}

const T0: i64 = 1_743_760_800_000; // 2025-04-04T10:00:00Z

/// A record with a binary key and header, timed by its offset.
fn record(topic: &str, offset: i64, value: &[u8]) -> Record {
    support::record(topic, offset, value).at(T0 + offset).keyed(&[0xff, 0, b'k']).header("h", &[1, 2, 0xfe])
}

fn ordinary_fields(i: i64) -> Fields {
    Fields {
        customer_id: Some(format!("c-{i}")),
        runner_id: Some(format!("r-{i}")),
        order_id: Some(format!("o-{i}")),
        event_type: Some("order.created".into()),
        correlation_id: Some(format!("s-{i}")),
        source_service: Some("order-service".into()),
        status: Some("PENDING".into()),
    }
}

fn row(topic: &str, offset: i64, fields: Fields, error: Option<String>) -> StoredRow {
    let value = format!(
        r#"{{"type": "order.created", "payload": {{"order_id": "o-{offset}", "items": [{{"item_name": "Iced latte", "quantity": 2}}, {{"item_name": "Iced latte", "quantity": 1}}, {{"item_name": "Iced tea", "quantity": 2}}]}}}}"#
    );
    StoredRow::from_record(
        record(topic, offset, value.as_bytes()),
        Normalized { fields, normalizer: "default@1.0.0".into(), error, notes: Vec::new() },
    )
}

/// What the table holds for one record.
struct Stored {
    rows: i64,
    raw: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    headers: Option<String>,
    note: Option<String>,
    order_id: Option<String>,
}

async fn stored(pool: &PgPool, topic: &str, offset: i64) -> Stored {
    let r = sqlx::query(
        "SELECT count(*) OVER (), raw_value, kafka_key, kafka_headers::text, ingest_note, value_zstd, order_id \
         FROM notifications WHERE source_topic = $1 AND kafka_partition = 0 AND kafka_offset = $2",
    )
    .bind(topic)
    .bind(offset)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or_else(|| panic!("{topic}@{offset} is not stored"));
    let (raw, zstd): (Option<Vec<u8>>, Option<Vec<u8>>) = (r.get(1), r.get(5));
    Stored {
        rows: r.get(0),
        raw: stored_value(raw.as_deref(), zstd.as_deref()).unwrap().map(|v| v.into_owned()),
        key: r.get(2),
        headers: r.get(3),
        note: r.get(4),
        order_id: r.get(6),
    }
}

/// Each column a normalizer fills, refused by a CHECK constraint that stands
/// for any refusal the host cannot foresee: the poisoned record is stored
/// through the last resort with its exact value (compressed or not), and the
/// 99 records around it in the same batch are stored as they are.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_refusal_of_any_column_ends_in_the_last_resort(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let columns = [
        "customer_id",
        "runner_id",
        "order_id",
        "event_type",
        "correlation_id",
        "source_service",
        "status",
        "normalizer_error",
    ];
    for column in columns {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE notifications ADD CONSTRAINT refuse_{column} CHECK ({column} IS DISTINCT FROM 'poison')"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    for ((k, column), method) in columns.into_iter().enumerate().flat_map(|c| METHODS.map(|m| (c, m))) {
        let topic = format!("refuse-{column}-{method:?}");
        // Half the poisoned rows hold a compressed value.
        let poisoned = 36 + (k as i64 % 2);
        let mut rows: Vec<StoredRow> = (0..100).map(|i| row(&topic, i, ordinary_fields(i), None)).collect();
        // Every other value is stored compressed, as the pipeline does.
        for r in rows.iter_mut().step_by(2) {
            r.compress_value();
        }
        let target = &mut rows[poisoned as usize];
        match column {
            "customer_id" => target.fields.customer_id = Some("poison".into()),
            "runner_id" => target.fields.runner_id = Some("poison".into()),
            "order_id" => target.fields.order_id = Some("poison".into()),
            "event_type" => target.fields.event_type = Some("poison".into()),
            "correlation_id" => target.fields.correlation_id = Some("poison".into()),
            "source_service" => target.fields.source_service = Some("poison".into()),
            "status" => target.fields.status = Some("poison".into()),
            _ => target.normalizer_error = Some("poison".into()),
        }
        let values: Vec<Option<Vec<u8>>> = rows
            .iter()
            .map(|r| stored_value(r.raw_value.as_deref(), r.value_zstd.as_deref()).unwrap().map(|v| v.into_owned()))
            .collect();
        assert!(rows[0].value_zstd.is_some() && rows[1].raw_value.is_some(), "both forms are written");
        let started = Instant::now();
        let written = write(&db, method, &rows).await.unwrap_or_else(|e| panic!("{column}: {e}"));
        assert!(started.elapsed() < Duration::from_secs(5), "{column}: took {:?}", started.elapsed());
        assert_eq!(written.inserted, 100, "{column}");
        assert_eq!(written.reduced.len(), 1, "{column}: {:?}", written.reduced);
        assert_eq!(written.reduced[0].offset, poisoned, "{column}");

        for i in 0..100 {
            let s = stored(&pool, &topic, i).await;
            assert_eq!(s.rows, 1, "{column} {i}");
            assert_eq!(s.key.as_deref(), Some(&[0xff, 0, b'k'][..]), "{column} {i}");
            assert_eq!(s.headers.as_deref(), Some(r#"[{"key": "h", "value_b64": "AQL+"}]"#), "{column} {i}");
            if i == poisoned {
                assert_eq!(s.raw, values[i as usize], "{column}: exact bytes");
                let note = s.note.unwrap_or_default();
                assert!(note.contains(&format!("refuse_{column}")), "{column}: the note names the reason: {note}");
                assert!(note.contains("last resort") && note.contains("dropped: customer_id ("), "{column}: {note}");
                assert!(s.order_id.is_none(), "{column}: the last resort keeps no derived value");
            } else {
                assert!(s.note.is_none(), "{column} {i}: an ordinary record is untouched");
                assert_eq!(s.order_id, Some(format!("o-{i}")), "{column} {i}");
                assert_eq!(s.raw, values[i as usize], "{column} {i}: exact bytes");
            }
        }
    }
}

/// The reported stall, with the index design it came from: a B-tree on the
/// raw correlation id refuses a 4,000-character id of incompressible text.
/// The record is isolated and stored; the batch goes on.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn an_index_refusing_a_long_id_does_not_stop_the_batch(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    sqlx::query("CREATE INDEX raw_correlation ON notifications (correlation_id)").execute(&pool).await.unwrap();
    for method in METHODS {
        let topic = format!("raw-index-{method:?}");
        let mut rows: Vec<StoredRow> = (0..10).map(|i| row(&topic, i, ordinary_fields(i), None)).collect();
        rows[3].fields.correlation_id = Some(crate::support::incompressible(4000, 7));
        let written = write(&db, method, &rows).await.unwrap();
        assert_eq!(written.inserted, 10);
        assert_eq!(written.reduced.iter().map(|r| r.offset).collect::<Vec<_>>(), [3]);
        let note = stored(&pool, &topic, 3).await.note.unwrap();
        assert!(note.contains("index row size") && note.contains("correlation_id (4000 bytes)"), "{note}");
    }
}

/// With the shipped schema, ids of any length are stored whole and found by
/// the exact value.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn ids_of_any_length_are_stored_whole(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let long = |n| Fields {
        customer_id: Some(crate::support::incompressible(n, 7)),
        runner_id: Some(crate::support::incompressible(n, 7)),
        order_id: Some(crate::support::incompressible(n, 7)),
        event_type: Some(crate::support::incompressible(n, 7)),
        correlation_id: Some(crate::support::incompressible(n, 7)),
        source_service: Some(crate::support::incompressible(n, 7)),
        status: Some(crate::support::incompressible(n, 7)),
    };
    let rows: Vec<StoredRow> = [4000, 9000, 100_000]
        .into_iter()
        .enumerate()
        .map(|(i, n)| row("long-ids", i as i64, long(n), Some(crate::support::incompressible(n, 7))))
        .collect();
    let written = db.insert(&rows).await.unwrap();
    assert_eq!((written.inserted, written.reduced.len()), (3, 0), "{:?}", written.reduced);
    for r in &rows {
        let id = r.fields.correlation_id.clone().unwrap();
        let found = db.for_correlation(&id, None, 1000).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].correlation_id.as_ref(), Some(&id));
        let order = r.fields.order_id.clone().unwrap();
        let latest = db.latest_for_order(&order).await.unwrap().unwrap();
        assert_eq!(latest.order_id.as_ref(), Some(&order));
        assert_eq!(latest.ingest_note, None);
    }
}

/// A refusal the last resort cannot avoid (here a constraint on the exact
/// bytes) is not the record's fault: insert reports it at once, as an error
/// the writer retries and `/ready` shows, instead of looping or dropping.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_refused_last_resort_is_an_error_not_a_loop(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    sqlx::query("ALTER TABLE notifications ADD CONSTRAINT no_values CHECK (raw_value IS NULL)")
        .execute(&pool)
        .await
        .unwrap();
    for method in METHODS {
        let rows: Vec<StoredRow> = (0..50).map(|i| row("refuse-all", i, ordinary_fields(i), None)).collect();
        let started = Instant::now();
        let error = write(&db, method, &rows).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        match error {
            WriteError::LastResortRefused { topic, offset, reason, .. } => {
                assert_eq!((topic.as_str(), offset), ("refuse-all", 0));
                assert!(reason.contains("no_values"), "{reason}");
            }
            other => panic!("{method:?}: expected LastResortRefused, got {other}"),
        }
    }
}

/// The class of the reported bug, checked on the schema itself: no index on
/// the table (or any partition) holds a text value a producer controls, only
/// hashes of it. The topic name is the one exception: Kafka bounds it.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn no_index_holds_an_unbounded_value(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    db.ensure_partitions(
        chrono::NaiveDate::from_ymd_opt(2025, 4, 1).unwrap(),
        chrono::NaiveDate::from_ymd_opt(2025, 5, 1).unwrap(),
    )
    .await
    .unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT ic.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) \
         WHERE t.relname LIKE 'notifications%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(columns.len() > 10, "the query sees the indexes: {columns:?}");
    let unbounded: Vec<_> = columns
        .iter()
        .filter(|(_, column, ty)| ["text", "bytea", "jsonb"].contains(&ty.as_str()) && column != "source_topic")
        .collect();
    assert!(unbounded.is_empty(), "indexes on unbounded values: {unbounded:?}");
    let expressions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         WHERE t.relname = 'notifications' AND i.indexprs IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(expressions.len(), 5, "{expressions:?}");
    for e in expressions {
        // An id's hash, or a trace id: 32 hex digits by construction.
        assert!(e.contains("hashtextextended(") || e.contains("(notification_trace_id(kafka_headers)"), "{e}");
    }
}

/// Every column of a row written by `COPY` reads back exactly as the same
/// row written by `INSERT`: ids, both value forms, key bytes, headers as
/// JSON, record and stored times, notes.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn copy_stores_what_insert_stores(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let batch = |topic: &str| {
        let mut rows: Vec<StoredRow> = (0..40).map(|i| row(topic, i, ordinary_fields(i), None)).collect();
        for r in rows.iter_mut().step_by(2) {
            r.compress_value();
        }
        rows[5].fields = Fields::default();
        rows[6].normalizer_error = Some("trap: unreachable".into());
        rows[7].kafka_key = None;
        rows[7].kafka_headers = None;
        rows[8].kafka_timestamp = None;
        rows[9].raw_value = None; // a tombstone
        rows[10].ingest_note = Some("a note".into());
        rows
    };
    assert_eq!(db.insert(&batch("by-insert")).await.unwrap().inserted, 40);
    assert_eq!(db.copy(&batch("by-copy")).await.unwrap().inserted, 40);
    let columns = "customer_id, runner_id, order_id, value_zstd, status, created_at, event_type, correlation_id, \
                   source_service, kafka_partition, kafka_offset, kafka_key, kafka_headers::text, kafka_timestamp, \
                   raw_value, ingest_note, normalizer, normalizer_error, event::text";
    let read = |topic: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT row({columns})::text FROM notifications WHERE source_topic = $1 ORDER BY kafka_offset"
            )))
            .bind(topic)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let (inserted, copied) = (read("by-insert").await, read("by-copy").await);
    assert_eq!(inserted.len(), 40);
    for (i, (a, b)) in inserted.iter().zip(&copied).enumerate() {
        assert_eq!(a, b, "row {i}");
    }
}

/// A batch that repeats records already stored (a redelivery) is refused by
/// `COPY` as a whole and written by the insert path: each record once, the
/// new ones stored.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_redelivered_batch_is_stored_once_through_copy(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let rows: Vec<StoredRow> = (0..75).map(|i| row("redelivered", i, ordinary_fields(i), None)).collect();
    assert_eq!(db.copy(&rows[..50]).await.unwrap().inserted, 50);
    let again = db.copy(&rows[25..]).await.unwrap();
    assert_eq!((again.inserted, again.reduced.len()), (25, 0));
    let counts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT kafka_offset, count(*) FROM notifications WHERE source_topic = 'redelivered' \
         GROUP BY kafka_offset ORDER BY kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (0..75).map(|i| (i, 1)).collect::<Vec<_>>());
}

/// A batch written by `COPY` tells listeners which rows it stored, as the
/// insert path does: the live tail on every replica reads them from it.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn copy_notifies_the_rows_it_stored(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    // Ids drawn before are below the batch's range.
    db.copy(&[row("earlier", 0, ordinary_fields(0), None)]).await.unwrap();
    let mut listener = db.listen_stored().await.unwrap();
    let rows: Vec<StoredRow> = (0..30).map(|i| row("notified", i, ordinary_fields(i), None)).collect();
    db.copy(&rows).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), listener.next()).await.unwrap().unwrap();
    let Heard::Stored(batch) = heard else { panic!("expected a stored batch, heard {heard:?}") };
    assert_eq!(batch.rows, 30);
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE source_topic = 'notified' ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(ids.iter().all(|id| (batch.first_id..=batch.last_id).contains(id)), "{batch:?} {ids:?}");
    assert!(batch.last_id - batch.first_id <= 31, "the range is tight: {batch:?}");
    let found = db.stored_rows(&batch).await.unwrap();
    assert!(found.iter().filter(|r| r.source_topic == "notified").count() == 30, "{}", found.len());
}

/// The host's sessions run without JIT: PostgreSQL would otherwise compile
/// the timeline's plan over every month partition on each execution
/// (hundreds of milliseconds for a query that runs in a few).
#[tokio::test]
async fn the_hosts_sessions_run_without_jit() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/test sets it)");
    let db = Db::connect_lazy(
        &url,
        Connections { reads: 1, writers: 1, read_timeout: std::time::Duration::from_millis(1500) },
    )
    .unwrap();
    for (pool, jit) in db.session_setting("jit").await.unwrap() {
        assert_eq!(jit, "off", "{pool}");
    }
    // Reads, and reads only, run under the read time limit.
    let timeouts = db.session_setting("statement_timeout").await.unwrap();
    assert_eq!(timeouts.map(|(pool, t)| format!("{pool} {t}")), ["reads 1500ms", "writes 0", "admin 0"]);
    // Each pool names itself in pg_stat_activity (the runbook finds a
    // stalled writer by it).
    let names = db.session_setting("application_name").await.unwrap();
    assert_eq!(
        names.map(|(pool, n)| format!("{pool}: {n}")),
        ["reads: notification-host reads", "writes: notification-host writes", "admin: notification-host admin"]
    );
}

/// A write never depends on telling listeners about it. PostgreSQL refuses
/// to commit a transaction whose notifications do not fit its queue (a
/// listener that stopped reading fills it); here `pg_notify` fails every
/// time (a function of that name earlier in the search path stands for the
/// full queue), and every batch is stored all the same, by both methods,
/// with the failures counted.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_notification_that_cannot_be_sent_never_fails_a_write(pool: PgPool) {
    sqlx::query("CREATE SCHEMA blocker").execute(&pool).await.unwrap();
    sqlx::query(
        "CREATE FUNCTION blocker.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000'; END$$",
    )
    .execute(&pool)
    .await
    .unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" SET search_path = blocker, pg_catalog, public"
    )))
    .execute(&pool)
    .await
    .unwrap();
    let url = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    let db = Db::connect_lazy(&url, Connections::for_command()).unwrap();
    let path = db.session_setting("search_path").await.unwrap();
    assert!(path.iter().all(|(_, p)| p.starts_with("blocker")), "{path:?}");

    for (method, rows) in [
        (Method::Copy, (0..20).map(|i| row("quiet", i, ordinary_fields(i), None)).collect::<Vec<_>>()),
        (Method::Insert, (20..40).map(|i| row("quiet", i, ordinary_fields(i), None)).collect()),
    ] {
        let written = write(&db, method, &rows).await.unwrap();
        assert_eq!(written.inserted, 20, "{method:?}");
        assert!(written.notify_failures >= 1, "{method:?}: the failed notification is counted");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications WHERE source_topic = 'quiet'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 40);
}

/// A record dated an hour ahead is stored at the time it was stored, with
/// its claimed time kept and noted; a redelivery stores nothing, also when
/// it comes so late that the claimed time no longer looks ahead; and the
/// record never stays the order's latest once a later one arrives.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_record_dated_too_far_ahead_is_stored_once_and_never_pins_latest(pool: PgPool) {
    use chrono::{Duration as D, Utc};
    use notification_host::storage::TimeRule;
    let db = Db::from_pool(pool.clone());
    let now = Utc::now();
    let skewed = |topic: &str| {
        let mut r = record(topic, 7, br#"{"order_id": "o-skew", "type": "from.the.future"}"#);
        r.timestamp = Some((now + D::hours(1)).timestamp_millis());
        r
    };
    for (topic, method) in [("skew-copy", Method::Copy), ("skew-insert", Method::Insert)] {
        let at = |t| {
            StoredRow::from_record_at(
                skewed(topic),
                Normalized { fields: ordinary_fields(7), ..Normalized::default() },
                TimeRule::default(),
                t,
            )
        };
        let first = at(now);
        assert!(first.time_adjusted);
        assert_eq!(write(&db, method, std::slice::from_ref(&first)).await.unwrap().inserted, 1, "{method:?}");
        assert_eq!(write(&db, method, &[at(now)]).await.unwrap().inserted, 0, "{method:?}: redelivered");
        let late = at(now + D::hours(2));
        assert!(!late.time_adjusted, "two hours on, the claimed time is in the past");
        assert_eq!(write(&db, method, &[late]).await.unwrap().inserted, 0, "{method:?}: redelivered late");
        let (n, created, note): (i64, chrono::DateTime<Utc>, Option<String>) = sqlx::query_as(
            "SELECT count(*) OVER (), created_at, ingest_note FROM notifications WHERE source_topic = $1",
        )
        .bind(topic)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(n, 1, "{method:?}");
        assert!((created - now).num_seconds().abs() < 5, "{method:?}: stored at {created}, now {now}");
        assert!(note.unwrap().contains("ordered by when it was stored"));
    }
    // A record produced a second later is the order's latest.
    let mut later = record("skew-copy", 8, br#"{"order_id": "o-skew", "type": "now"}"#);
    later.timestamp = Some((now + D::seconds(1)).timestamp_millis());
    db.copy(&[StoredRow::from_record(later, Normalized { fields: ordinary_fields(7), ..Normalized::default() })])
        .await
        .unwrap();
    let latest = db.latest_for_order("o-7").await.unwrap().unwrap();
    assert_eq!((latest.source_topic.as_str(), latest.kafka_offset), ("skew-copy", Some(8)));
}

/// A small batch is written in a few milliseconds, not held back by the
/// operating system: a `COPY` sends its data and its end as separate
/// writes, and on a socket without `TCP_NODELAY` the second waits for the
/// server's delayed acknowledgement (40 ms on Linux), which once made every
/// write, and so every record's latency, 40 ms longer. The host's own
/// connections (`Db::connect_lazy`, TCP, as in production) are measured:
/// the median of 15 one-row batches.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn a_small_batch_is_not_held_back_by_the_socket(pool: PgPool) {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set (scripts/test sets it)");
    assert!(base.contains("@127.0.0.1:") || base.contains("@localhost:"), "a TCP address: {base}");
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
    let db =
        Db::connect_lazy(&url, Connections { reads: 1, writers: 1, read_timeout: Duration::from_secs(5) }).unwrap();
    let topic = format!("nodelay-{}", std::process::id());
    let mut took = Vec::new();
    for i in 0..16 {
        let started = Instant::now();
        let written = db.copy(&[row(&topic, i, ordinary_fields(i), None)]).await.unwrap();
        assert_eq!(written.inserted, 1);
        if i > 0 {
            took.push(started.elapsed());
        }
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(median < Duration::from_millis(20), "a one-row COPY takes {median:?} (median; all: {took:?})");
}
