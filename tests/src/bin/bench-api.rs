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
use notification_host::storage::{Db, ListFilter};
use sqlx::postgres::PgPoolOptions;

const ORDERS: i64 = 100_000;
const CUSTOMERS: i64 = 20_000;

struct Args {
    database_url: String,
    api: String,
    rows: i64,
    rate: u64,
    seconds: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args { database_url: String::new(), api: String::new(), rows: 1_000_000, rate: 500, seconds: 20 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => a.database_url = value,
            "--api" => a.api = value,
            "--rows" => a.rows = value.parse()?,
            "--rate" => a.rate = value.parse()?,
            "--seconds" => a.seconds = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.database_url.is_empty() || a.api.is_empty() {
        bail!("usage: bench-api --database-url URL --api http://HOST:PORT [--rows N] [--rate R] [--seconds S]");
    }
    Ok(a)
}

/// About 70% of rows name their order; the rest (payment, user events) are
/// tied to it only by the saga id. Values are ~500-byte JSON documents.
async fn load(db: &Db, rows: i64) -> anyhow::Result<()> {
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(db.pool()).await?;
    if existing >= rows {
        println!("table already holds {existing} rows; not loading");
        return Ok(());
    }
    let started = Instant::now();
    let chunk = 200_000;
    let mut from = existing + 1;
    while from <= rows {
        let to = (from + chunk - 1).min(rows);
        sqlx::query(
            "INSERT INTO notifications (customer_id, runner_id, order_id, event, status, created_at, source_topic, \
               event_type, correlation_id, source_service, kafka_partition, kafka_offset, kafka_headers, kafka_timestamp, \
               raw_value, normalizer) \
             SELECT d.customer_id, d.runner_id, d.order_id, d.doc::jsonb, d.status, d.ts, d.topic, d.event_type, \
               d.saga, d.source, (g % 3)::int, g, '[]'::jsonb, d.ts, convert_to(d.doc, 'UTF8'), 'default@1.0.0' \
             FROM generate_series($1::int8, $2::int8) g, LATERAL ( \
               SELECT \
                 CASE WHEN g % 10 < 7 THEN 'order-' || (g % $3) END AS order_id, \
                 CASE WHEN g % 10 < 4 THEN 'cust-' || (g % $4) END AS customer_id, \
                 CASE WHEN g % 10 = 5 THEN 'runner-' || (g % 5000) END AS runner_id, \
                 'saga-' || (g % $3) AS saga, \
                 (ARRAY['order_events','order-events','payment_events','payment_commands','user_events','user_commands','escrow-events','saga-events'])[1 + g % 8] AS topic, \
                 (ARRAY['order.created','order.status_updated','payment.authorized','authorize_payment','user.payment_info_retrieved','get_payment_info','escrow.held','saga.step'])[1 + g % 8] AS event_type, \
                 (ARRAY['order-service','payment-service','user-service',NULL])[1 + g % 4] AS source, \
                 (ARRAY['PENDING','ACCEPTED','COMPLETED',NULL])[1 + g % 4] AS status, \
                 timestamptz '2025-01-01' + make_interval(secs => g * 7 + (g % 13)) AS ts, \
                 json_build_object('type', 'order.created', 'correlation_id', 'saga-' || (g % $3), 'source', 'order-service', \
                   'timestamp', '2025-04-04T10:00:00.123456', 'payload', json_build_object('order_id', g % $3, \
                   'customer_id', 'cust-' || (g % $4), 'status', 'PENDING', 'saga_id', 'saga-' || (g % $3), \
                   'order_details', json_build_object('foodItems', json_build_array(json_build_object('item_name', 'Iced latte', \
                   'quantity', 2, 'price', 4.5)), 'storeLocation', 'Student Union', 'deliveryLocation', 'Dorm ' || (g % 40), \
                   'note', repeat('x', 120))))::text AS doc \
             ) d",
        )
        .bind(from)
        .bind(to)
        .bind(ORDERS)
        .bind(CUSTOMERS)
        .execute(db.pool())
        .await?;
        println!("loaded {to} rows ({:.0} s)", started.elapsed().as_secs_f64());
        from = to + 1;
    }
    sqlx::query("ANALYZE notifications").execute(db.pool()).await?;
    Ok(())
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
    let db = Db::from_pool(pool);
    load(&db, a.rows).await?;

    println!("\nQuery plans (every one must use an index):");
    let filter = ListFilter {
        customer_id: Some("cust-17".into()),
        event_type: Some("order.created".into()),
        ..ListFilter::default()
    };
    let mut seq_scans = Vec::new();
    for (name, plan) in db.explain_api_queries("order-17", "saga-17", &filter).await? {
        let uses_index = plan.contains("Index");
        println!("- {name}: {}", plan.lines().next().unwrap_or_default().trim());
        if !uses_index || plan.contains("Seq Scan on notifications") {
            seq_scans.push(name);
            println!("{plan}");
        }
    }
    if !seq_scans.is_empty() {
        bail!("queries without an index: {seq_scans:?}");
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
    Ok(())
}
