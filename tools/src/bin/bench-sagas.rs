//! The stuck-saga benchmark. Run it with `scripts/bench-sagas`.
//!
//! It generates sagas of three types (an order saga with branches: payment
//! declined, order cancelled; a support ticket; a refund), each step's delay
//! drawn from a log-normal distribution of its own, and injects into them:
//! stalls (1% of sagas stop at a random step that is not an ending one),
//! status regressions (0.5%: a status the saga had left comes back) and
//! duplicates (0.5%: one event produced twice, byte for byte). Most sagas
//! are history (record times in the last three hours, produced at once);
//! the rest run live, each event produced at its time. The release host
//! learns from them with its default settings while the benchmark asks
//! `GET /sagas/stuck` twice a second, and reports:
//! - recall: stalled sagas listed as overdue, and regressions and
//!   duplicates flagged;
//! - false positives: healthy sagas that were ever listed;
//! - detection delay of live stalls: from the moment the saga became
//!   overdue by the ground truth (its last step plus the true p99 of the
//!   slowest next step) to its first appearance, against the learned p99;
//! - the latency of `GET /sagas/stuck`.
//!
//! Like the tests, it reads `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use notification_e2e::{Host, HostOptions, Kafka, Out, fresh_database, produce, unique};
use serde_json::Value;

struct Args {
    host_bin: PathBuf,
    sagas: usize,
    live_share: f64,
    live_seconds: u64,
    seed: u64,
    /// Rows of a realistic log loaded before the run (today's), which the
    /// learner learns first: the scale `GET /sagas/stuck` is timed at.
    background_rows: i64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        host_bin: PathBuf::new(),
        sagas: 10_000,
        live_share: 0.2,
        live_seconds: 60,
        seed: 7,
        background_rows: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--host-bin" => a.host_bin = value.into(),
            "--sagas" => a.sagas = value.parse()?,
            "--live-share" => a.live_share = value.parse()?,
            "--live-seconds" => a.live_seconds = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            "--background-rows" => a.background_rows = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.host_bin.as_os_str().is_empty() {
        bail!(
            "usage: bench-sagas --host-bin PATH [--sagas 10000] [--live-share 0.2] [--live-seconds 60] [--seed 7] [--background-rows N]"
        );
    }
    Ok(a)
}

/// xorshift64 with uniform and normal draws.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A step: who emits it, its event type and status.
struct StepDef {
    service: &'static str,
    event_type: &'static str,
    status: &'static str,
}

/// Where a step can go: (next step, probability, median delay ms, sigma).
type Edges = &'static [(usize, f64, f64, f64)];

struct TypeDef {
    topic: &'static str,
    steps: &'static [StepDef],
    edges: &'static [Edges],
}

const Z99: f64 = 2.326;

const ORDER_STEPS: &[StepDef] = &[
    StepDef { service: "order-service", event_type: "order.placed", status: "PENDING" },
    StepDef { service: "payment-service", event_type: "payment.authorized", status: "AUTHORIZED" },
    StepDef { service: "payment-service", event_type: "payment.declined", status: "DECLINED" },
    StepDef { service: "order-service", event_type: "order.status_updated", status: "ACCEPTED" },
    StepDef { service: "runner-service", event_type: "order.status_updated", status: "PICKED" },
    StepDef { service: "runner-service", event_type: "order.status_updated", status: "DELIVERED" },
    StepDef { service: "order-service", event_type: "order.cancelled", status: "CANCELLED" },
];
const ORDER_EDGES: &[Edges] = &[
    &[(1, 0.95, 1500.0, 0.5), (2, 0.05, 2500.0, 0.4)],
    &[(3, 1.0, 3000.0, 0.6)],
    &[],
    &[(4, 0.97, 5000.0, 0.5), (6, 0.03, 4000.0, 0.5)],
    &[(5, 1.0, 6000.0, 0.4)],
    &[],
    &[],
];
const TICKET_STEPS: &[StepDef] = &[
    StepDef { service: "support", event_type: "ticket.opened", status: "OPEN" },
    StepDef { service: "support", event_type: "ticket.assigned", status: "ASSIGNED" },
    StepDef { service: "support", event_type: "ticket.resolved", status: "RESOLVED" },
];
const TICKET_EDGES: &[Edges] = &[&[(1, 1.0, 2000.0, 0.7)], &[(2, 1.0, 4000.0, 0.6)], &[]];
const REFUND_STEPS: &[StepDef] = &[
    StepDef { service: "billing", event_type: "refund.requested", status: "REQUESTED" },
    StepDef { service: "billing", event_type: "refund.approved", status: "APPROVED" },
    StepDef { service: "payment-service", event_type: "refund.paid", status: "PAID" },
];
const REFUND_EDGES: &[Edges] = &[&[(1, 1.0, 2500.0, 0.5)], &[(2, 1.0, 1500.0, 0.8)], &[]];

const TYPES: [TypeDef; 3] = [
    TypeDef { topic: "orders", steps: ORDER_STEPS, edges: ORDER_EDGES },
    TypeDef { topic: "tickets", steps: TICKET_STEPS, edges: TICKET_EDGES },
    TypeDef { topic: "refunds", steps: REFUND_STEPS, edges: REFUND_EDGES },
];

/// The true p99 of the slowest step that can follow `step` (ms).
fn true_p99(t: &TypeDef, step: usize) -> f64 {
    t.edges[step].iter().map(|(_, _, median, sigma)| median * (Z99 * sigma).exp()).fold(0.0, f64::max)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Healthy,
    Stall,
    Regression,
    Duplicate,
}

struct Saga {
    id: String,
    kind: Kind,
    ty: usize,
    live: bool,
    /// (record time ms, step, value).
    events: Vec<(i64, usize, String)>,
    /// For a stall: when it became overdue by the ground truth (ms), and
    /// the step it stopped at.
    overdue_at: Option<(i64, usize)>,
}

fn value(t: &TypeDef, saga: &str, step: usize, nonce: u64) -> String {
    let s = &t.steps[step];
    format!(
        r#"{{"type": "{}", "correlation_id": "{saga}", "source": "{}", "event_id": "{nonce:016x}", "payload": {{"order_id": "{saga}-o", "status": "{}"}}}}"#,
        s.event_type, s.service, s.status
    )
}

fn plan(a: &Args, rng: &mut Rng, now_ms: i64, prefix: &str) -> Vec<Saga> {
    let mut sagas = Vec::with_capacity(a.sagas);
    for i in 0..a.sagas {
        let ty = match rng.uniform() {
            x if x < 0.6 => 0,
            x if x < 0.8 => 1,
            _ => 2,
        };
        let t = &TYPES[ty];
        let live = rng.uniform() < a.live_share;
        let kind = match rng.uniform() {
            x if x < 0.01 => Kind::Stall,
            x if x < 0.015 => Kind::Regression,
            x if x < 0.02 => Kind::Duplicate,
            _ => Kind::Healthy,
        };
        // The path through the steps, with its delays.
        let mut path = vec![(0i64, 0usize)];
        let mut step = 0;
        let mut at = 0i64;
        while !t.edges[step].is_empty() {
            let mut pick = rng.uniform();
            let edges = t.edges[step];
            let &(next, _, median, sigma) = edges
                .iter()
                .find(|(_, p, _, _)| {
                    pick -= p;
                    pick <= 0.0
                })
                .unwrap_or(&edges[edges.len() - 1]);
            at += (median * (sigma * rng.normal()).exp()) as i64;
            path.push((at, next));
            step = next;
        }
        let duration = at;
        let start = if live {
            now_ms + 5_000 + (rng.uniform() * a.live_seconds as f64 * 1000.0) as i64
        } else {
            now_ms - 3 * 3_600_000 + (rng.uniform() * (2.5 * 3_600_000.0 - duration as f64).max(0.0)) as i64
        };
        let id = format!("{prefix}-{i:05}");
        let mut overdue_at = None;
        let mut kind = kind;
        if kind == Kind::Stall {
            if path.len() < 2 {
                kind = Kind::Healthy;
            } else {
                let keep = 1 + (rng.next() as usize % (path.len() - 1));
                path.truncate(keep);
                let (last_at, last_step) = path[keep - 1];
                overdue_at = Some((start + last_at + true_p99(t, last_step) as i64, last_step));
            }
        }
        let mut events: Vec<(i64, usize, String)> =
            path.iter().map(|&(d, s)| (start + d, s, value(t, &id, s, rng.next()))).collect();
        match kind {
            Kind::Regression if events.len() >= 3 => {
                let back = events[events.len() - 2].1;
                let last = events[events.len() - 1].0;
                events.push((last + 1000, back, value(t, &id, back, rng.next())));
            }
            Kind::Regression => kind = Kind::Healthy,
            Kind::Duplicate => {
                let k = rng.next() as usize % events.len();
                let again = events[k].clone();
                events.insert(k + 1, again);
            }
            _ => {}
        }
        sagas.push(Saga { id, kind, ty, live, events, overdue_at });
    }
    sagas
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// How many sagas are listed as stuck now.
async fn seen_now(client: &reqwest::Client, base: &str) -> anyhow::Result<usize> {
    Ok(stuck_now(client, base).await?.0.len())
}

/// Every stuck saga listed now: key → reasons; and the first page's time.
async fn stuck_now(client: &reqwest::Client, base: &str) -> anyhow::Result<(HashMap<String, Vec<String>>, f64)> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    let mut first_ms = 0.0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{base}/sagas/stuck?limit=500&cursor={c}"),
            None => format!("{base}/sagas/stuck?limit=500"),
        };
        let started = Instant::now();
        let page: Value = serde_json::from_slice(&client.get(&url).send().await?.error_for_status()?.bytes().await?)?;
        if cursor.is_none() {
            first_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        for s in page["sagas"].as_array().into_iter().flatten() {
            let reasons = s["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_owned));
            out.insert(s["correlationId"].as_str().unwrap_or_default().to_owned(), reasons.collect());
        }
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok((out, first_ms)),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let prefix = unique("sagas");
    let (db_url, pool) = fresh_database("benchsagas").await;
    let kafka = Kafka::shared();
    let topics: Vec<String> = TYPES.iter().map(|t| format!("{prefix}-{}", t.topic)).collect();
    kafka.create_topics(&topics, 3).await;
    let mut options = HostOptions::new(&db_url, &prefix);
    options.binary = Some(a.host_bin.clone());
    options.env = vec![("RUST_LOG".into(), "warn".into())];
    if a.background_rows > 0 {
        notification_host::storage::Db::from_pool(pool.clone()).migrate().await?;
        notification_e2e::history::load(&pool, a.background_rows, 0).await?;
    }
    let host = Host::start(&options);
    host.wait_ready(Duration::from_secs(60));
    let base = format!("http://{}", host.http);
    if a.background_rows > 0 {
        // The learner learns the loaded log first.
        let started = Instant::now();
        loop {
            let learned: i64 = sqlx::query_scalar("SELECT rows_learned FROM saga_learner").fetch_one(&pool).await?;
            if learned >= a.background_rows {
                break;
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!("the learner learned {learned} of {} rows in 30 minutes", a.background_rows);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&pool).await?;
        println!(
            "the learner learned the {} loaded rows ({sagas} sagas) in {:.1} s: {:.0} rows/s",
            a.background_rows,
            started.elapsed().as_secs_f64(),
            a.background_rows as f64 / started.elapsed().as_secs_f64()
        );
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;

    let mut rng = Rng(a.seed | 1);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let sagas = plan(&a, &mut rng, now_ms, &prefix);
    let mut events: Vec<(i64, usize, usize)> = Vec::new(); // (time, saga, event index)
    for (i, s) in sagas.iter().enumerate() {
        for (j, e) in s.events.iter().enumerate() {
            events.push((e.0, i, j));
        }
    }
    events.sort_by_key(|e| (e.0, e.1, e.2));
    let count =
        |k: Kind, live: Option<bool>| sagas.iter().filter(|s| s.kind == k && live.is_none_or(|l| s.live == l)).count();
    println!(
        "{} sagas ({} live), {} events: {} stalled ({} live), {} regressions, {} duplicates",
        sagas.len(),
        sagas.iter().filter(|s| s.live).count(),
        events.len(),
        count(Kind::Stall, None),
        count(Kind::Stall, Some(true)),
        count(Kind::Regression, None),
        count(Kind::Duplicate, None)
    );

    // Produce: the history at once, then each live event at its time,
    // while a poller asks for the stuck sagas.
    let producer = kafka.producer();
    let started = Instant::now();
    let start_ms = chrono::Utc::now().timestamp_millis();
    let done = Arc::new(AtomicBool::new(false));
    let poll_done = done.clone();
    let poll_base = base.clone();
    let poll_client = client.clone();
    let poller = tokio::spawn(async move {
        let mut seen: HashMap<String, (i64, Vec<String>)> = HashMap::new();
        let mut latencies = Vec::new();
        loop {
            if poll_done.load(Ordering::Relaxed) {
                return (seen, latencies);
            }
            if let Ok((now, ms)) = stuck_now(&poll_client, &poll_base).await {
                latencies.push(ms);
                let t = chrono::Utc::now().timestamp_millis();
                for (k, reasons) in now {
                    let entry = seen.entry(k).or_insert((t, Vec::new()));
                    for r in reasons {
                        if !entry.1.contains(&r) {
                            entry.1.push(r);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut sent = 0usize;
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    use futures_util::StreamExt as _;
    for &(at, i, j) in &events {
        let s = &sagas[i];
        let wait = at - chrono::Utc::now().timestamp_millis();
        if wait > 0 {
            while in_flight.next().await.is_some() {}
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let mut out = Out::new(&topics[s.ty], s.events[j].2.clone());
        out.key = Some(s.id.as_bytes().to_vec());
        out.timestamp = Some(at);
        let producer = producer.clone();
        in_flight.push(async move { produce(&producer, &out).await });
        if in_flight.len() >= 2000 {
            in_flight.next().await;
        }
        sent += 1;
        if sent.is_multiple_of(10_000) {
            eprintln!("produced {sent} of {} after {:.0} s", events.len(), started.elapsed().as_secs_f64());
        }
    }
    while in_flight.next().await.is_some() {}
    println!("produced {sent} records in {:.0} s", started.elapsed().as_secs_f64());

    // Wait for every live stall to be due, plus room for detection.
    let last_due = sagas.iter().filter_map(|s| s.overdue_at.map(|o| o.0)).max().unwrap_or(start_ms);
    let deadline_ms = last_due.max(chrono::Utc::now().timestamp_millis()) + 45_000;
    while chrono::Utc::now().timestamp_millis() < deadline_ms {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    done.store(true, Ordering::Relaxed);
    let (seen, mut latencies) = poller.await?;

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications").fetch_one(&pool).await?;
    let shapes: Value =
        serde_json::from_slice(&client.get(format!("{base}/sagas/types")).send().await?.bytes().await?)?;
    // Learned p99 of the next steps, by (saga type name, step event).
    let mut learned: HashMap<(String, String), f64> = HashMap::new();
    for t in shapes["types"].as_array().into_iter().flatten() {
        for s in t["steps"].as_array().into_iter().flatten() {
            if let Some(p) = s["nextStepP99Ms"].as_f64() {
                learned.insert(
                    (t["sagaType"].as_str().unwrap_or_default().into(), s["event"].as_str().unwrap_or_default().into()),
                    p,
                );
            }
        }
    }
    let event_of = |t: &TypeDef, step: usize| format!("{} ({})", t.steps[step].event_type, t.steps[step].status);

    let listed = |s: &Saga, reason: &str| seen.get(&s.id).is_some_and(|(_, r)| r.iter().any(|x| x == reason));
    let report = |name: &str, k: Kind, reason: &str| {
        let all: Vec<&Saga> = sagas.iter().filter(|s| s.kind == k).collect();
        let found = all.iter().filter(|s| listed(s, reason)).count();
        println!("| {name} | {} | {found} | {:.2}% |", all.len(), 100.0 * found as f64 / all.len().max(1) as f64);
        (found, all.len())
    };
    println!("\n| injected | sagas | listed | recall |\n|---|---:|---:|---:|");
    let (stall_found, stall_all) = report("stalled (listed as overdue)", Kind::Stall, "overdue");
    let (reg_found, reg_all) = report("status regression", Kind::Regression, "status_regression");
    let (dup_found, dup_all) = report("duplicate", Kind::Duplicate, "duplicate");
    let healthy: Vec<&Saga> = sagas.iter().filter(|s| s.kind == Kind::Healthy).collect();
    let false_positives: Vec<&&Saga> = healthy.iter().filter(|s| seen.contains_key(&s.id)).collect();
    let fp_share = 100.0 * false_positives.len() as f64 / healthy.len().max(1) as f64;
    println!(
        "\nhealthy sagas listed (false positives): {} of {} ({fp_share:.3}%; {} of them live)",
        false_positives.len(),
        healthy.len(),
        false_positives.iter().filter(|s| s.live).count()
    );
    for s in false_positives.iter().take(5) {
        println!(
            "  e.g. {} ({:?}): {:?}",
            s.id,
            if s.live { "live" } else { "history" },
            seen.get(&s.id).map(|x| &x.1)
        );
    }

    // Detection delay of live stalls.
    let mut delays = Vec::new();
    let mut over_bound = 0;
    let mut ratio = Vec::new();
    for s in sagas.iter().filter(|s| s.kind == Kind::Stall && s.live) {
        let (Some((due, step)), Some((first, _))) = (s.overdue_at, seen.get(&s.id)) else { continue };
        let delay = (first - due) as f64;
        let t = &TYPES[s.ty];
        let p99 = learned.get(&(event_of(t, 0), event_of(t, step))).copied().unwrap_or(f64::NAN);
        delays.push(delay / 1000.0);
        ratio.push(delay / p99);
        if delay > 2.0 * p99 || p99.is_nan() {
            over_bound += 1;
        }
    }
    delays.sort_by(f64::total_cmp);
    ratio.sort_by(f64::total_cmp);
    println!(
        "\ndetection delay of {} live stalls (from overdue by the ground truth): p50 {:.1} s, p99 {:.1} s, max {:.1} s; \
         over the learned p99: p50 {:.2}×, max {:.2}×; {over_bound} beyond 2× the learned p99",
        delays.len(),
        pct(&delays, 0.5),
        pct(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN),
        pct(&ratio, 0.5),
        ratio.last().copied().unwrap_or(f64::NAN)
    );
    latencies.sort_by(f64::total_cmp);
    println!(
        "GET /sagas/stuck (first page of up to 500): {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let sagas_stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&pool).await?;
    println!(
        "rows stored: {stored} ({sent} produced by this run); sagas tracked: {sagas_stored}; listed at the end: {}",
        seen_now(&client, &base).await?
    );

    let mut missed = Vec::new();
    if stall_found * 100 < stall_all * 99 {
        missed.push(format!("recall {stall_found}/{stall_all} is under 99%"));
    }
    if reg_found < reg_all || dup_found < dup_all {
        missed.push(format!("regressions {reg_found}/{reg_all}, duplicates {dup_found}/{dup_all}: not all flagged"));
    }
    if fp_share > 0.1 {
        missed.push(format!("false positives {fp_share:.3}% are over 0.1%"));
    }
    if over_bound > 0 {
        missed.push(format!("{over_bound} live stalls were found later than 2× the learned p99"));
    }
    if stored != sent as i64 + a.background_rows {
        missed.push(format!("{stored} rows stored of {}", sent as i64 + a.background_rows));
    }
    if missed.is_empty() {
        println!("\ntargets: met");
    } else {
        println!("\ntargets MISSED: {}", missed.join("; "));
    }
    Ok(())
}
