//! Latency under a steady load: records produced at a fixed rate to a fresh
//! topic of 3 partitions while the host consumes it, and for every record
//! three times, all on this process's monotonic clock: when it was sent,
//! when the broker acknowledged it, and when its row was first visible to
//! a query on another connection. The visibility poller asks PostgreSQL
//! every [`POLL`] for the rows past the last offset seen of each partition
//! (a partition's rows commit in offset order: it stays with one writer
//! while any of its rows are in flight), so a figure includes up to one
//! poll interval of the poller's own delay.
//!
//! Read-your-write as a client sees it: [`API_SAMPLES_PER_SECOND`] records
//! a second carry an order id of their own, and each is asked for with
//! `GET /order/{id}/latest` (one kept-alive HTTP client, every [`POLL`])
//! from its acknowledgement until the answer is that record.
//!
//! After each rate, the host's `pipeline_stage_seconds` histograms give
//! where a batch spent its time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use notification_e2e::{Host, Out, produce};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use sqlx::postgres::PgPoolOptions;

/// Partitions of each rate's topic.
pub const PARTITIONS: i32 = 3;

/// How often the poller asks for newly visible rows.
pub const POLL: Duration = Duration::from_millis(5);

/// Records a second also looked up through the API.
pub const API_SAMPLES_PER_SECOND: u64 = 50;

/// The first seconds of each rate are produced and checked but not
/// measured: the host's first fetch of a partition and a fresh consumer's
/// start are not the steady state.
pub const WARM_UP_SECONDS: u64 = 2;

/// p50, p99, p99.9 and the maximum of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut ms: Vec<f64>) -> Spread {
        if ms.is_empty() {
            return Spread::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
        Spread { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: ms[ms.len() - 1] }
    }

    pub fn cells(&self) -> String {
        format!("{:.1} | {:.1} | {:.1} | {:.1}", self.p50, self.p99, self.p999, self.max)
    }
}

/// One stage of the host's pipeline: mean and p99 (the upper bound of the
/// histogram bucket that holds it) in milliseconds, and batches observed.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub mean_ms: f64,
    pub p99_ms: f64,
    pub count: f64,
}

/// What one rate gave.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub rate: u64,
    pub records: usize,
    /// The rate the producer achieved (records over the time it took to send
    /// them).
    pub achieved: f64,
    pub send_to_ack: Spread,
    pub send_to_visible: Spread,
    pub ack_to_visible: Spread,
    /// From the acknowledgement to the first `GET /order/{id}/latest` that
    /// answers the record, for the sampled records.
    pub ack_to_queryable: Spread,
    pub ack_to_queryable_count: usize,
    /// Record time to the start of the transaction that wrote it.
    pub record_to_write_start: Spread,
    pub stages: Vec<Stage>,
}

/// Produces `rate` records/s for `WARM_UP_SECONDS + seconds` to `topic`
/// (3 partitions, created before the host started, so that the host
/// consumes it from its first poll) and measures each record after the
/// warm-up.
pub async fn run(
    host: &Host,
    db_url: &str,
    servers: &str,
    topic: &str,
    rate: u64,
    seconds: u64,
    value: impl Fn(u64) -> Vec<u8>,
) -> anyhow::Result<LatencyRun> {
    let partitions = PARTITIONS;
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", servers).set("linger.ms", "1").create()?;
    let total = (rate * (WARM_UP_SECONDS + seconds)) as usize;
    let warm_up = (rate * WARM_UP_SECONDS) as usize;
    let poller = tokio::spawn(poll_visible(db_url.to_owned(), topic.to_owned(), partitions, total));
    let start = tokio::time::Instant::now();
    let measured_from = chrono::Utc::now() + chrono::Duration::seconds(WARM_UP_SECONDS as i64);
    let mut pending = Vec::with_capacity(total);
    let every = (rate / API_SAMPLES_PER_SECOND).max(1);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let base = format!("http://{}", host.http);
    for i in 0..total as u64 {
        tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate)).await;
        let sampled = (i % every == 0).then(|| format!("{topic}-q{i}"));
        let v = match &sampled {
            Some(order) => format!(
                r#"{{"type": "order.status_updated", "source": "order-service", "payload": {{"order_id": "{order}", "status": "ACCEPTED", "seq": {i}}}}}"#
            )
            .into_bytes(),
            None => value(i),
        };
        let (p, out) = (producer.clone(), Out::new(topic, v));
        let (client, base) = (client.clone(), base.clone());
        pending.push(tokio::spawn(async move {
            let sent = Instant::now();
            let c = produce(&p, &out).await;
            let acked = Instant::now();
            let queryable = match sampled {
                Some(order) => Some(queryable(&client, &base, &order, c.offset).await?),
                None => None,
            };
            anyhow::Ok((c.partition, c.offset, sent, acked, queryable))
        }));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let mut acked = Vec::with_capacity(total);
    for h in pending {
        acked.push(h.await??);
    }
    let visible = poller.await??;
    // The old measure beside the new: record time (the producer's clock,
    // this machine's) to the start of the writing transaction.
    let pool = PgPoolOptions::new().max_connections(1).connect(db_url).await?;
    let to_write_start: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM stored_at - created_at) * 1000)::float8 FROM notifications WHERE source_topic = $1 AND created_at >= $2",
    )
    .bind(topic)
    .bind(measured_from)
    .fetch_all(&pool)
    .await?;
    let (mut send_to_ack, mut send_to_visible, mut ack_to_visible) = (Vec::new(), Vec::new(), Vec::new());
    let mut ack_to_queryable = Vec::new();
    for (partition, offset, sent, ack, queryable) in acked.into_iter().skip(warm_up) {
        if let Some(q) = queryable {
            ack_to_queryable.push(q.saturating_duration_since(ack).as_secs_f64() * 1000.0);
        }
        let seen = visible
            .get(&(partition, offset))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("partition {partition} offset {offset} was never visible"))?;
        send_to_ack.push((ack - sent).as_secs_f64() * 1000.0);
        send_to_visible.push(seen.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        ack_to_visible.push(seen.saturating_duration_since(ack).as_secs_f64() * 1000.0);
    }
    Ok(LatencyRun {
        rate,
        records: total - warm_up,
        achieved,
        send_to_ack: Spread::of(send_to_ack),
        send_to_visible: Spread::of(send_to_visible),
        ack_to_visible: Spread::of(ack_to_visible),
        ack_to_queryable_count: ack_to_queryable.len(),
        ack_to_queryable: Spread::of(ack_to_queryable),
        record_to_write_start: Spread::of(to_write_start),
        stages: stages(host),
    })
}

/// Asks `GET /order/{order}/latest` every [`POLL`] until it answers the
/// record at `offset`; when it first did.
async fn queryable(client: &reqwest::Client, base: &str, order: &str, offset: i64) -> anyhow::Result<Instant> {
    let url = format!("{base}/order/{order}/latest");
    let started = Instant::now();
    loop {
        let response = client.get(&url).send().await?;
        if response.status() == reqwest::StatusCode::OK {
            let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
            let at = Instant::now();
            let found = body["kafka_offset"].as_i64().or_else(|| body["kafkaOffset"].as_i64());
            anyhow::ensure!(found == Some(offset), "{url} answered another record: {body}");
            return Ok(at);
        }
        anyhow::ensure!(response.status() == reqwest::StatusCode::NOT_FOUND, "{url} answered {}", response.status());
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "{url} not found after 10 minutes");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls until every one of `total` records of `topic` is visible; the
/// first time each was seen.
async fn poll_visible(
    db_url: String,
    topic: String,
    partitions: i32,
    total: usize,
) -> anyhow::Result<HashMap<(i32, i64), Instant>> {
    let pool = PgPoolOptions::new().max_connections(1).connect(&db_url).await?;
    let mut next: Vec<i64> = vec![0; partitions as usize];
    let mut seen = HashMap::with_capacity(total);
    let started = Instant::now();
    while seen.len() < total {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {total} records visible after 10 minutes",
            seen.len()
        );
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT w.p, n.kafka_offset FROM unnest($2::int4[], $3::int8[]) AS w(p, o) \
             JOIN LATERAL (SELECT kafka_offset FROM notifications \
               WHERE source_topic = $1 AND kafka_partition = w.p AND kafka_offset >= w.o) n ON true",
        )
        .bind(&topic)
        .bind((0..partitions).collect::<Vec<i32>>())
        .bind(&next)
        .fetch_all(&pool)
        .await?;
        let now = Instant::now();
        for (p, o) in rows {
            seen.entry((p, o)).or_insert(now);
            if let Some(n) = next.get_mut(p as usize) {
                *n = (*n).max(o + 1);
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(seen)
}

/// A stage's histogram as scraped: sum, count and (upper bound, count) buckets.
type Scraped = (f64, f64, Vec<(f64, f64)>);

/// The host's `pipeline_stage_seconds` histograms, stage by stage.
fn stages(host: &Host) -> Vec<Stage> {
    let Some((200, body)) = notification_e2e::http_get(host.http, "/metrics") else { return Vec::new() };
    let mut by_stage: HashMap<String, Scraped> = HashMap::new();
    for line in body.lines().filter(|l| l.starts_with("notification_pipeline_stage_seconds")) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let label = |key: &str| {
            name_labels.split(&format!("{key}=\"")).nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned)
        };
        let Some(stage) = label("stage") else { continue };
        let entry = by_stage.entry(stage).or_default();
        if name_labels.contains("_sum{") {
            entry.0 = value;
        } else if name_labels.contains("_count{") {
            entry.1 = value;
        } else if let Some(le) = label("le") {
            entry.2.push((if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) }, value));
        }
    }
    let mut out: Vec<Stage> = by_stage
        .into_iter()
        .map(|(name, (sum, count, mut buckets))| {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let p99 = buckets.iter().find(|(_, n)| *n >= count * 0.99).map_or(f64::NAN, |(le, _)| *le);
            Stage { name, mean_ms: sum / count.max(1.0) * 1000.0, p99_ms: p99 * 1000.0, count }
        })
        .collect();
    let order = notification_host::metrics::STAGES;
    out.sort_by_key(|s| order.iter().position(|n| *n == s.name).unwrap_or(usize::MAX));
    out
}
