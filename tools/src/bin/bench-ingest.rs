//! The ingest benchmark. Run it with `scripts/bench`.
//!
//! 1. Preloads N records (8 topics x 3 partitions, the platform's message
//!    shapes, 300-1000 byte values, 1% malformed) into the broker.
//! 2. Baseline: PostgreSQL's own rate for exactly the rows the host writes,
//!    loaded with COPY from a file into an identical empty table.
//! 3. The host (release build) drains the backlog from a fresh consumer
//!    group three ways: the built-in default, the `default` component routed
//!    for every topic, and the `campus-delivery` component.
//! 4. Per-record normalize cost, native vs WASM, measured in-process.
//! 5. Latency under a steady load at 5,000 and 20,000 records/s and at 80%
//!    of the built-in default's drain rate: send → acknowledged → visible
//!    to a query, p50/p99/p99.9/max, and where a batch spends its time in
//!    the host (see `bench-ingest/latency.rs`).
//!
//! Like the tests, it reads `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`
//! (scripts/bench exports the throwaway services' addresses) and uses the
//! same harness (`notification-e2e`) for databases, topics and the host.

#[path = "bench-ingest/latency.rs"]
mod latency;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use futures_util::StreamExt as _;
use notification_e2e::{Host, HostOptions, Kafka, fresh_database, rss_peak_kib};
use notification_host::modules::{Module, Normalizer};
use notification_host::record::Record;
use notification_host::runtime::{Limits, Runtime};
use notification_host::storage::StoredRow;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

const TOPICS: [&str; 8] = [
    "order_commands",
    "order_events",
    "order-events",
    "payment_commands",
    "payment_events",
    "user_commands",
    "user_events",
    "escrow-events",
];

struct Args {
    host_bin: PathBuf,
    wasm_dir: PathBuf,
    modules_src: PathBuf,
    records: usize,
    /// Extra drains with the built-in default under other settings, each
    /// `NAME=VALUE[,NAME=VALUE]` (e.g. `DATABASE_WRITERS=1`), measured in
    /// the same run against the same baselines.
    variants: Vec<Vec<(String, String)>>,
    /// Only the built-in default's drain (and the variants), not the
    /// components', the micro-benchmark or the latency runs.
    quick: bool,
    /// The latency runs even with `--quick`.
    latency: bool,
    /// How long each latency rate lasts.
    latency_seconds: u64,
    /// Only the latency runs, at these rates (no preload, drains or
    /// baselines): for comparing settings quickly.
    latency_only: Option<Vec<u64>>,
    /// Settings for the latency runs' hosts, `NAME=VALUE[,NAME=VALUE]`.
    latency_env: Vec<(String, String)>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        host_bin: PathBuf::new(),
        wasm_dir: PathBuf::new(),
        modules_src: PathBuf::new(),
        records: 1_000_000,
        variants: Vec::new(),
        quick: false,
        latency: false,
        latency_seconds: 10,
        latency_only: None,
        latency_env: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--quick" || flag == "--latency" {
            a.quick |= flag == "--quick";
            a.latency |= flag == "--latency";
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--variant" => a.variants.push(settings(&flag, &value)?),
            "--host-bin" => a.host_bin = value.into(),
            "--wasm-dir" => a.wasm_dir = value.into(),
            "--modules-src" => a.modules_src = value.into(),
            "--records" => a.records = value.parse()?,
            "--latency-seconds" => a.latency_seconds = value.parse()?,
            "--latency-only" => {
                a.latency_only = Some(
                    value.split(',').map(str::parse).collect::<Result<_, _>>().context("--latency-only RATE[,RATE]")?,
                )
            }
            "--latency-env" => a.latency_env.extend(settings(&flag, &value)?),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.host_bin.as_os_str().is_empty() {
        bail!(
            "usage: bench-ingest --host-bin PATH --wasm-dir DIR --modules-src DIR [--records N] [--variant K=V[,K=V]]... [--quick] [--latency] [--latency-seconds N] [--latency-only RATE[,RATE]] [--latency-env K=V[,K=V]] (with DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS set)"
        );
    }
    Ok(a)
}

/// A flag's `NAME=VALUE[,NAME=VALUE]` as pairs.
fn settings(flag: &str, value: &str) -> anyhow::Result<Vec<(String, String)>> {
    value
        .split(',')
        .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Option<Vec<_>>>()
        .with_context(|| format!("{flag} {value}: expected NAME=VALUE[,NAME=VALUE]"))
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One value in the platform's shapes, 300-1000 bytes; 1% malformed.
fn value(topic_index: usize, rng: &mut Rng) -> Vec<u8> {
    let order = rng.below(200_000);
    let saga = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        rng.next() as u32,
        rng.below(65536),
        rng.below(4096),
        rng.below(4096),
        order
    );
    match rng.below(100) {
        0 => return format!("plain text log line for order {order}: status changed").into_bytes(),
        1 if rng.below(2) == 0 => return vec![0xff, 0xfe, b'{', b'"', 0x80, b'}'],
        _ => {}
    }
    let pad = "x".repeat(rng.below(500) as usize + 50);
    let text = match topic_index {
        0 => format!(
            r#"{{"type": "create_order", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00.123456", "payload": {{"customer_id": "user_{c}", "order_details": {{"foodItems": [{{"item_name": "Iced latte", "quantity": 2, "price": 4.5}}], "storeLocation": "Student Union", "deliveryLocation": "Dorm 7", "foodFee": 9.0, "deliveryFee": 2.5, "notes": "{pad}"}}, "saga_id": "{saga}"}}}}"#,
            c = order % 20_000
        ),
        1 => format!(
            r#"{{"type": "order.status_updated", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00.123456", "source": "order-service", "payload": {{"order_id": {order}, "status": "ACCEPTED", "saga_id": "{saga}", "notes": "{pad}"}}}}"#
        ),
        2 => {
            let snapshot = format!(
                r#"{{"orderId": {order}, "customerId": "user_{}", "runnerId": "user_r{}", "status": "ACCEPTED", "notes": "{pad}"}}"#,
                order % 20_000,
                order % 5_000
            );
            let escaped = serde_json::to_string(&snapshot).unwrap_or_default();
            format!(
                r#"{{"type": "ORDER_ACCEPTED", "correlation_id": "order-20250404100000-{:08x}", "timestamp": "2025-04-04T10:00:00.123456", "source": "order-service", "payload": {{"customerId": "user_{}", "runnerId": null, "orderId": {order}, "status": "ACCEPTED", "event": {escaped}}}}}"#,
                order,
                order % 20_000
            )
        }
        3 => format!(
            r#"{{"type": "authorize_payment", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00.123456", "payload": {{"order_id": {order}, "customer": {{"clerkUserId": "user_{}", "stripeCustomerId": "cus_{order}", "userStripeCard": {{"payment_method_id": "pm_{order}"}}}}, "order": {{"amount": 1150, "description": "{pad}"}}, "return_url": "https://example.test/r"}}}}"#,
            order % 20_000
        ),
        4 => format!(
            r#"{{"type": "payment.authorized", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00.123456", "source": "payment-service", "payload": {{"payment_id": "pi_{order}", "order_id": {order}, "payment_intent_id": "pi_{order}", "status": "requires_capture", "notes": "{pad}"}}}}"#
        ),
        5 => format!(
            r#"{{"type": "get_payment_info", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00.123456", "payload": {{"user_id": "user_{}", "notes": "{pad}"}}}}"#,
            order % 20_000
        ),
        6 => format!(
            r#"{{"type": "user.payment_info_retrieved", "correlation_id": "{saga}", "timestamp": "2025-04-04T10:00:00+00:00", "source": "user-service", "payload": {{"payment_info": {{"stripeCustomerId": "cus_{order}", "paymentMethodId": "pm_{order}"}}, "notes": "{pad}"}}}}"#
        ),
        _ => format!(
            r#"{{"specversion": "1.0", "type": "escrow.held", "source": "escrow-service", "id": "{saga}", "correlationId": "{saga}", "data": {{"orderId": "{order}", "customerId": "user_{}", "status": "HELD", "notes": "{pad}"}}}}"#,
            order % 20_000
        ),
    };
    text.into_bytes()
}

fn records(prefix: &str, n: usize) -> Vec<Record> {
    let mut rng = Rng(42);
    let base = Utc::now().timestamp_millis() - n as i64;
    (0..n)
        .map(|i| {
            let t = i % TOPICS.len();
            Record {
                topic: format!("{prefix}_{}", TOPICS[t]),
                partition: (i / TOPICS.len() % 3) as i32,
                offset: 0,
                timestamp: Some(base + i as i64),
                key: None,
                headers: vec![],
                value: Some(value(t, &mut rng)),
            }
        })
        .collect()
}

async fn preload(servers: &str, records: &[Record]) -> anyhow::Result<Duration> {
    let mut seen = std::collections::BTreeSet::new();
    for r in records {
        if seen.insert(r.topic.clone()) {
            Kafka::shared().create_topic(&r.topic, 3).await;
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "5000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "300000")
        .create()?;
    let started = Instant::now();
    let producer = Arc::new(producer);
    for chunk in records.chunks(20_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for r in chunk {
            let p = producer.clone();
            let (topic, partition, ts, value) = (r.topic.clone(), r.partition, r.timestamp, r.value.clone());
            pending.push(tokio::spawn(async move {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).partition(partition);
                if let Some(v) = &value {
                    rec = rec.payload(v.as_slice());
                }
                if let Some(ts) = ts {
                    rec = rec.timestamp(ts);
                }
                p.send(rec, Duration::from_secs(300)).await.map(|_| ()).map_err(|(e, _)| e)
            }));
        }
        for h in pending {
            h.await??;
        }
    }
    Ok(started.elapsed())
}

/// A fresh database (the harness's) with the host's schema applied by the
/// binary under test.
async fn fresh_db(name: &str, host_bin: &Path) -> anyhow::Result<String> {
    let (url, pool) = fresh_database(name).await;
    pool.close().await;
    let status = Command::new(host_bin).arg("migrate").env("DATABASE_URL", &url).env("RUST_LOG", "warn").status()?;
    anyhow::ensure!(status.success(), "migrate failed");
    Ok(url)
}

/// COPY text format for one optional value.
fn copy_text(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => out.extend_from_slice(b"\\N"),
        Some(s) => {
            for b in s.bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    _ => out.push(b),
                }
            }
        }
    }
}

fn copy_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        None => out.extend_from_slice(b"\\N"),
        Some(bytes) => {
            out.extend_from_slice(b"\\\\x");
            for b in bytes {
                let _ = write!(out, "{b:02x}");
            }
        }
    }
}

/// The baseline: the rows the host would write (values compressed as it
/// compresses them), COPYed from a file.
async fn baseline(url: &str, records: &[Record]) -> anyhow::Result<(Duration, u64)> {
    let normalized = Normalizer::Builtin.normalize(records);
    let file = std::env::temp_dir().join("notification-bench-copy.txt");
    let mut out = Vec::with_capacity(records.len() * 1500);
    for (i, (r, n)) in records.iter().cloned().zip(normalized).enumerate() {
        let mut r = r;
        r.offset = i as i64;
        let mut row = StoredRow::from_record(r, n);
        row.compress_value();
        let f = &row.fields;
        for (k, v) in [&f.customer_id, &f.runner_id, &f.order_id].into_iter().enumerate() {
            if k > 0 {
                out.push(b'\t');
            }
            copy_text(&mut out, v.as_deref());
        }
        out.push(b'\t');
        copy_bytes(&mut out, row.value_zstd.as_deref());
        out.push(b'\t');
        copy_text(&mut out, f.status.as_deref());
        out.push(b'\t');
        copy_text(&mut out, Some(&row.created_at.to_rfc3339()));
        for v in [Some(&row.source_topic), f.event_type.as_ref(), f.correlation_id.as_ref(), f.source_service.as_ref()]
        {
            out.push(b'\t');
            copy_text(&mut out, v.map(String::as_str));
        }
        out.push(b'\t');
        copy_text(&mut out, row.kafka_partition.map(|p| p.to_string()).as_deref());
        out.push(b'\t');
        copy_text(&mut out, row.kafka_offset.map(|o| o.to_string()).as_deref());
        out.push(b'\t');
        copy_bytes(&mut out, row.kafka_key.as_deref());
        out.push(b'\t');
        copy_text(&mut out, row.kafka_headers.as_deref());
        out.push(b'\t');
        copy_text(&mut out, row.kafka_timestamp.map(|t| t.to_rfc3339()).as_deref());
        out.push(b'\t');
        copy_bytes(&mut out, row.raw_value.as_deref());
        for v in [&row.ingest_note, &row.normalizer, &row.normalizer_error] {
            out.push(b'\t');
            copy_text(&mut out, v.as_deref());
        }
        out.push(b'\n');
    }
    std::fs::write(&file, &out)?;
    drop(out);
    let data = std::fs::read(&file)?;
    let mut conn = PgConnection::connect(url).await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY notifications (customer_id, runner_id, order_id, value_zstd, status, created_at, source_topic, event_type, \
             correlation_id, source_service, kafka_partition, kafka_offset, kafka_key, kafka_headers, kafka_timestamp, \
             raw_value, ingest_note, normalizer, normalizer_error) FROM STDIN",
        )
        .await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let rows = copy.finish().await?;
    let took = started.elapsed();
    let _ = std::fs::remove_file(&file);
    Ok((took, rows))
}

/// The columns the host writes (the row id and `stored_at` are defaults).
const WRITTEN_COLUMNS: &str = "customer_id, runner_id, order_id, value_zstd, status, created_at, source_topic, event_type, \
     correlation_id, source_service, kafka_partition, kafka_offset, kafka_key, kafka_headers, kafka_timestamp, \
     raw_value, ingest_note, normalizer, normalizer_error";

/// The strict baseline: the very rows the host stored, copied out of its
/// database in PostgreSQL's binary format and `COPY`ed back into an
/// identical fresh schema (same migrations, same month partitions, so the
/// same indexes and constraints). Binary `COPY` parses nothing (no hex
/// `bytea`, no text timestamps) and runs with no network round trips per
/// batch: the fastest way these rows can enter this table, so the host's
/// limit.
async fn binary_baseline(drained_url: &str, host_bin: &Path) -> anyhow::Result<(Duration, u64)> {
    let mut source = PgConnection::connect(drained_url).await?;
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'notifications'::regclass AND c.relname ~ '^notifications_[0-9]{4}_[0-9]{2}$'",
    )
    .fetch_all(&mut source)
    .await?;
    let mut data = Vec::new();
    let mut stream = source
        .copy_out_raw(&format!("COPY (SELECT {WRITTEN_COLUMNS} FROM notifications) TO STDOUT (FORMAT binary)"))
        .await?;
    while let Some(chunk) = stream.next().await {
        data.extend_from_slice(&chunk?);
    }
    drop(stream);
    let url = fresh_db("bench_binary", host_bin).await?;
    let db =
        notification_host::storage::Db::connect_lazy(&url, notification_host::storage::Connections::for_command())?;
    for name in partitions {
        let month = chrono::NaiveDate::parse_from_str(&format!("{}_01", &name["notifications_".len()..]), "%Y_%m_%d")?;
        db.ensure_partitions(month, month).await?;
    }
    let mut conn = PgConnection::connect(&url).await?;
    let started = Instant::now();
    let mut copy =
        conn.copy_in_raw(&format!("COPY notifications ({WRITTEN_COLUMNS}) FROM STDIN (FORMAT binary)")).await?;
    for chunk in data.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let rows = copy.finish().await?;
    Ok((started.elapsed(), rows))
}

/// Bytes on disk per stored record (table, TOAST and indexes of every
/// partition, from PostgreSQL's own size functions) in a drained database.
async fn disk_per_record(url: &str) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    sqlx::query("VACUUM ANALYZE notifications").execute(&pool).await?;
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(pg_total_relation_size(inhrelid))::int8 FROM pg_inherits \
           WHERE inhparent = 'notifications'::regclass), (SELECT count(*) FROM notifications)",
    )
    .fetch_one(&pool)
    .await?;
    Ok(bytes as f64 / rows.max(1) as f64)
}

struct Drain {
    total: Duration,
    drain: Duration,
    peak_rss_kib: u64,
    /// Seconds the writers spent writing (the host's batch write histogram)
    /// and the writes they made.
    write_seconds: f64,
    writes: f64,
}

/// The host under test, through the harness's [`Host`], with the settings
/// of a production run (default batch linger, warnings only).
fn start_host(a: &Args, db_url: &str, prefix: &str, modules: Option<&Path>, env: &[(String, String)]) -> Host {
    let mut options = HostOptions::new(db_url, &format!("{prefix}_"));
    options.binary = Some(a.host_bin.clone());
    options.env.push(("RUST_LOG".into(), "warn".into()));
    options.env.push(("BATCH_LINGER".into(), "100ms".into()));
    if let Some(m) = modules {
        options.env.push(("NORMALIZERS_DIR".into(), m.display().to_string()));
    }
    options.env.extend(env.iter().cloned());
    Host::start(&options)
}

async fn drain(
    a: &Args,
    db_url: &str,
    prefix: &str,
    modules: Option<&Path>,
    env: &[(String, String)],
    n: usize,
) -> anyhow::Result<Drain> {
    let started = Instant::now();
    let mut host = start_host(a, db_url, prefix, modules, env);
    let mut first: Option<Instant> = None;
    loop {
        let stored = host.metric("notification_records_stored_total").unwrap_or(0.0) as u64;
        if stored > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if stored >= n as u64 {
            break;
        }
        if let Some(status) = host.child.try_wait()? {
            bail!("the host exited: {status}; log:\n{}", host.log_text());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("not drained after 30 minutes ({stored} of {n})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = Instant::now();
    let peak = rss_peak_kib(host.child.id()).unwrap_or(0);
    let write_seconds = host.metric("notification_batch_write_seconds_sum").unwrap_or(0.0);
    let writes = host.metric("notification_batch_write_seconds_count").unwrap_or(0.0);
    host.terminate(Duration::from_secs(30));
    let pool = PgPoolOptions::new().max_connections(1).connect(db_url).await?;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await?;
    anyhow::ensure!(rows as usize == n, "{rows} rows stored for {n} records");
    Ok(Drain {
        total: done - started,
        drain: done - first.unwrap_or(started),
        peak_rss_kib: peak,
        write_seconds,
        writes,
    })
}

/// A drain: its label, the component routed for every topic, extra host
/// settings.
type Run<'a> = (String, Option<&'a str>, Vec<(String, String)>);

fn module_dir(a: &Args, which: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("notification-bench-modules-{which}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (wasm, manifest) = match which {
        "default" => (
            "normalizer_default.wasm",
            // The component's own name and version (the label then reads
            // like the built-in default's, and the rows' `normalizer` does too).
            "name = \"default\"\nversion = \"1.0.0\"\ncomponent = \"m.wasm\"\n[match]\ntopics = [\"*\"]\n".to_owned(),
        ),
        _ => (
            "normalizer_campus_delivery.wasm",
            std::fs::read_to_string(a.modules_src.join("campus-delivery/normalizer.toml"))?
                .replace("campus-delivery.wasm", "m.wasm")
                .replace("samples = \"campus-delivery.samples.jsonl\"\n", "")
                .lines()
                .map(|l| if l.starts_with("topics") { "topics = [\"*\"]".to_owned() } else { l.to_owned() })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    };
    std::fs::copy(a.wasm_dir.join(wasm), dir.join("m.wasm"))?;
    std::fs::write(dir.join("m.toml"), manifest)?;
    Ok(dir)
}

/// Per-record cost of normalizing, native vs the `default` component (in
/// batches as the pipeline runs them).
/// Per zstd level: microseconds per value and the share of value bytes
/// stored (values the host would store as they are count whole).
fn compression_sweep(records: &[Record]) -> anyhow::Result<Vec<(i32, f64, f64)>> {
    use notification_host::storage::value_compression::{pays, worth_compressing};
    let values: Vec<&[u8]> = records.iter().take(100_000).filter_map(|r| r.value.as_deref()).collect();
    let raw: usize = values.iter().map(|v| v.len()).sum();
    let mut out = Vec::new();
    for level in [-5, -1, 1, 3] {
        let mut c = zstd::bulk::Compressor::new(level)?;
        let started = Instant::now();
        let mut stored = 0usize;
        for v in &values {
            stored += if worth_compressing(v) {
                let frame = c.compress(v)?;
                if pays(v, &frame) { frame.len() } else { v.len() }
            } else {
                v.len()
            };
        }
        let us = started.elapsed().as_secs_f64() * 1e6 / values.len().max(1) as f64;
        out.push((level, us, stored as f64 / raw.max(1) as f64));
    }
    Ok(out)
}

/// Per-record cost of normalizing in process, in microseconds: natively,
/// and by two components in batches as the pipeline runs them.
struct ModuleCosts {
    native: f64,
    /// The `default` component: the same rules, run inside the module.
    default: f64,
    /// A module that only refines the built-in answer: it asks the host for
    /// it (contract 1.1.0's `builtin-fields`) and changes one field.
    refine: f64,
}

fn micro(a: &Args, records: &[Record]) -> anyhow::Result<ModuleCosts> {
    let sample: Vec<Record> = records.iter().take(200_000).cloned().collect();
    let per_record = |normalizer: &Normalizer| {
        normalizer.normalize(&sample[..1000]); // warm up
        let started = Instant::now();
        for chunk in sample.chunks(1000) {
            std::hint::black_box(normalizer.normalize(chunk));
        }
        started.elapsed().as_secs_f64() * 1e6 / sample.len() as f64
    };
    let runtime = Runtime::new(Limits::default())?;
    let component = |file: &str, label: &str| -> anyhow::Result<Normalizer> {
        let component = runtime.load_file(&a.wasm_dir.join(file))?;
        Ok(Normalizer::Module(Arc::new(Module { component, label: label.into(), fallback: false })))
    };
    Ok(ModuleCosts {
        native: per_record(&Normalizer::Builtin),
        default: per_record(&component("normalizer_default.wasm", "default-component@1.0.0")?),
        refine: per_record(&component("fixture_versioned_1_1_0.wasm", "versioned@1.1.0")?),
    })
}

/// Waits until `host` consumes: `/ready/ingest` answers 200, or, on a host
/// from before that endpoint (a baseline build), `/ready` does.
fn wait_consuming(host: &Host) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        match notification_e2e::http_get(host.http, "/ready/ingest") {
            Some((200, _)) => return Ok(()),
            Some((404, _)) if matches!(notification_e2e::http_get(host.http, "/ready"), Some((200, _))) => {
                return Ok(());
            }
            _ if started.elapsed() > Duration::from_secs(60) => bail!("the host does not consume after 60 s"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The latency runs: each rate on a fresh database and topic, with a host
/// started for it.
async fn latencies(a: &Args, servers: &str, rates: &[u64]) -> anyhow::Result<Vec<latency::LatencyRun>> {
    let mut runs = Vec::new();
    for (i, rate) in rates.iter().enumerate() {
        let prefix = format!("lat{}x{i}", std::process::id());
        let db = fresh_db("bench_latency", &a.host_bin).await?;
        let topic = format!("{prefix}_order_events");
        Kafka::shared().create_topic(&topic, latency::PARTITIONS).await;
        let mut host = start_host(a, &db, &prefix, None, &a.latency_env);
        wait_consuming(&host)?;
        println!("latency at {rate} records/s for {} s", a.latency_seconds);
        let mut rng = Rng(7 + i as u64);
        let mut values: Vec<Vec<u8>> = (0..1024).map(|_| value(1, &mut rng)).collect();
        values.shrink_to_fit();
        let run = latency::run(&host, &db, servers, &topic, *rate, a.latency_seconds, |n| {
            values[n as usize % values.len()].clone()
        })
        .await;
        host.terminate(Duration::from_secs(30));
        runs.push(run?);
    }
    Ok(runs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let servers = notification_e2e::bootstrap_servers();
    if let Some(rates) = &a.latency_only {
        let runs = latencies(&a, &servers, rates).await?;
        print_latencies(&a, &runs);
        return Ok(());
    }
    let prefix = format!("bench{}", std::process::id());
    println!("generating {} records", a.records);
    let records = records(&prefix, a.records);
    let bytes: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum();
    println!("average value size {} bytes; preloading into the broker", bytes / records.len().max(1));
    let took = preload(&servers, &records).await?;
    println!("preloaded in {:.1} s ({:.0} records/s)", took.as_secs_f64(), a.records as f64 / took.as_secs_f64());

    let url = fresh_db("bench_baseline", &a.host_bin).await?;
    let (copy_took, copied) = baseline(&url, &records).await?;
    anyhow::ensure!(copied as usize == a.records, "COPY stored {copied} rows");
    let baseline_rate = a.records as f64 / copy_took.as_secs_f64();
    println!("baseline COPY: {copied} rows in {:.1} s", copy_took.as_secs_f64());

    let micro_costs = if a.quick { None } else { Some(micro(&a, &records)?) };
    let sweep = compression_sweep(&records)?;
    drop(records);

    let mut results = Vec::new();
    let mut disk = None;
    let mut runs: Vec<Run> = vec![("built-in default (native)".into(), None, Vec::new())];
    if !a.quick {
        runs.push(("default component (WASM)".into(), Some("default"), Vec::new()));
        runs.push(("campus-delivery component (WASM)".into(), Some("campus"), Vec::new()));
    }
    for env in &a.variants {
        let label = env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
        runs.push((format!("built-in default, {label}"), None, env.clone()));
    }
    for (name, modules, env) in &runs {
        let dir = modules.map(|m| module_dir(&a, m)).transpose()?;
        let db = fresh_db("bench_drain", &a.host_bin).await?;
        println!("draining with the {name}");
        let d = drain(&a, &db, &prefix, dir.as_deref(), env, a.records).await?;
        // The strict baseline, measured right after each drain (the
        // machine's speed drifts between minutes): binary COPY of the rows
        // this drain stored into an identical fresh schema.
        println!("binary COPY of the rows the host stored, into an identical fresh schema");
        let (binary_took, binary_rows) = binary_baseline(&db, &a.host_bin).await?;
        anyhow::ensure!(binary_rows as usize == a.records, "binary COPY stored {binary_rows} rows");
        if disk.is_none() {
            disk = Some(disk_per_record(&db).await?);
        }
        // The writers this run's host had (DATABASE_WRITERS, or the host's default).
        let writers: f64 =
            env.iter().find(|(k, _)| k == "DATABASE_WRITERS").and_then(|(_, v)| v.parse().ok()).unwrap_or(2.0);
        results.push((name, d, a.records as f64 / binary_took.as_secs_f64(), writers));
    }
    let disk = disk.unwrap_or_default();
    let latency_runs = if a.quick && !a.latency {
        Vec::new()
    } else {
        let drain_rate = results.first().map_or(0.0, |(_, d, _, _)| a.records as f64 / d.drain.as_secs_f64());
        let mut rates = vec![5_000, 20_000];
        let eighty = (drain_rate * 0.8 / 1000.0).round() as u64 * 1000;
        if eighty > 20_000 {
            rates.push(eighty);
        }
        latencies(&a, &servers, &rates).await?
    };

    println!(
        "\n{} records, 8 topics x 3 partitions; commit {}",
        a.records,
        std::env::var("BENCH_COMMIT").unwrap_or_default()
    );
    println!(
        "| run | rows/s | binary COPY of the same rows, rows/s | ratio to binary COPY | ratio to text COPY | writers busy | rows per write | drain s | total s | peak host RSS MB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| text COPY of the same rows from a file into an empty table (once, before the drains) | {baseline_rate:.0} | | | 1.00 | | | {:.1} | | |",
        copy_took.as_secs_f64()
    );
    for (name, d, binary_rate, writers) in &results {
        let rate = a.records as f64 / d.drain.as_secs_f64();
        println!(
            "| host, {name} | {rate:.0} | {binary_rate:.0} | {:.2} | {:.2} | {:.0}% | {:.0} | {:.1} | {:.1} | {:.0} |",
            rate / binary_rate,
            rate / baseline_rate,
            100.0 * d.write_seconds / (d.drain.as_secs_f64() * writers),
            a.records as f64 / d.writes.max(1.0),
            d.drain.as_secs_f64(),
            d.total.as_secs_f64(),
            d.peak_rss_kib as f64 / 1024.0
        );
    }
    let average_value = bytes as f64 / a.records.max(1) as f64;
    println!(
        "\ndisk per record (table, TOAST and indexes of every partition, after VACUUM): {disk:.0} bytes for an average value of {average_value:.0} bytes ({:.2}x)",
        disk / average_value.max(1.0)
    );
    let host_level = notification_host::storage::value_compression::LEVEL;
    println!("\nvalue compression per value (100,000 values, the host stores the frame when it saves an eighth):");
    for (level, us, share) in &sweep {
        let mark = if *level == host_level { " (the host's level)" } else { "" };
        println!("  zstd level {level}: {us:.2} µs, stores {:.1}% of the value bytes{mark}", share * 100.0);
    }
    if let Some(c) = micro_costs {
        println!(
            "\nnormalize cost per record (in-process, 200,000 records in batches of 1000): native {:.2} µs; \
             default component {:.2} µs (WASM - native = {:+.2} µs); refining module, the built-in answer \
             from the host {:.2} µs ({:+.2} µs)",
            c.native,
            c.default,
            c.default - c.native,
            c.refine,
            c.refine - c.native
        );
    }
    print_latencies(&a, &latency_runs);
    Ok(())
}

/// The latency runs' tables.
fn print_latencies(a: &Args, latency_runs: &[latency::LatencyRun]) {
    if latency_runs.is_empty() {
        return;
    }
    if !a.latency_env.is_empty() {
        println!("\nlatency runs' host settings: {:?}", a.latency_env);
    }
    println!(
        "\nlatency under a steady load ({} s per rate after {} s of warm-up, 3 partitions; visible: first seen by a query polled every {} ms):",
        a.latency_seconds,
        latency::WARM_UP_SECONDS,
        latency::POLL.as_millis()
    );
    println!(
        "| rate (achieved) | records | ack → visible p50 | p99 | p99.9 | max | send → visible p50 | p99 | p99.9 | max | send → ack p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in latency_runs {
        println!(
            "| {} ({:.0}) | {} | {} | {} | {:.1} | {:.1} |",
            r.rate,
            r.achieved,
            r.records,
            r.ack_to_visible.cells(),
            r.send_to_visible.cells(),
            r.send_to_ack.p50,
            r.send_to_ack.p99
        );
    }
    println!(
        "\nack → queryable: GET /order/{{id}}/latest answers the record ({} sampled records a second, each asked every {} ms), ms:",
        latency::API_SAMPLES_PER_SECOND,
        latency::POLL.as_millis()
    );
    println!("| rate | sampled | p50 | p99 | p99.9 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in latency_runs {
        println!("| {} | {} | {} |", r.rate, r.ack_to_queryable_count, r.ack_to_queryable.cells());
    }
    println!("\nrecord time → start of the writing transaction (stored_at), the previous measure, ms:");
    for r in latency_runs {
        println!("  {} records/s: p50 | p99 | p99.9 | max: {}", r.rate, r.record_to_write_start.cells());
    }
    println!(
        "\nwhere a batch spends its time in the host (pipeline_stage_seconds: mean / p99 bucket in ms, and batches):"
    );
    for r in latency_runs {
        let stages: Vec<String> = r
            .stages
            .iter()
            .map(|s| format!("{} {:.1} / {:.1} ({:.0})", s.name, s.mean_ms, s.p99_ms, s.count))
            .collect();
        let stages = if stages.is_empty() { "not reported by this host".to_owned() } else { stages.join(", ") };
        println!("  {} records/s: {stages}", r.rate);
    }
}
