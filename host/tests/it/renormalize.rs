//! `notification-host renormalize` rebuilds stored rows' fields with the
//! normalizers configured now, from the exact bytes the rows keep.

use clap::Parser;
use notification_host::config::{Cli, Command};
use notification_host::modules::Manifest;
use notification_host::modules::Normalizer;
use notification_host::record::Record;
use notification_host::storage::{Db, StoredRow};
use sqlx::PgPool;

use crate::support::{self, RecordExt};

/// A record with a key and a binary header on partition 1, timed by its offset.
fn record(topic: &str, offset: i64, value: &str) -> Record {
    support::record(topic, offset, value)
        .on_partition(1)
        .at(1_743_760_800_000 + offset)
        .keyed(b"k")
        .header("bin", &[0xff])
}

#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn renormalize_rebuilds_fields_with_the_modules_of_now(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let mut records: Vec<Record> = (0..3)
        .map(|i| {
            record(
                "payment_commands",
                i,
                &format!(r#"{{"type": "authorize_payment", "correlation_id": "s", "payload": {{"order_id": {i}, "customer": {{"clerkUserId": "user_{i}"}}}}}}"#),
            )
        })
        .collect();
    records.push(record("user_events", 0, r#"{"type": "user.x", "payload": {"user_id": "u"}}"#));
    let normalized = Normalizer::Builtin.normalize(&records);
    let rows: Vec<StoredRow> = records.into_iter().zip(normalized).map(|(r, n)| StoredRow::from_record(r, n)).collect();
    db.insert(&rows).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(crate::support::component("normalizer_campus_delivery"), dir.path().join("c.wasm")).unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        Manifest { fallback: true, ..Manifest::new("campus-delivery", "1.0.0", "c.wasm", &["*"]) }.to_toml().unwrap(),
    )
    .unwrap();
    let parse = |extra: &[&str]| {
        let mut argv = vec![
            "notification-host",
            "renormalize",
            "--normalizers-dir",
            dir.path().to_str().unwrap(),
            "--module-compiler",
            env!("CARGO_BIN_EXE_notification-host"),
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Renormalize(a)) => a,
            other => panic!("{other:?}"),
        }
    };

    let mut out = Vec::new();
    let dry =
        notification_host::cmd::renormalize::run(&parse(&["--topic", "payment_commands", "--dry-run"]), &db, &mut out)
            .await
            .unwrap();
    assert_eq!(dry, (3, 3));
    let before: Option<String> = sqlx::query_scalar(
        "SELECT customer_id FROM notifications WHERE kafka_offset = 1 AND source_topic = 'payment_commands'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(before, None, "a dry run writes nothing");

    let done = notification_host::cmd::renormalize::run(
        &parse(&["--topic", "payment_commands", "--from-offset", "1"]),
        &db,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(done, (2, 2));
    let rows: Vec<(i64, Option<String>, String)> = sqlx::query_as(
        "SELECT kafka_offset, customer_id, normalizer FROM notifications WHERE source_topic = 'payment_commands' ORDER BY kafka_offset",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (0, None, "default@1.1.0".to_owned()),
            (1, Some("user_1".to_owned()), "campus-delivery@1.0.0".to_owned()),
            (2, Some("user_2".to_owned()), "campus-delivery@1.0.0".to_owned()),
        ]
    );
    // The other topic was not touched; a second run changes nothing.
    let other: String = sqlx::query_scalar("SELECT normalizer FROM notifications WHERE source_topic = 'user_events'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(other, "default@1.1.0");
    let again = notification_host::cmd::renormalize::run(
        &parse(&["--topic", "payment_commands", "--from-offset", "1"]),
        &db,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(again, (2, 0));
    assert!(String::from_utf8(out).unwrap().contains("2 rows examined, 2 changed"));
}

/// A normalizer that now finds a 10,000-character id is stored whole; a new
/// value PostgreSQL refuses (a CHECK constraint stands for any refusal)
/// leaves that one row as it was, says so, and the others are updated.
#[sqlx::test(migrator = "crate::support::MIGRATOR")]
async fn renormalize_stores_long_ids_and_survives_a_refused_row(pool: PgPool) {
    let db = Db::from_pool(pool.clone());
    let long = "7".repeat(10_000);
    let values = [
        format!(r#"{{"type": "order.created", "correlation_id": "{long}", "payload": {{"order_id": "o-0"}}}}"#),
        r#"{"type": "order.created", "payload": {"order_id": "poison"}}"#.to_owned(),
        r#"{"type": "order.created", "payload": {"order_id": "o-2"}}"#.to_owned(),
    ];
    // Stored by an older normalizer that found nothing.
    let rows: Vec<StoredRow> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = notification_host::record::Normalized {
                fields: Default::default(),
                normalizer: "old@0.1.0".into(),
                error: None,
                notes: Vec::new(),
            };
            StoredRow::from_record(record("t", i as i64, v), n)
        })
        .collect();
    db.insert(&rows).await.unwrap();
    sqlx::query("ALTER TABLE notifications ADD CONSTRAINT no_poison CHECK (order_id IS DISTINCT FROM 'poison')")
        .execute(&pool)
        .await
        .unwrap();
    let args = match Cli::try_parse_from(["notification-host", "renormalize"]).unwrap().command {
        Some(Command::Renormalize(a)) => a,
        other => panic!("{other:?}"),
    };
    let mut out = Vec::new();
    let (examined, changed) = notification_host::cmd::renormalize::run(&args, &db, &mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!((examined, changed), (3, 2), "{out}");
    assert!(out.contains("no_poison") && out.contains("1 refused by PostgreSQL"), "{out}");
    let stored: Vec<(Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT order_id, correlation_id, normalizer FROM notifications ORDER BY kafka_offset")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(stored[0], (Some("o-0".into()), Some(long.clone()), "default@1.1.0".into()));
    assert_eq!(stored[1], (None, None, "old@0.1.0".into()));
    assert_eq!(stored[2].0.as_deref(), Some("o-2"));
    assert_eq!(db.for_correlation(&long, None, 1000).await.unwrap().len(), 1);
}
