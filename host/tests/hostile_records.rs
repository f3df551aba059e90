//! Property: whatever a record holds, it is stored exactly once with its exact
//! bytes, and an ordinary record behind it is stored within seconds. Against a
//! real PostgreSQL, with generated records: arbitrary bytes and lengths (up to
//! the broker's 1 MB) in the value, the key, header names and values and every
//! field the host derives, incompressible and compressible text, NUL and
//! control characters, timestamps from year -292 million to +292 million.
//!
//! `scripts/test` runs it with a fixed seed; `scripts/faults` runs a longer
//! random run. HOSTILE_CASES sets the number of cases, HOSTILE_SEED the seed
//! (a number, or `random`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::noise;
use notification_host::record::{Fields, Header, Normalized, Record};
use notification_host::storage::{Db, StoredRow};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use sqlx::Row;
use sqlx::postgres::PgPoolOptions;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Text of a given shape; long shapes are expanded from a seed so that a
/// case stays small to print and shrink.
#[derive(Debug, Clone)]
enum Text {
    Small(String),
    /// Random hex digits: what a token or a hash pasted into a field looks like.
    Hex {
        len: usize,
        seed: u64,
    },
    /// Random code points of every width, control characters included.
    Unicode {
        len: usize,
        seed: u64,
    },
    /// One character repeated: compresses to almost nothing.
    Repeated {
        len: usize,
        c: char,
    },
    /// Hex with NUL characters in it.
    WithNul {
        len: usize,
        seed: u64,
    },
}

/// Bytes of a given shape.
#[derive(Debug, Clone)]
enum Bytes {
    Text(Text),
    Random {
        len: usize,
        seed: u64,
    },
    /// A JSON document whose ids are the text (escaped as JSON).
    Json(Text),
}

#[derive(Debug, Clone)]
struct Case {
    value: Option<Bytes>,
    key: Option<Bytes>,
    headers: Vec<(Text, Option<Bytes>)>,
    timestamp: Option<i64>,
    fields: [Option<Text>; 7],
    error: Option<Text>,
}

fn len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0..40usize,
        2 => 2600..2800usize,
        1 => Just(4000usize),
        2 => 8100..8300usize,
        1 => Just(9000usize),
        1 => 20_000..70_000usize,
    ]
}

fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        3 => any::<String>().prop_map(Text::Small),
        3 => (len(), any::<u64>()).prop_map(|(len, seed)| Text::Hex { len, seed }),
        2 => (len(), any::<u64>()).prop_map(|(len, seed)| Text::Unicode { len, seed }),
        1 => (len(), any::<char>()).prop_map(|(len, c)| Text::Repeated { len, c }),
        1 => (len(), any::<u64>()).prop_map(|(len, seed)| Text::WithNul { len, seed }),
    ]
}

fn bytes() -> impl Strategy<Value = Bytes> {
    let value_len = prop_oneof![4 => len(), 1 => Just(1_000_000usize), 1 => 200_000..1_000_000usize];
    prop_oneof![
        2 => text().prop_map(Bytes::Text),
        2 => (value_len, any::<u64>()).prop_map(|(len, seed)| Bytes::Random { len, seed }),
        3 => text().prop_map(Bytes::Json),
        1 => Just(Bytes::Text(Text::Repeated { len: 1_000_000, c: 'x' })),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(i64::MIN)),
        1 => Just(Some(i64::MAX)),
        1 => Just(Some(-62_135_596_800_000)),           // year 1
        2 => (-2_000_000_000_000i64..0).prop_map(Some), // before 1970
        1 => Just(Some(253_402_300_799_999)),           // 9999-12-31T23:59:59.999
        1 => Just(Some(253_402_300_800_000)),           // year 10000
        2 => (253_402_300_800_000i64..9_300_000_000_000_000).prop_map(Some),
        4 => (1_700_000_000_000i64..1_800_000_000_000).prop_map(Some),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::option::weighted(0.95, bytes()),
        proptest::option::of(bytes()),
        proptest::collection::vec((text(), proptest::option::of(bytes())), 0..4),
        timestamp(),
        proptest::array::uniform7(proptest::option::of(text())),
        proptest::option::of(text()),
    )
        .prop_map(|(value, key, headers, timestamp, fields, error)| Case {
            value,
            key,
            headers,
            timestamp,
            fields,
            error,
        })
}

fn expand(t: &Text) -> String {
    match t {
        Text::Small(s) => s.clone(),
        Text::Hex { len, seed } => common::incompressible(*len, *seed),
        Text::Unicode { len, seed } => {
            noise(*seed).take(*len).map(|x| char::from_u32((x % 0x11_0000) as u32).unwrap_or('\u{FFFD}')).collect()
        }
        Text::Repeated { len, c } => std::iter::repeat_n(*c, *len).collect(),
        Text::WithNul { len, seed } => noise(*seed)
            .take(*len)
            .map(|x| if x % 7 == 0 { '\0' } else { char::from_digit((x % 16) as u32, 16).unwrap() })
            .collect(),
    }
}

fn expand_bytes(b: &Bytes) -> Vec<u8> {
    match b {
        Bytes::Text(t) => expand(t).into_bytes(),
        Bytes::Random { len, seed } => noise(*seed).take(*len).map(|x| (x >> 24) as u8).collect(),
        Bytes::Json(t) => {
            let id = expand(t);
            serde_json::json!({"type": id, "correlation_id": id, "payload": {"order_id": id, "customer_id": id}})
                .to_string()
                .into_bytes()
        }
    }
}

/// One database for the whole property run, on a runtime of its own (the
/// property body is synchronous).
fn harness() -> &'static (tokio::runtime::Runtime, Db) {
    static HARNESS: OnceLock<(tokio::runtime::Runtime, Db)> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let db = rt.block_on(async {
            let admin_url = std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run with scripts/test");
            let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
            let name = format!("hostile_{}", std::process::id());
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"))).execute(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
            let (base, _) = admin_url.rsplit_once('/').unwrap();
            let pool = PgPoolOptions::new().max_connections(4).connect(&format!("{base}/{name}")).await.unwrap();
            MIGRATOR.run(&pool).await.unwrap();
            let db = Db::from_pool(pool);
            // Month partitions around the epoch and now, so that records land
            // in monthly partitions and in the default one.
            let d = |y, m| chrono::NaiveDate::from_ymd_opt(y, m, 1).unwrap();
            db.ensure_partitions(d(1969, 11), d(1970, 2)).await.unwrap();
            let today = chrono::Utc::now().date_naive();
            db.ensure_partitions(today, today).await.unwrap();
            db
        });
        (rt, db)
    })
}

fn config() -> Config {
    let cases = std::env::var("HOSTILE_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48);
    let rng_seed = match std::env::var("HOSTILE_SEED").as_deref() {
        Ok("random") => RngSeed::Random,
        Ok(seed) => RngSeed::Fixed(seed.parse().expect("HOSTILE_SEED is a number or `random`")),
        Err(_) => RngSeed::Fixed(20_261_127),
    };
    Config { cases, rng_seed, failure_persistence: None, max_shrink_iters: 64, ..Config::default() }
}

static OFFSET: AtomicI64 = AtomicI64::new(0);
/// Hostile records written and their value bytes, for the run's summary.
static HOSTILE: AtomicI64 = AtomicI64::new(0);
static HOSTILE_BYTES: AtomicI64 = AtomicI64::new(0);

/// Builds the rows of a batch: the hostile records, then an ordinary one on
/// another topic.
fn rows(cases: &[Case]) -> (Vec<StoredRow>, Vec<Record>) {
    let mut records = Vec::new();
    let mut rows = Vec::new();
    for c in cases {
        let record = Record {
            topic: "hostile".into(),
            partition: 0,
            offset: OFFSET.fetch_add(1, Ordering::Relaxed),
            timestamp: c.timestamp,
            key: c.key.as_ref().map(expand_bytes),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| Header { key: expand(k), value: v.as_ref().map(expand_bytes) })
                .collect(),
            value: c.value.as_ref().map(expand_bytes),
        };
        let f = |i: usize| c.fields[i].as_ref().map(expand);
        let fields = Fields {
            customer_id: f(0),
            runner_id: f(1),
            order_id: f(2),
            event_type: f(3),
            correlation_id: f(4),
            source_service: f(5),
            status: f(6),
        };
        let normalized = Normalized { fields, normalizer: "default@1.0.0".into(), error: c.error.as_ref().map(expand) };
        HOSTILE.fetch_add(1, Ordering::Relaxed);
        HOSTILE_BYTES.fetch_add(record.value.as_ref().map_or(0, Vec::len) as i64, Ordering::Relaxed);
        records.push(record.clone());
        rows.push(StoredRow::from_record(record, normalized));
    }
    rows.push(ordinary());
    (rows, records)
}

fn ordinary() -> StoredRow {
    let record = Record {
        topic: "ordinary".into(),
        partition: 0,
        offset: OFFSET.fetch_add(1, Ordering::Relaxed),
        timestamp: Some(1_743_760_800_000),
        key: None,
        headers: vec![],
        value: Some(br#"{"type": "order.created", "payload": {"order_id": "o-1"}}"#.to_vec()),
    };
    let fields = Fields { order_id: Some("o-1".into()), ..Fields::default() };
    StoredRow::from_record(record, Normalized { fields, normalizer: "default@1.0.0".into(), error: None })
}

async fn check(db: &Db, cases: Vec<Case>) -> Result<(), TestCaseError> {
    let (rows, records) = rows(&cases);
    let started = Instant::now();
    let written = tokio::time::timeout(Duration::from_secs(60), db.insert(&rows))
        .await
        .map_err(|_| TestCaseError::fail("the batch was not written within 60 s"))?
        .map_err(|e| TestCaseError::fail(format!("the batch was refused: {e}")))?;
    prop_assert_eq!(written.inserted, rows.len() as u64, "every record is new and stored");
    prop_assert!(written.reduced.is_empty(), "no record needed a reduced row: {:?}", written.reduced);
    let batch_took = started.elapsed();

    // An ordinary record written after the hostile batch is stored at once.
    let after = ordinary();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), db.insert(std::slice::from_ref(&after)))
        .await
        .map_err(|_| TestCaseError::fail("the ordinary record behind the batch waited over 5 s"))?
        .map_err(|e| TestCaseError::fail(format!("the ordinary record was refused: {e}")))?;
    prop_assert!(started.elapsed() < Duration::from_secs(5));

    for (record, row) in records.iter().zip(&rows) {
        let found = sqlx::query(
            "SELECT raw_value, kafka_key, kafka_headers::text, (extract(epoch FROM kafka_timestamp) * 1000)::int8, \
             customer_id, runner_id, order_id, event_type, correlation_id, source_service, status, normalizer_error \
             FROM notifications WHERE source_topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
        )
        .bind(&record.topic)
        .bind(record.partition)
        .bind(record.offset)
        .fetch_all(db.pool())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(found.len(), 1, "exactly one row for offset {}", record.offset);
        let r = &found[0];
        prop_assert!(r.get::<Option<Vec<u8>>, _>(0) == record.value, "the exact value");
        prop_assert!(r.get::<Option<Vec<u8>>, _>(1) == record.key, "the exact key");
        let headers: Vec<serde_json::Value> = serde_json::from_str(&r.get::<String, _>(2)).unwrap();
        prop_assert_eq!(headers.len(), record.headers.len());
        for (h, stored) in record.headers.iter().zip(&headers) {
            let key = h.key.replace('\0', "\u{FFFD}");
            prop_assert_eq!(stored["key"].as_str(), Some(key.as_str()));
            let value = match (&stored["value"], &stored["value_b64"]) {
                (serde_json::Value::String(s), _) => Some(s.clone().into_bytes()),
                (_, serde_json::Value::String(b)) => Some(base64::engine::general_purpose::STANDARD.decode(b).unwrap()),
                _ => None,
            };
            prop_assert!(value == h.value, "the exact header value");
        }
        prop_assert_eq!(r.get::<Option<i64>, _>(3), row.kafka_timestamp.map(|t| t.timestamp_millis()));
        let want = [
            &row.fields.customer_id,
            &row.fields.runner_id,
            &row.fields.order_id,
            &row.fields.event_type,
            &row.fields.correlation_id,
            &row.fields.source_service,
            &row.fields.status,
            &row.normalizer_error,
        ];
        for (i, want) in want.into_iter().enumerate() {
            prop_assert!(&r.get::<Option<String>, _>(4 + i) == want, "field {} stored whole", i);
        }
        if let Some(id) = &row.fields.correlation_id {
            let hits = db.for_correlation(id, None, 1000).await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(
                hits.iter().any(|n| n.kafka_offset == Some(record.offset)),
                "found by its full correlation id"
            );
        }
    }
    if batch_took > Duration::from_secs(10) {
        eprintln!("a batch of {} hostile records took {batch_took:?}", cases.len());
    }
    Ok(())
}

#[test]
fn every_record_is_stored_exactly_once_whatever_it_holds() {
    // The strategy trees and the check's future are deep in a debug build.
    std::thread::Builder::new().stack_size(256 << 20).spawn(property).unwrap().join().unwrap();
}

fn property() {
    let (rt, db) = harness();
    let config = config();
    eprintln!("hostile records: {} cases, seed {:?}", config.cases, config.rng_seed);
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let result = runner.run(&proptest::collection::vec(case(), 1..5), |cases| rt.block_on(check(db, cases)));
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "hostile records: {} records ({} MB of values) stored exactly once, each followed by an ordinary record, in {:.0?}",
        HOSTILE.load(Ordering::Relaxed),
        HOSTILE_BYTES.load(Ordering::Relaxed) / 1_000_000,
        started.elapsed()
    );
}
