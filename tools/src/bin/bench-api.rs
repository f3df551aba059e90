//! The API benchmark: loads a realistic audit log into PostgreSQL, checks
//! that every API query is served by an index, then measures the running
//! host's HTTP API under load. Run it with `scripts/bench-api`.
//!
//! Usage: bench-api --database-url URL --api http://HOST:PORT [--rows N] [--rate R] [--seconds S]
//!
//! For each endpoint it measures
//! - open loop: requests sent on a fixed schedule at R per second; latency is
//!   counted from the scheduled send time, so a slow answer cannot hide the
//!   requests queued behind it;
//! - closed loop: 16 clients sending back to back, for the peak throughput.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use notification_host::storage::{Db, QuerySample, full_scans_of_rows};
use sqlx::postgres::PgPoolOptions;

use notification_e2e::history::{CUSTOMERS, ORDERS};

/// The months the rows are spread over, ending now.
const HISTORY_MONTHS: u32 = 24;

struct Args {
    database_url: String,
    api: String,
    rows: i64,
    rate: u64,
    seconds: u64,
    /// Records the host drains while the mixed-load phase measures the API.
    backlog: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        database_url: String::new(),
        api: String::new(),
        rows: 1_000_000,
        rate: 500,
        seconds: 20,
        backlog: 300_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => a.database_url = value,
            "--api" => a.api = value,
            "--rows" => a.rows = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            "--backlog" => a.backlog = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.database_url.is_empty() || a.api.is_empty() {
        bail!(
            "usage: bench-api --database-url URL --api http://HOST:PORT [--rows N] [--rate R] [--seconds S] [--backlog N]"
        );
    }
    Ok(a)
}

struct Endpoint {
    name: &'static str,
    path: fn(u64) -> String,
}

const ENDPOINTS: [Endpoint; 3] = [
    Endpoint { name: "GET /order/{id}/latest", path: |i| format!("/order/order-{}/latest", i % ORDERS as u64) },
    Endpoint { name: "GET /order/{id}/timeline", path: |i| format!("/order/order-{}/timeline", i % ORDERS as u64) },
    Endpoint {
        name: "GET /notifications?customer_id&event_type",
        path: |i| format!("/notifications?customer_id=cust-{}&event_type=order.created&limit=50", i % CUSTOMERS as u64),
    },
];

struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

fn scramble(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17
}

async fn open_loop(client: &reqwest::Client, base: &str, e: &Endpoint, rate: u64, seconds: u64) -> anyhow::Result<Run> {
    let total = rate * seconds;
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due).await;
        let (client, url) = (client.clone(), format!("{base}{}", (e.path)(scramble(i))));
        handles.push(tokio::spawn(async move {
            let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success() || r.status() == 404);
            (due.elapsed(), ok)
        }));
    }
    let mut run = Run { requests: 0, errors: 0, elapsed: Duration::ZERO, latency: Histogram::new(3)? };
    for h in handles {
        let (latency, ok) = h.await?;
        run.requests += 1;
        run.errors += u64::from(!ok);
        run.latency.record(latency.as_micros() as u64)?;
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

async fn closed_loop(client: &reqwest::Client, base: &str, e: &'static Endpoint, seconds: u64) -> anyhow::Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..16u64 {
        let (client, base) = (client.clone(), base.to_owned());
        workers.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let (mut n, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                let url = format!("{base}{}", (e.path)(scramble(w * 1_000_000 + n)));
                let t = Instant::now();
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success() || r.status() == 404);
                h.record(t.elapsed().as_micros() as u64).expect("record");
                n += 1;
                errors += u64::from(!ok);
            }
            (h, n, errors)
        }));
    }
    let mut run = Run { requests: 0, errors: 0, elapsed: Duration::ZERO, latency: Histogram::new(3)? };
    for w in workers {
        let (h, n, errors) = w.await?;
        run.latency.add(h)?;
        run.requests += n;
        run.errors += errors;
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

fn print(name: &str, mode: &str, run: &Run) {
    let ms = |q: f64| run.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| {name:<42} | {mode:<13} | {:>7} | {:>7.0} | {:>7.2} | {:>7.2} | {:>8.2} | {:>6} |",
        run.requests,
        run.requests as f64 / run.elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        run.latency.max() as f64 / 1000.0,
        run.errors
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let pool = PgPoolOptions::new().max_connections(4).connect(&a.database_url).await?;
    notification_e2e::history::load(&pool, a.rows, HISTORY_MONTHS).await?;
    let db = Db::from_pool(pool);

    println!("\nQuery plans (every one must use an index on the partitions that hold rows):");
    let now = chrono::Utc::now();
    let sample = QuerySample {
        order_id: "order-17".into(),
        correlation_id: "saga-17".into(),
        customer_id: "cust-17".into(),
        runner_id: "runner-17".into(),
        event_type: "order.created".into(),
        since: now - chrono::Duration::days(40),
        until: now - chrono::Duration::days(39),
    };
    let holding = db.partitions_holding_rows().await?;
    println!(
        "partitions holding rows: {} ({} .. {})",
        holding.len(),
        holding.first().map_or("", String::as_str),
        holding.last().map_or("", String::as_str)
    );
    let mut plans = db.explain_api_queries(&sample).await?;
    plans.extend(db.explain_console_queries("order-17", "cust-17").await?);
    let mut unindexed = Vec::new();
    for (name, plan) in plans {
        let scans = full_scans_of_rows(&plan, &holding);
        println!("- {name}: {}", plan.lines().next().unwrap_or_default().trim());
        if !plan.contains("Index") || !scans.is_empty() {
            unindexed.push(name);
            println!("{plan}");
        }
    }
    if !unindexed.is_empty() {
        bail!("queries without an index: {unindexed:?}");
    }

    let client = reqwest::Client::builder().pool_max_idle_per_host(64).timeout(Duration::from_secs(10)).build()?;
    // Warm the connection pool and PostgreSQL's cache.
    for i in 0..2000 {
        let _ = client.get(format!("{}{}", a.api, (ENDPOINTS[i % 3].path)(scramble(i as u64)))).send().await;
    }
    println!(
        "\nrows: {}; open loop at {} requests/s for {} s; closed loop: 16 clients for 10 s",
        a.rows, a.rate, a.seconds
    );
    println!(
        "| endpoint                                   | mode          | requests |   req/s | p50 ms  | p99 ms  |  max ms  | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut latest_p99_ms = f64::MAX;
    for e in &ENDPOINTS {
        let run = open_loop(&client, &a.api, e, a.rate, a.seconds).await?;
        if e.name.contains("latest") {
            latest_p99_ms = run.latency.value_at_quantile(0.99) as f64 / 1000.0;
        }
        print(e.name, &format!("{} req/s", a.rate), &run);
        let run = closed_loop(&client, &a.api, e, 10).await?;
        print(e.name, "16 clients", &run);
    }
    let verdict = if latest_p99_ms < 10.0 { "met" } else { "MISSED" };
    println!("\ntarget: p99 of /order/{{id}}/latest under 10 ms at {} req/s: {latest_p99_ms:.2} ms, {verdict}", a.rate);
    if a.backlog > 0 {
        mixed_load(&client, &a, latest_p99_ms).await?;
    }
    Ok(())
}

/// The host's count of stored records, from its metrics.
async fn stored_total(client: &reqwest::Client, api: &str) -> anyhow::Result<f64> {
    let text = client.get(format!("{api}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("notification_records_stored_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The API while the host drains a backlog at full speed: `--backlog`
/// records are preloaded into a topic the host has not seen, then
/// `GET /order/{id}/latest` is measured open-loop from the first stored
/// record of the backlog to the last, beside the same endpoint measured
/// idle above.
async fn mixed_load(client: &reqwest::Client, a: &Args, idle_p99_ms: f64) -> anyhow::Result<()> {
    let kafka = notification_e2e::Kafka::shared();
    let topic = notification_e2e::unique("backlog");
    kafka.create_topic(&topic, 3).await;
    let producer = kafka.producer();
    // Counted before the first record is produced: the host may pick the
    // topic up while the preload is still running.
    let before = stored_total(client, &a.api).await?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..a.backlog {
        let value = format!(
            r#"{{"type": "order.status_updated", "correlation_id": "saga-{o}", "source": "order-service", "payload": {{"order_id": "order-{o}", "status": "ACCEPTED", "note": "{pad}"}}}}"#,
            o = i as i64 % ORDERS,
            pad = "x".repeat(200 + i % 300)
        );
        let p = producer.clone();
        let out = notification_e2e::Out::new(&topic, value);
        pending.push(tokio::spawn(async move { notification_e2e::produce(&p, &out).await }));
        if pending.len() >= 2000 {
            for h in pending.drain(..) {
                h.await?;
            }
        }
    }
    for h in pending {
        h.await?;
    }
    println!(
        "\nmixed load: {} records preloaded in {:.1} s; the host picks the topic up at its next refresh",
        a.backlog,
        started.elapsed().as_secs_f64()
    );
    let wait = Instant::now();
    while stored_total(client, &a.api).await? <= before {
        anyhow::ensure!(wait.elapsed() < Duration::from_secs(60), "the host did not start on the backlog");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_started = Instant::now();
    let first = stored_total(client, &a.api).await?;
    // Measure for as long as the drain lasts, in slices, until it is done.
    let mut latency = Histogram::<u64>::new(3)?;
    let (mut requests, mut errors) = (0u64, 0u64);
    loop {
        let run = open_loop(client, &a.api, &ENDPOINTS[0], a.rate, 2).await?;
        latency.add(&run.latency)?;
        requests += run.requests;
        errors += run.errors;
        if stored_total(client, &a.api).await? >= before + a.backlog as f64 {
            break;
        }
        anyhow::ensure!(drain_started.elapsed() < Duration::from_secs(900), "the backlog was not drained");
    }
    let drained = stored_total(client, &a.api).await? - first;
    let took = drain_started.elapsed();
    let p99 = latency.value_at_quantile(0.99) as f64 / 1000.0;
    println!("| `GET /order/{{id}}/latest` at {} req/s | requests | p50 ms | p99 ms | max ms | errors |", a.rate);
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| while the host drains the backlog ({:.0} records/s for {:.1} s) | {requests} | {:.2} | {p99:.2} | {:.2} | {errors} |",
        drained / took.as_secs_f64(),
        took.as_secs_f64(),
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.max() as f64 / 1000.0
    );
    println!("| idle (above, same run) | | | {idle_p99_ms:.2} | | |");
    let verdict = if p99 < 10.0 { "met" } else { "MISSED" };
    println!(
        "target: p99 under 10 ms at {} req/s during the drain: {p99:.2} ms ({:.1}x idle), {verdict}",
        a.rate,
        p99 / idle_p99_ms
    );
    Ok(())
}
