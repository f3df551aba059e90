//! The console benchmark. Run it with `scripts/bench-console`.
//!
//! 1. Loads N rows (default 1,000,000) spread over 24 monthly partitions,
//!    plus one order whose timeline holds 500 events.
//! 2. Starts the release host and measures, one request at a time, the
//!    order page of those 500 events and the landing page (recent orders
//!    over the whole table), each beside the JSON endpoint that reads the
//!    same rows (the baseline, measured in the same run).
//! 3. Opens the live tail in Chromium, produces records at a steady rate
//!    (default 1,000/s for 20 s) and samples how far behind the browser is
//!    (now minus the record time of the newest row it shows) and the host's
//!    memory, beside the baseline of how long the same records took from
//!    produce to stored.
//!
//! Like the tests, it reads `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use notification_e2e::browser::Browser;
use notification_e2e::{Host, HostOptions, Kafka, Out, fresh_database, produce, rss_kib, unique};
use notification_host::storage::Db;

struct Args {
    host_bin: PathBuf,
    rows: i64,
    rate: u64,
    seconds: u64,
    requests: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { host_bin: PathBuf::new(), rows: 1_000_000, rate: 1000, seconds: 20, requests: 300 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host-bin" => a.host_bin = value.into(),
            "--rows" => a.rows = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--requests" => a.requests = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.host_bin.as_os_str().is_empty() {
        bail!("usage: bench-console --host-bin PATH [--rows N] [--rate R] [--seconds S] [--requests N]");
    }
    Ok(a)
}

/// The busy order: 250 events naming it and 250 sharing its saga id, over
/// the last day, from six services.
const BUSY_ORDER: &str = "order-busy";

async fn add_busy_order(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO notifications (order_id, correlation_id, event_type, source_service, status, created_at, \
           source_topic, kafka_partition, kafka_offset, kafka_timestamp, raw_value, normalizer) \
         SELECT CASE WHEN g % 2 = 0 THEN $1 END, 'saga-busy', 'step.' || (g % 17), \
           (ARRAY['order-service','payment-service','user-service','escrow-service','scheduler','notifier'])[1 + g % 6], \
           (ARRAY['PENDING','ACCEPTED','PICKED_UP','DELIVERED',NULL])[1 + g % 5], \
           now() - interval '1 day' + make_interval(secs => g * 170), 'busy-events', 0, 10000000 + g, \
           now() - interval '1 day' + make_interval(secs => g * 170), \
           convert_to(json_build_object('type', 'step.' || (g % 17), 'payload', json_build_object('order_id', $1, 'n', g))::text, 'UTF8'), \
           'default@1.0.0' \
         FROM generate_series(1, 500) g",
    )
    .bind(BUSY_ORDER)
    .execute(pool)
    .await?;
    // Vacuumed as well as analysed, as a table that has been live a while
    // is: otherwise autovacuum visits every freshly loaded partition during
    // the first measurement.
    sqlx::query("VACUUM (ANALYZE) notifications").execute(pool).await?;
    Ok(())
}

/// Latencies of `n` requests sent one after another.
async fn sequential(client: &reqwest::Client, url: &str, n: u64) -> anyhow::Result<(Histogram<u64>, usize)> {
    let mut h = Histogram::<u64>::new(3)?;
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let response = client.get(url).send().await?;
        if !response.status().is_success() {
            bail!("{url}: {}", response.status());
        }
        bytes = response.bytes().await?.len();
        h.record(t.elapsed().as_micros() as u64)?;
    }
    Ok((h, bytes))
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (db_url, pool) = fresh_database("benchconsole").await;
    let db = Db::from_pool(pool.clone());
    db.migrate().await?;
    notification_e2e::history::load(&pool, a.rows, 24).await?;
    add_busy_order(&pool).await?;
    let prefix = unique("live");
    let topic = format!("{prefix}-events");
    Kafka::shared().create_topic(&topic, 3).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.binary = Some(a.host_bin.clone());
    options.env = vec![("RUST_LOG".into(), "warn".into())];
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let base = format!("http://{}", host.http);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;

    println!(
        "\nrows: {} over 24 months; {} requests per page, one at a time (after 30 to warm up)",
        a.rows, a.requests
    );
    println!("| page | bytes | p50 ms | p99 ms | max ms | baseline (same rows as JSON) | its p99 ms | ratio of p99 |");
    println!("|---|---:|---:|---:|---:|---|---:|---:|");
    let pages = [
        ("order page, 500 events", format!("/ui/order/{BUSY_ORDER}"), format!("/order/{BUSY_ORDER}/timeline")),
        ("landing page, recent orders", "/ui".to_owned(), "/notifications?order=desc&limit=30".to_owned()),
    ];
    let mut worst_p99: f64 = 0.0;
    for (name, page, baseline) in &pages {
        sequential(&client, &format!("{base}{page}"), 30).await?;
        sequential(&client, &format!("{base}{baseline}"), 30).await?;
        let (h, bytes) = sequential(&client, &format!("{base}{page}"), a.requests).await?;
        let (b, _) = sequential(&client, &format!("{base}{baseline}"), a.requests).await?;
        worst_p99 = worst_p99.max(ms(&h, 0.99));
        println!(
            "| {name} | {bytes} | {:.2} | {:.2} | {:.2} | `GET {baseline}` | {:.2} | {:.2} |",
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0,
            ms(&b, 0.99),
            ms(&h, 0.99) / ms(&b, 0.99)
        );
    }
    println!("target: p99 under 50 ms: {worst_p99:.2} ms, {}", if worst_p99 < 50.0 { "met" } else { "MISSED" });

    // The live tail at a steady rate.
    let browser = Browser::start().await;
    browser.open_live_tail(&format!("{base}/ui/live?topic={topic}")).await;
    let pid = host.child.id();
    let rss_before = rss_kib(pid).unwrap_or_default();
    let total = a.rate * a.seconds;
    let producer_topic = topic.clone();
    let rate = a.rate;
    let producing = tokio::spawn(async move {
        let producer = Kafka::shared().producer();
        let start = tokio::time::Instant::now();
        let mut pending = Vec::new();
        for i in 0..total {
            let mut out = Out::new(
                &producer_topic,
                format!(
                    r#"{{"type": "order.status_updated", "source": "order-service", "payload": {{"order_id": "live-{i}", "status": "ACCEPTED"}}}}"#
                ),
            );
            out.timestamp = Some(chrono::Utc::now().timestamp_millis());
            let p = producer.clone();
            pending.push(tokio::spawn(async move { produce(&p, &out).await }));
            if pending.len() >= 100 {
                for h in pending.drain(..) {
                    let _ = h.await;
                }
            }
            tokio::time::sleep_until(start + Duration::from_micros((i + 1) * 1_000_000 / rate)).await;
        }
        for h in pending {
            let _ = h.await;
        }
    });
    let mut lag = Histogram::<u64>::new(3)?;
    let mut rss_max = rss_before;
    let started = Instant::now();
    // Samples while producing, then until the last record is shown.
    loop {
        let newest = browser
            .eval("const r = document.querySelector('#tail tbody tr'); return r ? [Date.now(), Number(r.dataset.atMs), document.querySelectorAll('#tail tbody tr').length] : null")
            .await;
        let sample = newest.as_array().map(|v| v.iter().map(|x| x.as_i64().unwrap_or_default()).collect::<Vec<_>>());
        if let Some([now, at, _]) = sample.as_deref()
            && started.elapsed() > Duration::from_secs(1)
            && !producing.is_finished()
        {
            lag.record((now - at).max(0) as u64)?;
        }
        rss_max = rss_max.max(rss_kib(pid).unwrap_or_default());
        if producing.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    producing.await?;
    let drained = browser
        .wait_for(
            "the last record in the tail",
            // Anywhere in the tail: two writers commit concurrently, so the
            // newest row shown is the last committed, not always the last
            // produced.
            &format!(
                "return [...document.querySelectorAll('#tail tbody tr')].some(r => r.innerText.includes('live-{}'))",
                total - 1
            ),
            Duration::from_secs(30),
        )
        .await;
    let rss_after = rss_kib(pid).unwrap_or_default();
    let skipped = host.metric("notification_console_live_skipped_total").unwrap_or_default();
    let stored: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM stored_at - kafka_timestamp)::float8 * 1000 FROM notifications WHERE source_topic = $1",
    )
    .bind(&topic)
    .fetch_all(&pool)
    .await?;
    let mut store = Histogram::<u64>::new(3)?;
    for s in &stored {
        store.record(s.max(0.0) as u64)?;
    }
    println!("\nlive tail: {} records at {}/s for {} s into one topic, sampled every 100 ms", total, a.rate, a.seconds);
    println!("| | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| browser behind (now − newest record shown) | {} | {} | {} |",
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.99),
        lag.max()
    );
    println!(
        "| baseline: produce → stored, same records | {} | {} | {} |",
        store.value_at_quantile(0.5),
        store.value_at_quantile(0.99),
        store.max()
    );
    println!(
        "stored {} of {total}; the last record was shown {drained:?} after the producer finished; records the stream left out: {skipped}",
        stored.len()
    );
    println!(
        "host memory: {} MiB before, {} MiB at most while streaming, {} MiB after",
        rss_before / 1024,
        rss_max / 1024,
        rss_after / 1024
    );
    let behind = lag.value_at_quantile(0.99);
    println!(
        "target: the browser less than 2 s behind: p99 {behind} ms, {}",
        if behind < 2000 { "met" } else { "MISSED" }
    );
    browser.close().await;
    Ok(())
}
