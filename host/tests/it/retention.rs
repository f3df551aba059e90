//! Monthly partitions and retention against a real PostgreSQL: records far in
//! the past and future are stored (default partition), partitions created
//! later take over their month's rows, and a retention pass drops whole
//! expired partitions while live ones stay. A row expires when both its
//! record time and its stored time are past the cutoff, so a backfill of
//! old history is kept. Retention never holds up reads or writes: it gives
//! up on a lock it cannot get at once and tries again.

use chrono::{DateTime, NaiveDate, Utc};
use notification_host::config::DbConfig;
use notification_host::modules::Normalizer;
use notification_host::record::Record;
use notification_host::storage::{Db, StoredRow, TimeRule};
use sqlx::PgPool;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn store(db: &Db, offset: i64, ts: Option<DateTime<Utc>>) {
    store_at(db, offset, ts, Utc::now()).await
}

/// Stores the record as if it arrived at `now`.
async fn store_at(db: &Db, offset: i64, ts: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    let record = Record {
        topic: "t".into(),
        partition: 0,
        offset,
        timestamp: ts.map(|t| t.timestamp_millis()),
        key: None,
        headers: vec![],
        value: Some(format!(r#"{{"order_id": "o-{offset}"}}"#).into_bytes()),
    };
    let n = Normalizer::Builtin.normalize(std::slice::from_ref(&record)).pop().unwrap();
    db.insert(&[StoredRow::from_record_at(record, n, TimeRule::default(), now)]).await.unwrap();
}

async fn placement(pool: &PgPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT kafka_offset, tableoid::regclass::text FROM notifications ORDER BY kafka_offset")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn partitions_take_their_months_and_retention_drops_expired_ones(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let now = at("2026-11-26T12:00:00Z");
    store_at(&db, 1, Some(at("1990-01-01T00:00:00Z")), now).await; // far past
    store_at(&db, 2, Some(at("2200-06-01T00:00:00Z")), now).await; // far future: stored at `now`
    store_at(&db, 3, Some(at("2025-09-15T00:00:00Z")), now).await; // 14 months old
    store_at(&db, 4, Some(at("2026-11-20T00:00:00Z")), now).await; // this month
    store_at(&db, 5, None, now).await; // no timestamp
    assert!(
        placement(&pool).await.iter().all(|(_, p)| p == "notifications_default"),
        "everything fits the default partition"
    );

    // Partitions from September 2025 to three months ahead; their rows move in.
    let created = db
        .ensure_partitions(NaiveDate::from_ymd_opt(2025, 9, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 2, 1).unwrap())
        .await
        .unwrap();
    assert_eq!(created.len(), 18);
    assert_eq!(
        placement(&pool).await,
        vec![
            (1, "notifications_default".to_owned()),
            (2, "notifications_2026_11".to_owned()),
            (3, "notifications_2025_09".to_owned()),
            (4, "notifications_2026_11".to_owned()),
            (5, "notifications_default".to_owned()),
        ]
    );
    // A second pass creates nothing; redelivered records are still skipped.
    assert!(
        db.ensure_partitions(
            NaiveDate::from_ymd_opt(2025, 9, 1).unwrap(),
            NaiveDate::from_ymd_opt(2027, 2, 1).unwrap()
        )
        .await
        .unwrap()
        .is_empty()
    );
    // The far-future one is redelivered a day later, when its time would
    // be stored differently: it is still recognised.
    for (offset, ts) in [(3, Some(at("2025-09-15T00:00:00Z"))), (5, None), (2, Some(at("2200-06-01T00:00:00Z")))] {
        store_at(&db, offset, ts, now + chrono::Duration::days(1)).await;
    }
    assert_eq!(placement(&pool).await.len(), 5, "no duplicates across partitions");
    // The rows were stored long ago, as their times say: all but the two
    // without a usable time (stored "now", 2026-11-26) and one more record
    // of September 2025 that arrives in a backfill just now.
    sqlx::query("UPDATE notifications SET stored_at = created_at WHERE kafka_offset IN (1, 3, 4)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE notifications SET stored_at = $1 WHERE kafka_offset IN (2, 5)")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    store_at(&db, 6, Some(at("2025-09-20T00:00:00Z")), now).await;
    sqlx::query("UPDATE notifications SET stored_at = $1 WHERE kafka_offset = 6")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    // One more expired month, all of it stored long ago.
    store_at(&db, 7, Some(at("2025-10-03T00:00:00Z")), now).await;
    sqlx::query("UPDATE notifications SET stored_at = created_at WHERE kafka_offset = 7").execute(&pool).await.unwrap();

    // Retention: 365 days before 2026-11-26. A row goes once both its
    // record time and the time it was stored are before the cutoff.
    let config = DbConfig {
        database_url: None,
        schema: None,
        max_connections: 1,
        read_timeout: std::time::Duration::ZERO,
        retention_days: Some(365),
        partitions_ahead: 3,
        partition_history_months: 120,
        maintenance_interval: std::time::Duration::from_secs(3600),
    };
    notification_host::storage::maintenance(&db, &config, now).await.unwrap();
    let left: Vec<i64> = placement(&pool).await.into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        left,
        vec![2, 4, 5, 6],
        "the far-past row and the expired rows are gone; live rows and the backfill just stored stay"
    );
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'notifications'::regclass ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        partitions.contains(&"notifications_2025_09".to_owned()),
        "an expired month holding a row stored since the cutoff stays, without its expired rows: {partitions:?}"
    );
    assert!(!partitions.contains(&"notifications_2025_10".to_owned()), "an expired month is dropped: {partitions:?}");
    assert!(
        partitions.contains(&"notifications_2025_11".to_owned()),
        "the month holding the cutoff stays: {partitions:?}"
    );
    assert!(partitions.contains(&"notifications_2027_02".to_owned()), "{partitions:?}");
    // The API reads across partitions unchanged.
    assert_eq!(db.latest_for_order("o-4").await.unwrap().unwrap().kafka_offset, Some(4));
}

/// A new deployment consuming years of history: the write path creates each
/// month's partition before writing its rows, so history lands in monthly
/// partitions; records older than the window or without a timestamp go to
/// the default partition, one too far in the future is stored at the time
/// it arrived, and a partition is asked for once.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn history_lands_in_the_month_partitions_it_needs(pool: PgPool) {
    use notification_host::storage::{KnownPartitions, partition_window};
    let db = Db::from_pool(pool.clone());
    let now = at("2026-11-27T12:00:00Z");
    let window = partition_window(now, 24, None, 3);
    assert_eq!(window, (NaiveDate::from_ymd_opt(2024, 11, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 2, 1).unwrap()));
    // A retention cutoff later than the history bound narrows the window.
    assert_eq!(partition_window(now, 24, Some(90), 3).0, NaiveDate::from_ymd_opt(2026, 8, 1).unwrap());

    let dated = [
        (0, Some(at("2025-01-15T10:00:00Z"))),
        (1, Some(at("2025-01-31T23:59:59Z"))),
        (2, Some(at("2025-06-01T00:00:00Z"))),
        (3, Some(at("2026-11-27T11:00:00Z"))),
        (4, Some(at("2019-03-01T00:00:00Z"))), // before the window
        (5, Some(at("2200-06-01T00:00:00Z"))), // far future: stored at `now`
        (6, None),                             // no timestamp: the epoch
    ];
    let rows: Vec<StoredRow> = dated
        .iter()
        .map(|(offset, ts)| {
            let record = Record {
                topic: "history".into(),
                partition: 0,
                offset: *offset,
                timestamp: ts.map(|t| t.timestamp_millis()),
                key: None,
                headers: vec![],
                value: Some(format!(r#"{{"order_id": "h-{offset}"}}"#).into_bytes()),
            };
            let n = Normalizer::Builtin.normalize(std::slice::from_ref(&record)).pop().unwrap();
            StoredRow::from_record_at(record, n, TimeRule::default(), now)
        })
        .collect();
    let mut known = KnownPartitions::default();
    let created = db.ensure_partitions_for(&mut known, &rows, window).await.unwrap();
    assert_eq!(created, ["notifications_2025_01", "notifications_2025_06", "notifications_2026_11"]);
    db.insert(&rows).await.unwrap();
    let placed: Vec<(i64, String)> = placement(&pool).await;
    let want: Vec<(i64, String)> = [
        (0, "notifications_2025_01"),
        (1, "notifications_2025_01"),
        (2, "notifications_2025_06"),
        (3, "notifications_2026_11"),
        (4, "notifications_default"),
        (5, "notifications_2026_11"),
        (6, "notifications_default"),
    ]
    .iter()
    .map(|(o, t)| (*o, (*t).to_owned()))
    .collect();
    assert_eq!(placed, want);
    // Known months are not asked for again.
    assert!(db.ensure_partitions_for(&mut known, &rows, window).await.unwrap().is_empty());
}

/// Retention behind a long read: dropping an expired month needs a lock
/// that would queue every later read and write behind the read. It gives
/// up waiting instead, writes go on, and a later run drops the month.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn retention_behind_a_long_read_never_holds_up_writes(pool: PgPool) {
    use std::time::{Duration, Instant};
    let db = Db::from_pool(pool.clone());
    let now = Utc::now();
    let old = now - chrono::Duration::days(500);
    db.ensure_partitions(old.date_naive(), now.date_naive()).await.unwrap();
    store(&db, 1, Some(old)).await;
    sqlx::query("UPDATE notifications SET stored_at = created_at").execute(&pool).await.unwrap();
    let expired = format!("notifications_{}", old.format("%Y_%m"));

    // A reader holds its snapshot of every partition open.
    let mut reader = pool.acquire().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *reader).await.unwrap();
    sqlx::query("SELECT count(*) FROM notifications").execute(&mut *reader).await.unwrap();

    let config = DbConfig {
        database_url: None,
        schema: None,
        max_connections: 1,
        read_timeout: Duration::ZERO,
        retention_days: Some(30),
        partitions_ahead: 1,
        partition_history_months: 120,
        maintenance_interval: Duration::from_secs(3600),
    };
    let maintenance = {
        let (db, config) = (db.clone(), config.clone());
        tokio::spawn(async move { notification_host::storage::maintenance(&db, &config, now).await.unwrap() })
    };
    // Writes during the run: each is stored at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    for offset in 10..30 {
        store(&db, offset, Some(now)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "20 writes behind a retention run took {took:?}");
    let lock_timeouts = tokio::time::timeout(Duration::from_secs(30), maintenance).await.unwrap().unwrap();
    assert!(lock_timeouts > 0, "the drop gave up waiting for its lock");
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&expired).fetch_one(&pool).await.unwrap();
    assert!(exists, "the month stays while the read holds it");

    sqlx::query("COMMIT").execute(&mut *reader).await.unwrap();
    drop(reader);
    assert_eq!(notification_host::storage::maintenance(&db, &config, now).await.unwrap(), 0);
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(&expired).fetch_one(&pool).await.unwrap();
    assert!(!exists, "the next run drops it");
}
