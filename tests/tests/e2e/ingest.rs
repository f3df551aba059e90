//! End to end: records of every shape on many topics reach PostgreSQL exactly
//! once, with their exact bytes and the right fields.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use notification_e2e::*;
use notification_host::samples;
use sqlx::Row;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/default.jsonl");

struct Expect {
    value: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    timestamp: Option<i64>,
    fields: Option<BTreeMap<String, Option<String>>>,
    /// Whether `event` must hold the JSON document.
    json: Option<bool>,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_topic_every_shape_stored_exactly_once() {
    let prefix = unique("ing");
    let (db_url, pool) = fresh_database("ingest").await;
    let topics = [
        (format!("{prefix}-order-events"), 3),
        (format!("{prefix}_order_events"), 2),
        (format!("{prefix}_payment_events"), 1),
        (format!("{prefix}-escrow-events"), 2),
        (format!("{prefix}_user_commands"), 1),
        (format!("{prefix}-bad-values"), 1),
    ];
    for (t, p) in &topics {
        Kafka::shared().create_topic(t, *p).await;
    }
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));

    let producer = Kafka::shared().producer();
    let mut expected: BTreeMap<Coordinates, Expect> = BTreeMap::new();
    let golden: Vec<samples::Sample> =
        std::fs::read_to_string(SAMPLES).unwrap().lines().map(|l| samples::parse_line(l).unwrap()).collect();
    // The golden samples, spread over the first five topics.
    for (i, sample) in golden.iter().enumerate() {
        let (topic, _) = &topics[i % 5];
        let out = Out {
            topic: topic.clone(),
            partition: None,
            key: sample.record.key.clone(),
            value: sample.record.value.clone(),
            headers: sample.record.headers.iter().map(|h| (h.key.clone().into_bytes(), h.value.clone())).collect(),
            timestamp: Some(1_743_760_800_000 + i as i64),
        };
        let c = produce(&producer, &out).await;
        expected.insert(
            c,
            Expect {
                value: out.value,
                key: out.key,
                timestamp: out.timestamp,
                fields: sample.expected.clone(),
                json: None,
            },
        );
    }
    for (out, json) in hostile_values(&topics[5].0) {
        let c = produce(&producer, &out).await;
        expected.insert(c, Expect { value: out.value, key: out.key, timestamp: out.timestamp, fields: None, json });
    }
    // A topic created while the host runs is picked up.
    let late = format!("{prefix}_late_topic");
    Kafka::shared().create_topic(&late, 2).await;
    for i in 0..20 {
        let out = Out { partition: Some(i % 2), ..Out::new(&late, format!(r#"{{"order_id": "late-{i}"}}"#)) };
        let c = produce(&producer, &out).await;
        expected.insert(c, Expect { value: out.value, key: None, timestamp: None, fields: None, json: Some(true) });
    }

    let rows = wait_for_rows(&pool, &prefix, expected.len(), Duration::from_secs(90)).await;
    let stored: BTreeSet<Coordinates> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), stored.len(), "duplicate rows");
    let produced: BTreeSet<Coordinates> = expected.keys().cloned().collect();
    assert_eq!(stored, produced, "stored coordinates differ from produced; host log:\n{}", host.log_text());

    let db_rows = sqlx::query(
        "SELECT source_topic, kafka_partition, kafka_offset, raw_value, kafka_key, \
         (extract(epoch from kafka_timestamp) * 1000)::int8, \
         created_at = kafka_timestamp OR (kafka_timestamp > stored_at + interval '10 minutes' \
           AND abs(extract(epoch from created_at - stored_at)) < 60 AND ingest_note LIKE '%after it was stored; ordered by when it was stored%'), \
         notification_id, \
         ingest_note, normalizer, customer_id, runner_id, order_id, event_type, correlation_id, source_service, status, \
         kafka_headers::text, value_zstd FROM notifications WHERE starts_with(source_topic, $1)",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    for row in &db_rows {
        let c = Coordinates { topic: row.get(0), partition: row.get(1), offset: row.get(2) };
        let e = &expected[&c];
        let (raw, zstd): (Option<Vec<u8>>, Option<Vec<u8>>) = (row.get(3), row.get(18));
        let value = notification_host::storage::stored_value(raw.as_deref(), zstd.as_deref()).unwrap();
        assert_eq!(value.as_deref(), e.value.as_deref(), "exact bytes of {c:?}");
        let key: Option<Vec<u8>> = row.get(4);
        assert_eq!(key, e.key, "key of {c:?}");
        if let Some(ts) = e.timestamp {
            assert_eq!(row.get::<Option<i64>, _>(5), Some(ts), "timestamp of {c:?}");
            assert!(
                row.get::<Option<bool>, _>(6).unwrap_or(false),
                "created_at is the record time (or, dated too far ahead, when it was stored) for {c:?}"
            );
        }
        // What the API answers as the record's document.
        let id: i64 = row.get(7);
        let note: Option<String> = row.get(8);
        if let Some(json) = e.json {
            let (status, body) = http_get(host.http, &format!("/notifications/{id}")).unwrap();
            assert_eq!(status, 200, "{c:?}");
            let event = serde_json::from_str::<serde_json::Value>(&body).unwrap()["event"].clone();
            if json {
                assert!(event.is_object(), "{c:?} is answered as its JSON document: {event:.200}");
            } else {
                assert!(event.is_string(), "{c:?} is answered as text: {event:.200}");
                assert!(note.is_some(), "{c:?} should say why it is not a JSON document");
            }
        }
        assert_eq!(row.get::<Option<String>, _>(9).as_deref(), Some("default@1.1.0"));
        if let Some(fields) = &e.fields {
            for (i, name) in samples::FIELD_NAMES.iter().enumerate() {
                if let Some(want) = fields.get(*name) {
                    let got: Option<String> = row.get(10 + i);
                    let want = want.as_ref().map(|w| w.replace('\0', "\u{FFFD}"));
                    assert_eq!(got, want, "{name} of {c:?}");
                }
            }
        }
    }
    // History lands in its month's partition, created by the write path
    // before the rows were written; the far-future record in the default one.
    let placed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT tableoid::regclass::text, count(*) FROM notifications WHERE starts_with(source_topic, $1) GROUP BY 1",
    )
    .bind(&prefix)
    .fetch_all(&pool)
    .await
    .unwrap();
    let in_april_2025 = placed.iter().find(|(t, _)| t == "notifications_2025_04").map_or(0, |(_, n)| *n);
    assert!(in_april_2025 >= golden.len() as i64, "2025-04 records outside their partition: {placed:?}");
    // Headers keep order, repeats, nulls and binary values.
    let meta = db_rows.iter().find(|r| r.get::<Option<Vec<u8>>, _>(4) == Some(vec![0xff, 0x00, b'k'])).unwrap();
    assert_eq!(
        meta.get::<String, _>(17),
        r#"[{"key": "producer", "value": "payment-service"}, {"key": "producer", "value": null}, {"key": "bin", "value_b64": "3q0A"}, {"key": "�n�", "value": "after", "key_b64": "/27+"}, {"key": "last", "value": null}]"#
    );
    // Where the batches spent their time: every stage observed each batch.
    let (status, metrics) = http_get(host.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    let count = |stage: &str| -> f64 {
        let line = format!("notification_pipeline_stage_seconds_count{{stage=\"{stage}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&line)?.parse().ok()).unwrap_or(0.0)
    };
    for stage in notification_host::metrics::STAGES {
        assert!(count(stage) >= 1.0, "no batch observed in stage {stage}");
    }
    assert!(count("write") >= count("batching") - 1.0, "batching {} write {}", count("batching"), count("write"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_writes_what_it_holds_and_exits_promptly() {
    let prefix = unique("term");
    let (db_url, pool) = fresh_database("term").await;
    let topic = format!("{prefix}-events");
    Kafka::shared().create_topic(&topic, 2).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    // A long linger: once a batch is in flight, the next one fills until
    // shutdown flushes it.
    options.env.push(("BATCH_LINGER".into(), "60s".into()));
    let mut host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    // The table is locked: the first batch waits in the writer, the rest in
    // the poll loop, so at SIGTERM the host holds every record unwritten.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let producer = Kafka::shared().producer();
    for i in 0..50 {
        produce(&producer, &Out::new(&topic, format!(r#"{{"order_id": "t-{i}"}}"#))).await;
    }
    let started = std::time::Instant::now();
    while host.metric("notification_records_consumed_total").unwrap_or_default() < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing reached the writer; log:\n{}", host.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(host.metric("notification_records_stored_total"), Some(0.0), "the lock holds every write");
    let pid = host.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_secs(1)).await;
    lock.commit().await.unwrap();
    let took = host.terminate(Duration::from_secs(25));
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    assert_eq!(stored(&pool, &prefix).await.len(), 50, "log:\n{}", host.log_text());

    // Offsets were committed: a restart in the same group stores nothing new
    // and finds nothing to redo.
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(stored(&pool, &prefix).await.len(), 50);
    // The unique key would hide a lost commit; the host's own counter does
    // not: after a clean shutdown nothing is received twice.
    assert_eq!(host.redelivered(), 0, "records were redelivered after a clean shutdown; log:\n{}", host.log_text());
}

fn run_host(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out =
        std::process::Command::new(host_binary()).env_clear().args(args).envs(env.iter().copied()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_configuration_fails_at_start_with_a_clear_line() {
    let (code, err) = run_host(&[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL is not set"), "{err}");

    let (code, err) = run_host(&[], &[("DATABASE_URL", "mysql://nope")]);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL is not a valid PostgreSQL connection URL"), "{err}");

    let (code, err) =
        run_host(&[], &[("DATABASE_URL", "postgres://u@127.0.0.1:1/db"), ("KAFKA_OPTIONS", "no.such.property=1")]);
    assert_eq!(code, 2);
    assert!(err.contains("failed to create the Kafka consumer"), "{err}");
    assert!(err.contains("no.such.property"), "{err}");

    let (code, err) = run_host(&[], &[("BATCH_LINGER", "soon")]);
    assert_eq!(code, 2);
    assert!(err.lines().next().unwrap_or_default().contains("BATCH_LINGER") || err.contains("--batch-linger"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_promptly_even_when_the_broker_is_gone() {
    let tansu = std::env::var("TANSU_BIN")
        .expect("TANSU_BIN is not set: this test runs a broker of its own that it kills (scripts/test sets it)");
    let addr = free_addr();
    let url = format!("tcp://{addr}");
    let mut broker = std::process::Command::new(tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "private broker did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (db_url, _pool) = fresh_database("gone").await;
    let prefix = unique("gone");
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), addr.to_string()));
    let mut host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    broker.kill().unwrap();
    broker.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let took = host.terminate(Duration::from_secs(40));
    assert!(took < Duration::from_secs(30), "shutdown took {took:?} with the broker gone");
}

#[test]
fn check_reports_what_is_wrong() {
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(host_binary())
            .env_clear()
            .arg("check")
            .env("RUST_LOG", "off")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let servers = bootstrap_servers();
    let db = admin_database_url();
    let (code, out) = run(&[("DATABASE_URL", &db), ("KAFKA_BOOTSTRAP_SERVERS", &servers)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok   database: answers") && out.contains("ok   broker:"), "{out}");
    assert!(out.contains("ok   module store: "), "{out}");
    let (code, out) =
        run(&[("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"), ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL database") && out.contains("FAIL broker"), "{out}");
}

/// The reported stall, through the real binary and broker: records whose
/// ids are kilobytes of incompressible text, in every field the default
/// rules derive, are stored whole, and an ordinary record produced after
/// them on another topic is stored within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn kilobytes_long_ids_are_stored_and_stop_nothing() {
    let prefix = unique("long");
    let (db_url, pool) = fresh_database("long").await;
    let (hostile, ordinary) = (format!("{prefix}-hostile"), format!("{prefix}-ordinary"));
    Kafka::shared().create_topic(&hostile, 1).await;
    Kafka::shared().create_topic(&ordinary, 1).await;
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));
    let producer = Kafka::shared().producer();

    let saga = incompressible(4000, 1);
    let mut values = vec![serde_json::json!({"type": "t", "correlation_id": saga})];
    for (i, field) in ["order_id", "customer_id", "runner_id", "status"].into_iter().enumerate() {
        values.push(serde_json::json!({"type": "t", "payload": {field: incompressible(9000, 10 + i as u64)}}));
    }
    values.push(serde_json::json!({"type": incompressible(9000, 20)}));
    values.push(serde_json::json!({"type": "t", "source": incompressible(9000, 21)}));
    for v in &values {
        produce(&producer, &Out::new(&hostile, v.to_string())).await;
    }
    let started = std::time::Instant::now();
    produce(&producer, &Out::new(&ordinary, r#"{"type": "order.created", "payload": {"order_id": "o-1"}}"#)).await;
    while stored(&pool, &ordinary).await.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(15), "the ordinary record waits; log:\n{}", host.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the ordinary record was stored {:?} after it was produced", started.elapsed());
    let rows = wait_for_rows(&pool, &prefix, values.len() + 1, Duration::from_secs(30)).await;
    assert_eq!(rows.len(), values.len() + 1, "log:\n{}", host.log_text());

    // Every id is stored whole, and no row needed a reduced form.
    let lengths: Vec<(i64, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT kafka_offset, greatest(length(correlation_id), length(order_id), length(customer_id), \
         length(runner_id), length(status), length(event_type), length(source_service)), ingest_note \
         FROM notifications WHERE source_topic = $1 ORDER BY kafka_offset",
    )
    .bind(&hostile)
    .fetch_all(&pool)
    .await
    .unwrap();
    let want: Vec<(i64, Option<i32>, Option<String>)> =
        (0..values.len() as i64).map(|i| (i, Some(if i == 0 { 4000 } else { 9000 }), None)).collect();
    assert_eq!(lengths, want);
    // And the API finds the record by its full correlation id.
    let (status, body) = http_get(host.http, &format!("/correlation/{saga}")).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&saga));
}

/// A refusal that is not about the record (here a constraint no row can
/// meet, as after a botched migration) is never silent: `/ready/ingest` says
/// writes are failing and why, the metric counts it, and once the database
/// accepts rows again the waiting record is stored and the host ingests.
/// Reads go on meanwhile: `/ready` stays ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_that_refuses_every_row_is_reported_not_skipped() {
    let prefix = unique("refuse");
    let (db_url, pool) = fresh_database("refuse").await;
    let topic = format!("{prefix}-events");
    Kafka::shared().create_topic(&topic, 1).await;
    let host = Host::start(&HostOptions::new(&db_url, &prefix));
    host.wait_ready(Duration::from_secs(60));
    sqlx::query("ALTER TABLE notifications ADD CONSTRAINT refuse_everything CHECK (raw_value IS NULL) NOT VALID")
        .execute(&pool)
        .await
        .unwrap();
    produce(&Kafka::shared().producer(), &Out::new(&topic, r#"{"type": "t", "payload": {"order_id": "o-1"}}"#)).await;

    let started = std::time::Instant::now();
    let reason = loop {
        if let Some((503, body)) = http_get(host.http, "/ready/ingest")
            && body.contains("writes are failing")
        {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "/ready/ingest never said so; log:\n{}", host.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reason.contains("refuse_everything") && reason.contains(&topic), "{reason}");
    assert_eq!(http_get(host.http, "/ready").map(|(s, _)| s), Some(200), "reads are still served");
    assert!(host.metric("notification_write_failures_total").expect("the host answers /metrics") >= 1.0);
    assert!(stored(&pool, &prefix).await.is_empty());

    sqlx::query("ALTER TABLE notifications DROP CONSTRAINT refuse_everything").execute(&pool).await.unwrap();
    let rows = wait_for_rows(&pool, &prefix, 1, Duration::from_secs(20)).await;
    assert_eq!(rows.len(), 1, "the waiting record is stored once the database accepts rows");
    host.wait_ready(Duration::from_secs(20));
}

/// `ROLE=api`: no consumer (the broker here is unreachable), ready as soon as
/// the database answers, and the API serves what other replicas stored.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_replica_serves_without_a_broker() {
    let prefix = unique("apirole");
    let (db_url, _pool) = fresh_database("apirole").await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.env.push(("ROLE".into(), "api".into()));
    options.env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), "127.0.0.1:1".into()));
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(30));
    let (status, body) = http_get(host.http, "/order/none/latest").unwrap();
    assert_eq!((status, body.as_str()), (404, r#"{"error":"No notifications found for this order."}"#));
    assert!(host.log_text().contains("Serving the API only"), "{}", host.log_text());
}
