//! The cut-over from the original service, end to end, as the book's
//! runbook (`docs/src/operate/cutover.md`) does it: the real host started on
//! the original's database, `import-legacy` bringing its 10,000 rows over
//! with their ids (twice: still 10,000; interrupted: it continues),
//! `compare-legacy` finding no difference but the documented ones (and the
//! one the original made since), `import-legacy --offsets` starting the
//! group where the original stopped reading, and the original's tables
//! untouched throughout, for a roll back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use notification_e2e::legacy::*;
use notification_e2e::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

const ROWS: u32 = 10_000;

/// Rows in the host's own schema.
async fn host_rows(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT legacy_id) FROM notification_host.notifications")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn ids_of(body: &str) -> Vec<String> {
    let rows: Vec<Value> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    rows.iter().map(|r| r["notificationId"].as_str().unwrap_or_else(|| panic!("{r}")).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_starts_on_the_original_database_and_takes_over_as_the_runbook_says() {
    let (url, pool) = fresh_database("legacy").await;
    original_database(&pool, ROWS).await;
    // A topic the original consumed: it read the first three of its records.
    let topic = unique("legacy_switch");
    Kafka::shared().create_topic(&topic, 1).await;
    let producer = Kafka::shared().unbatched_producer();
    for i in 0..5 {
        let value = format!(r#"{{"type": "order.status_updated", "payload": {{"order_id": "order-3", "n": {i}}}}}"#);
        produce(&producer, &Out::new(&topic, value)).await;
    }
    original_offsets(&pool, &[(&topic, 0, 3), ("order_events", 0, 2_500), ("payment_events", 0, 2_500)]).await;

    // 0. The host on the original's database, serving only.
    let group = unique("group");
    let options = HostOptions {
        group_id: group.clone(),
        env: vec![("API_COMPAT".into(), "original".into()), ("ROLE".into(), "api".into())],
        ..HostOptions::new(&url, &topic)
    };
    let mut host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let log = host.log_text();
    let chosen = log.lines().find(|l| l.contains("Chose the schema of the host's tables")).unwrap_or_default();
    assert!(
        chosen.contains("notification_host") && chosen.contains("public.notifications is the original service's table"),
        "the log names the schema and why: {log}"
    );
    let check = host_command(&["check"], &[("DATABASE_URL", &url), ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap_servers())]);
    assert!(
        text(&check).contains(
            "database schema: notification_host: it holds the host's migrations; the original service's tables in \
             public stay untouched"
        ),
        "{}",
        text(&check)
    );

    // 1. Dual run: the rows, twice.
    let untouched = original_snapshot(&pool).await;
    let env = [("DATABASE_URL", url.as_str())];
    let started = Instant::now();
    let first = host_command(&["import-legacy", "--from", &url], &env);
    let took = started.elapsed();
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("read 10000, imported 10000, already present 0"), "{}", text(&first));
    eprintln!("imported {ROWS} rows in {took:?} ({:.0} rows/s)", f64::from(ROWS) / took.as_secs_f64());
    let second = host_command(&["import-legacy", "--from", &url], &env);
    assert!(text(&second).contains("read 10000, imported 0, already present 10000"), "{}", text(&second));
    assert_eq!(host_rows(&pool).await, (10_000, 10_000), "still 10,000 rows, each once");
    assert_eq!(original_snapshot(&pool).await, untouched, "the original's tables are untouched");

    // Every order answers every one of its rows with the original's id,
    // and its latest as the original did.
    let orders = original_orders(&pool).await;
    assert!(orders.len() > 1_400, "{}", orders.len());
    for (order, (ids, latest)) in &orders {
        let (status, body) = http_get(host.http, &format!("/order/{order}")).expect("the host answers");
        assert_eq!(status, 200, "{order}: {body}");
        let answered: BTreeSet<String> = ids_of(&body).into_iter().collect();
        assert_eq!(&answered, ids, "order {order}");
        let (status, body) = http_get(host.http, &format!("/order/{order}/latest")).expect("the host answers");
        assert_eq!(status, 200, "{order}: {body}");
        let id: Value = serde_json::from_str(&body).unwrap();
        assert!(latest.contains(id["notificationId"].as_str().unwrap()), "order {order}: {body} not in {latest:?}");
    }

    // 2. Compare: nothing but the documented differences.
    let api = format!("http://{}", host.http);
    let compare = host_command(&["compare-legacy", "--from", &url, "--api", &api, "--all"], &[]);
    assert!(compare.status.success(), "{}", text(&compare));
    assert!(text(&compare).contains(", 0 differing"), "{}", text(&compare));
    assert!(text(&compare).contains("documented: a placeholder answered as null"), "{}", text(&compare));

    // The original goes on during the dual run: the comparison sees its new
    // row, and importing again brings it.
    sqlx::query(
        "INSERT INTO notifications VALUES ('0b5e3a9e-1d4f-4e0b-9a56-000000000001', 'user_1', NULL, 'order-3', \
         '{\"message\": \"late\"}', 'sent', '2026-01-01 00:00:00', 'api', 'notification.manual', 'c-late', \
         'notification-service-api')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let untouched = original_snapshot(&pool).await;
    let compare = host_command(&["compare-legacy", "--from", &url, "--api", &api, "--sample", "5000"], &[]);
    assert_eq!(compare.status.code(), Some(1), "{}", text(&compare));
    assert!(
        text(&compare).contains("order order-3: row 0b5e3a9e-1d4f-4e0b-9a56-000000000001 is missing from the host"),
        "{}",
        text(&compare)
    );
    assert!(text(&compare).contains("order order-3: latest: original 0b5e3a9e"), "{}", text(&compare));

    // 3. Switch (the original stopped): the last rows, the group at its
    // positions, then consume.
    let third = host_command(&["import-legacy", "--from", &url], &env);
    assert!(text(&third).contains("read 10001, imported 1, already present 10000"), "{}", text(&third));
    let kafka_env = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers()),
        ("KAFKA_GROUP_ID", group.clone()),
        ("TOPIC_INCLUDE", topic.clone()),
    ];
    let kafka_env: Vec<(&str, &str)> = kafka_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let seeded = host_command(&["import-legacy", "--from", &url, "--offsets"], &kafka_env);
    assert!(seeded.status.success(), "{}", text(&seeded));
    assert!(text(&seeded).contains(&format!("committed {topic}[0]@3 (2 records to read)")), "{}", text(&seeded));
    host.terminate(Duration::from_secs(30));
    let options =
        HostOptions { env: vec![("API_COMPAT".into(), "original".into()), ("ROLE".into(), "all".into())], ..options };
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let (live, n) = host_rows_of(&pool, &topic, 2).await;
    assert_eq!((live, n), ([(0, 3), (0, 4)].into(), 2), "exactly the records the original had not read");

    // The host now holds order-3's new records too: differences, unless
    // the comparison is told to expect rows of the host's own.
    let api = format!("http://{}", host.http);
    let compare = host_command(&["compare-legacy", "--from", &url, "--api", &api, "--all"], &[]);
    assert_eq!(compare.status.code(), Some(1), "{}", text(&compare));
    assert!(text(&compare).contains("order order-3: 2 rows only in the host"), "{}", text(&compare));
    let compare = host_command(&["compare-legacy", "--from", &url, "--api", &api, "--all", "--allow-host-rows"], &[]);
    assert!(compare.status.success(), "{}", text(&compare));
    assert!(text(&compare).contains("documented: rows the host stored itself: 3"), "{}", text(&compare));

    // 4. Roll back: the original's tables are as it left them.
    assert_eq!(original_snapshot(&pool).await, untouched, "the original's tables are untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_import_continues_where_it_stopped() {
    let (url, pool) = fresh_database("legacyresume").await;
    original_database(&pool, ROWS).await;
    let env = [("DATABASE_URL", url.as_str())];
    // The host's tables first, so that the import's first batch comes soon.
    let migrate = host_command(&["migrate"], &env);
    assert!(migrate.status.success(), "{}", text(&migrate));

    let mut import = std::process::Command::new(host_binary())
        .env_clear()
        .env("DATABASE_URL", &url)
        .args(["import-legacy", "--from", &url, "--batch-size", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once a batch is committed, hold the progress row: the next batch
    // waits inside its transaction, and dies there.
    let start = Instant::now();
    loop {
        let after: Option<Option<String>> =
            sqlx::query_scalar("SELECT after_id FROM notification_host.legacy_import_progress")
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
        if matches!(after, Some(Some(_))) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no batch committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut hold = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM notification_host.legacy_import_progress FOR UPDATE").execute(&mut *hold).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    import.kill().unwrap();
    let killed = import.wait_with_output().unwrap();
    hold.rollback().await.unwrap();
    assert!(!killed.status.success(), "the import was still running: {}", text(&killed));

    let (stored, _) = host_rows(&pool).await;
    assert!(stored > 0 && stored < i64::from(ROWS), "{stored} rows stored before the interruption");
    let (read_before, finished): (i64, bool) =
        sqlx::query_as("SELECT rows_read, finished_at IS NOT NULL FROM notification_host.legacy_import_progress")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!finished);
    assert_eq!(read_before, stored, "the progress is that of the committed batches");

    let resumed = host_command(&["import-legacy", "--from", &url], &env);
    let out = text(&resumed);
    assert!(resumed.status.success(), "{out}");
    assert!(out.contains("resuming an interrupted import after row"), "{out}");
    let rest = i64::from(ROWS) - stored;
    assert!(out.contains(&format!("read {rest}, imported {rest}, already present 0")), "{out}");
    assert_eq!(host_rows(&pool).await, (10_000, 10_000));
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_from_the_original_start_the_group_where_it_stopped_reading() {
    let (url, pool) = fresh_database("legacyoffsets").await;
    original_database(&pool, 10).await;
    let topic = unique("legacy_offsets");
    Kafka::shared().create_topic(&topic, 2).await;
    let producer = Kafka::shared().unbatched_producer();
    for partition in 0..2 {
        for i in 0..10 {
            let value = format!(r#"{{"type": "order.status_updated", "payload": {{"order_id": "p{partition}-{i}"}}}}"#);
            produce(&producer, &Out { partition: Some(partition), ..Out::new(&topic, value) }).await;
        }
    }
    // The original read partition 0 up to 4 and partition 1 up to 7; it
    // also kept a topic this broker does not have.
    original_offsets(&pool, &[(&topic, 0, 4), (&topic, 1, 7), ("retired_events", 0, 3)]).await;

    let group = unique("group");
    let env = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers()),
        ("KAFKA_GROUP_ID", group.clone()),
        ("TOPIC_INCLUDE", topic.clone()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let seeded = host_command(&["import-legacy", "--from", &url, "--offsets"], &env);
    let out = text(&seeded);
    assert!(seeded.status.success(), "{out}");
    assert!(out.contains(&format!("committed {topic}[0]@4 (6 records to read)")), "{out}");
    assert!(out.contains(&format!("committed {topic}[1]@7 (3 records to read)")), "{out}");
    assert!(out.contains("skipped retired_events[0]@3: the broker has no such topic"), "{out}");

    // The broker holds the original's positions as the group's.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers())
        .set("group.id", &group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    tpl.add_partition(&topic, 1);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let offsets: Vec<(i32, Offset)> = committed.elements().iter().map(|e| (e.partition(), e.offset())).collect();
    assert_eq!(offsets, [(0, Offset::Offset(4)), (1, Offset::Offset(7))]);
    drop(consumer);

    // A group that has committed offsets is not moved unless asked.
    let again = host_command(&["import-legacy", "--from", &url, "--offsets"], &env);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("already has committed offsets"), "{}", text(&again));
    let forced = host_command(&["import-legacy", "--from", &url, "--offsets", "--force"], &env);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(text(&forced).contains(&format!("replaced {topic}[0]@4")), "{}", text(&forced));

    // The host reads exactly what the original had not: no record twice,
    // none skipped.
    let host = Host::start(&HostOptions { group_id: group.clone(), ..HostOptions::new(&url, &topic) });
    host.wait_ready(Duration::from_secs(60));
    let expected: BTreeSet<(i32, i64)> = (4..10).map(|o| (0, o)).chain((7..10).map(|o| (1, o))).collect();
    let (stored, n) = host_rows_of(&pool, &topic, expected.len()).await;
    assert_eq!(stored, expected, "{}", host.log_text());
    assert_eq!(n, 9);
}
