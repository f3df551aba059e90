//! The topic-scale benchmark. Run it with `scripts/bench-topics`.
//!
//! For each topic count (default 10, 100 and 1,000 topics of 3 partitions),
//! on a fresh database, it starts the release host consuming them, produces
//! a steady stream across all of them (one record per topic per round,
//! about `--rate` records/s in all) and measures:
//! - the host's memory (resident set) once it holds every partition, and
//!   its peak;
//! - the time from creating a new topic to its first record stored, against
//!   the refresh interval (the bound is the interval plus 2 s);
//! - the longest gap between consecutive stored rows of the steady stream,
//!   which takes in the topic refreshes and the rebalance the new topic
//!   causes.
//!
//! Like the tests, it reads `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use notification_e2e::{Host, HostOptions, Kafka, Out, fresh_database, produce, rss_kib, rss_peak_kib, stored, unique};

struct Args {
    host_bin: PathBuf,
    counts: Vec<usize>,
    rate: u64,
    seconds: u64,
    refresh: Duration,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        host_bin: PathBuf::new(),
        counts: vec![10, 100, 1000],
        rate: 500,
        seconds: 30,
        refresh: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host-bin" => a.host_bin = value.into(),
            "--topics" => a.counts = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--refresh" => a.refresh = Duration::from_secs_f64(value.trim_end_matches('s').parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.host_bin.as_os_str().is_empty() {
        bail!("usage: bench-topics --host-bin PATH [--topics 10,100,1000] [--rate R] [--seconds S] [--refresh 10s]");
    }
    Ok(a)
}

struct Run {
    topics: usize,
    ready: Duration,
    rss_mib: u64,
    peak_mib: u64,
    new_topic: Duration,
    longest_gap: f64,
    stored: usize,
    produced: usize,
}

async fn run(a: &Args, count: usize) -> anyhow::Result<Run> {
    let prefix = unique("scale");
    let (db_url, pool) = fresh_database("benchtopics").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = (0..count).map(|i| format!("{prefix}-t{i:04}")).collect();
    for chunk in topics.chunks(100) {
        kafka.create_topics(chunk, 3).await;
    }
    let mut options = HostOptions::new(&db_url, &prefix);
    options.binary = Some(a.host_bin.clone());
    options.env = vec![
        ("RUST_LOG".into(), "warn".into()),
        ("TOPIC_REFRESH_INTERVAL".into(), format!("{}ms", a.refresh.as_millis())),
    ];
    let started = Instant::now();
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(300));
    let ready = started.elapsed();
    // Every partition assigned and consumed from: one record in each topic.
    let producer = kafka.producer();
    for t in &topics {
        produce(&producer, &Out::new(t, r#"{"type": "warm-up"}"#)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while count_rows(&pool, &prefix).await < count {
        anyhow::ensure!(Instant::now() < deadline, "warm-up records not stored; log:\n{}", host.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rss = rss_kib(host.child.id()).unwrap_or_default();

    // The steady stream across every topic; a new topic halfway through.
    let total = (a.rate * a.seconds) as usize;
    let stream_started = chrono::Utc::now();
    let stream = kafka.clone().produce_steadily(topics.clone(), total, a.rate);
    let producing = tokio::spawn(stream);
    tokio::time::sleep(Duration::from_secs(a.seconds / 2)).await;
    let late = format!("{prefix}-late");
    kafka.create_topic(&late, 3).await;
    let created = Instant::now();
    produce(&producer, &Out::new(&late, r#"{"type": "late"}"#)).await;
    while stored(&pool, &late).await.is_empty() {
        anyhow::ensure!(created.elapsed() < a.refresh + Duration::from_secs(60), "the new topic was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_topic = created.elapsed();
    let produced = producing.await?.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count_rows(&pool, &prefix).await < count + produced + 1 {
        anyhow::ensure!(Instant::now() < deadline, "the stream was not stored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = rss_peak_kib(host.child.id()).unwrap_or_default();
    let longest_gap: f64 = sqlx::query_scalar(
        "SELECT coalesce(extract(epoch FROM max(d))::float8, 0) FROM (SELECT stored_at - lag(stored_at) OVER (ORDER BY stored_at) AS d \
         FROM notifications WHERE starts_with(source_topic, $1) AND stored_at > $2) g",
    )
    .bind(&prefix)
    .bind(stream_started)
    .fetch_one(&pool)
    .await?;
    let stored = count_rows(&pool, &prefix).await - count - 1;
    drop(host);
    Ok(Run {
        topics: count,
        ready,
        rss_mib: rss / 1024,
        peak_mib: peak / 1024,
        new_topic,
        longest_gap,
        stored,
        produced,
    })
}

async fn count_rows(pool: &sqlx::PgPool, prefix: &str) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE starts_with(source_topic, $1)")
        .bind(prefix)
        .fetch_one(pool)
        .await
        .unwrap_or_default() as usize
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut runs = Vec::new();
    for &count in &a.counts {
        eprintln!("{count} topics x 3 partitions ...");
        runs.push(run(&a, count).await?);
    }
    println!(
        "\n{} records/s across all topics for {} s; a new topic created halfway; TOPIC_REFRESH_INTERVAL {:?}",
        a.rate, a.seconds, a.refresh
    );
    println!(
        "| topics | partitions | ready after | host RSS, every partition held | peak RSS | new topic → first row stored | bound (refresh + 2 s) | longest gap between stored rows | stored / produced |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ok = true;
    for r in &runs {
        let bound = a.refresh + Duration::from_secs(2);
        ok &= r.new_topic <= bound && r.stored == r.produced;
        println!(
            "| {} | {} | {:.1} s | {} MiB | {} MiB | {:.2} s | {:.0} s | {:.2} s | {} / {} |",
            r.topics,
            r.topics * 3,
            r.ready.as_secs_f64(),
            r.rss_mib,
            r.peak_mib,
            r.new_topic.as_secs_f64(),
            bound.as_secs_f64(),
            r.longest_gap,
            r.stored,
            r.produced
        );
    }
    println!(
        "target: a new topic stored within the refresh interval + 2 s, nothing lost: {}",
        if ok { "met" } else { "MISSED" }
    );
    Ok(())
}
