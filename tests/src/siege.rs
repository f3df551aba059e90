//! The hostile-load suite: one host under steady ingest while, one after
//! another, each attack of issue 23 is made on it. `scripts/siege` runs it
//! at full size (tools/src/bin/siege.rs, release build); the e2e test
//! `siege::` runs a short version in `scripts/test` (debug build).
//!
//! Each attack prints one `SIEGE` line: the records produced while it ran
//! and how many of them were stored, the longest gap between consecutive
//! stored rows of the steady load (by `stored_at`), the host's peak RSS
//! (alone and with its children, which a pod's limit counts too), and the
//! 5xx answers to the attack's requests. The run fails when a produced
//! record is not stored, a gap passes 2 s (except during the deliberate
//! database outage and the deliberate stall), the host's RSS passes
//! `MEMORY_LIMIT`, or a request that is the client's error gets a 5xx;
//! and when an attack did not take place (a module that never went live, a
//! retention run that never met the long read): a suite that no longer
//! attacks must not pass.

mod attacks;
pub mod client;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::{Host, HostOptions, Kafka, Postgres, incompressible, rss_kib, unique};

/// How large a siege is.
#[derive(Debug, Clone)]
pub struct Size {
    /// Records per second of the steady load, spread over `topics`.
    pub rate: u64,
    pub topics: usize,
    pub partitions: i32,
    /// How long each attack lasts (the outage has its own length).
    pub attack: Duration,
    /// How long PostgreSQL is down.
    pub outage: Duration,
    /// Concurrent readers in the reads attack.
    pub readers: usize,
    /// Requests with made-up methods.
    pub methods: usize,
    /// Records of one order with large values (the hot order), and their size.
    pub hot_rows: usize,
    pub hot_value_bytes: usize,
    /// Rows written straight into the table before the siege, so that
    /// unindexed filters have a table to walk.
    pub preload_rows: u64,
    /// Expired rows retention finds when the long read starts.
    pub expired_rows: u64,
    /// Records per second to each hostile module's topic.
    pub hostile_rate: u64,
    /// The compile bomb's nesting (see [`crate::fixtures::compile_bomb_wat`]).
    pub bomb_blocks: usize,
    /// `MODULE_COMPILE_MEMORY` and `MODULE_COMPILE_TIMEOUT` of the host.
    pub compile_memory: u64,
    pub compile_timeout: Duration,
    /// The longest gap allowed between stored rows of the steady load.
    pub max_gap: Duration,
}

/// A size from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Size {
    /// What `scripts/siege` runs: 2,000 records/s over 20 topics, 50
    /// readers, 10,000 methods, PostgreSQL down 20 s.
    pub fn full() -> Size {
        Size {
            rate: 2000,
            topics: 20,
            partitions: 2,
            attack: Duration::from_secs(20),
            outage: Duration::from_secs(20),
            readers: 50,
            methods: 10_000,
            hot_rows: 300,
            hot_value_bytes: 900_000,
            preload_rows: 1_000_000,
            expired_rows: 20_000,
            hostile_rate: 20,
            bomb_blocks: 1200,
            compile_memory: 384 << 20,
            compile_timeout: Duration::from_secs(60),
            max_gap: MAX_GAP,
        }
    }

    /// What `scripts/test` runs (about two minutes).
    pub fn short() -> Size {
        Size {
            rate: 200,
            topics: 20,
            partitions: 1,
            attack: Duration::from_secs(4),
            outage: Duration::from_secs(10),
            readers: 12,
            methods: 1000,
            hot_rows: 24,
            hot_value_bytes: 900_000,
            preload_rows: 20_000,
            expired_rows: 2_000,
            hostile_rate: 10,
            bomb_blocks: 1000,
            compile_memory: 256 << 20,
            compile_timeout: Duration::from_secs(30),
            max_gap: MAX_GAP_SHORT,
        }
    }

    /// `self` with any `SIEGE_*` override from the environment
    /// (`SIEGE_RATE`, `SIEGE_TOPICS`, `SIEGE_ATTACK_SECS`, `SIEGE_OUTAGE_SECS`,
    /// `SIEGE_READERS`, `SIEGE_METHODS`, `SIEGE_HOT_ROWS`, `SIEGE_PRELOAD_ROWS`,
    /// `SIEGE_HOSTILE_RATE`, `SIEGE_BOMB_BLOCKS`, `SIEGE_COMPILE_MEMORY_MIB`,
    /// `SIEGE_COMPILE_TIMEOUT_SECS`).
    pub fn with_env(self) -> Size {
        Size {
            rate: env_or("SIEGE_RATE", self.rate),
            topics: env_or("SIEGE_TOPICS", self.topics as u64) as usize,
            partitions: self.partitions,
            attack: Duration::from_secs(env_or("SIEGE_ATTACK_SECS", self.attack.as_secs())),
            outage: Duration::from_secs(env_or("SIEGE_OUTAGE_SECS", self.outage.as_secs())),
            readers: env_or("SIEGE_READERS", self.readers as u64) as usize,
            methods: env_or("SIEGE_METHODS", self.methods as u64) as usize,
            hot_rows: env_or("SIEGE_HOT_ROWS", self.hot_rows as u64) as usize,
            hot_value_bytes: self.hot_value_bytes,
            preload_rows: env_or("SIEGE_PRELOAD_ROWS", self.preload_rows),
            expired_rows: self.expired_rows,
            hostile_rate: env_or("SIEGE_HOSTILE_RATE", self.hostile_rate),
            bomb_blocks: env_or("SIEGE_BOMB_BLOCKS", self.bomb_blocks as u64) as usize,
            compile_memory: env_or("SIEGE_COMPILE_MEMORY_MIB", self.compile_memory >> 20) << 20,
            compile_timeout: Duration::from_secs(env_or("SIEGE_COMPILE_TIMEOUT_SECS", self.compile_timeout.as_secs())),
            max_gap: self.max_gap,
        }
    }
}

/// How to run a siege.
#[derive(Debug, Clone)]
pub struct Options {
    pub size: Size,
    /// The host binary (None: the debug build beside the tests).
    pub host_bin: Option<PathBuf>,
    /// Where the fixture components are (`NORMALIZER_WASM_DIR`).
    pub wasm_dir: PathBuf,
    /// Only the attacks whose names contain one of these (all when empty).
    pub only: Vec<String>,
}

impl Options {
    /// `size`, the fixtures named by `NORMALIZER_WASM_DIR`, `SIEGE_ONLY`
    /// (comma-separated attack names) when set.
    pub fn new(size: Size) -> Options {
        let wasm_dir = std::env::var_os("NORMALIZER_WASM_DIR")
            .expect("NORMALIZER_WASM_DIR is not set: run with scripts/test or scripts/siege")
            .into();
        let only = std::env::var("SIEGE_ONLY")
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        Options { size, host_bin: None, wasm_dir, only }
    }
}

/// The host's memory limit in the siege, and as `MEMORY_LIMIT` says it.
pub const MEMORY_LIMIT_MIB: u64 = 512;
/// How long the pipeline may stand still before `/ready/ingest` says so.
const STALL_AFTER: Duration = Duration::from_secs(3);
/// The longest gap allowed between stored rows of the steady load.
pub const MAX_GAP: Duration = Duration::from_secs(2);
/// The same for the short run in `scripts/test`: the debug build serializes
/// answers several times slower, on CI's two shared cores. A reader that
/// starves the writers makes gaps of ten seconds and more, so 3 s still
/// catches one.
pub const MAX_GAP_SHORT: Duration = Duration::from_secs(3);

/// What one attack did to the host.
#[derive(Debug, Clone, Default)]
pub struct AttackReport {
    pub name: String,
    pub seconds: f64,
    pub produced: usize,
    pub stored: usize,
    pub longest_gap: Option<f64>,
    pub gap_exempt: bool,
    pub latency_p99: Option<f64>,
    pub latency_max: Option<f64>,
    pub peak_rss_kib: u64,
    pub peak_tree_kib: u64,
    /// Cores used by the siege's processes, and by other work on the machine.
    pub cpu_siege: Option<f64>,
    pub cpu_others: Option<f64>,
    pub requests: u64,
    pub answers_5xx: u64,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

impl AttackReport {
    /// The `SIEGE` line.
    pub fn line(&self) -> String {
        let gap = match self.longest_gap {
            Some(g) => format!("{g:.2} s{}", if self.gap_exempt { " (exempt)" } else { "" }),
            None => "none measured".into(),
        };
        let latency = match (self.latency_p99, self.latency_max) {
            (Some(p), Some(m)) => format!(", stored after p99 {p:.2} s, max {m:.2} s"),
            _ => String::new(),
        };
        let notes = if self.notes.is_empty() { String::new() } else { format!("; {}", self.notes.join("; ")) };
        let cpu = match (self.cpu_siege, self.cpu_others) {
            (Some(s), Some(o)) => format!(", CPU {s:.1} cores (other work on the machine {o:.1})"),
            _ => String::new(),
        };
        format!(
            "SIEGE {}: {:.0} s, produced {}, stored {}, longest gap {gap}{latency}, peak RSS {} MiB (with children {} MiB), 5xx {} of {} requests{cpu}{notes}{}",
            self.name,
            self.seconds,
            self.produced,
            self.stored,
            self.peak_rss_kib / 1024,
            self.peak_tree_kib / 1024,
            self.answers_5xx,
            self.requests,
            if self.failures.is_empty() { String::new() } else { format!(" — FAILED: {}", self.failures.join("; ")) }
        )
    }
}

/// The whole siege.
#[derive(Debug, Default)]
pub struct Report {
    pub attacks: Vec<AttackReport>,
    pub failures: Vec<String>,
    pub lines: Vec<String>,
}

/// The requests an attack made, by answer.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub by_status: BTreeMap<u16, u64>,
    pub no_answer: u64,
    /// A few of the requests that got a 5xx or no answer, for the report.
    pub examples: Vec<String>,
    pub bytes: u64,
}

impl Tally {
    pub fn count(&mut self, what: &str, answer: &std::io::Result<client::Answer>) {
        match answer {
            Ok(a) => {
                *self.by_status.entry(a.status).or_default() += 1;
                self.bytes += a.body_len as u64;
                if a.status >= 500 && self.examples.len() < 5 {
                    let body = a.text().unwrap_or_default();
                    self.examples.push(format!("{what} → {} {}", a.status, body.chars().take(200).collect::<String>()));
                }
            }
            Err(e) => {
                self.no_answer += 1;
                if self.examples.len() < 5 {
                    self.examples.push(format!("{what} → no answer ({e})"));
                }
            }
        }
    }

    pub fn status(&mut self, what: &str, status: Option<u16>) {
        match status {
            Some(s) => {
                *self.by_status.entry(s).or_default() += 1;
                if s >= 500 && self.examples.len() < 5 {
                    self.examples.push(format!("{what} → {s}"));
                }
            }
            None => {
                self.no_answer += 1;
                if self.examples.len() < 5 {
                    self.examples.push(format!("{what} → no answer"));
                }
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (s, n) in other.by_status {
            *self.by_status.entry(s).or_default() += n;
        }
        self.no_answer += other.no_answer;
        self.bytes += other.bytes;
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.by_status.values().sum::<u64>() + self.no_answer
    }

    pub fn of(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or_default()
    }

    pub fn fives(&self) -> u64 {
        self.by_status.range(500..600).map(|(_, n)| n).sum()
    }

    /// `status:count` for every status.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.by_status.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        if self.no_answer > 0 {
            parts.push(format!("no answer×{}", self.no_answer));
        }
        parts.join(" ")
    }
}

/// What an attack's own code reports.
#[derive(Debug, Default)]
pub struct Outcome {
    pub tally: Tally,
    /// 5xx statuses that are the host's documented answer to this attack
    /// (a read past `READ_TIMEOUT` answers 503); any other 5xx fails.
    pub allowed_5xx: Vec<u16>,
    /// Requests that get no answer are a failure unless this is set.
    pub no_answer_ok: bool,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
}

/// One produced record.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    topic: u16,
    partition: i32,
    offset: i64,
}

/// Every record the siege produced, in the order they were handed to the
/// producer (`seq`), with where the broker put it.
pub struct Ledger {
    topics: Vec<String>,
    next: AtomicU64,
    sent: Mutex<Vec<Sent>>,
    failed: Mutex<Vec<(u64, String)>>,
}

impl Ledger {
    fn new(topics: Vec<String>) -> Ledger {
        Ledger { topics, next: AtomicU64::new(0), sent: Mutex::new(Vec::new()), failed: Mutex::new(Vec::new()) }
    }

    fn topic_index(&self, topic: &str) -> u16 {
        self.topics.iter().position(|t| t == topic).unwrap_or_else(|| panic!("{topic} is not a siege topic")) as u16
    }

    /// The sequence number the next record will get.
    fn mark(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Produces one record and notes where it went.
    pub async fn send(&self, producer: &FutureProducer, topic: u16, value: &[u8]) {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        let name = &self.topics[topic as usize];
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(name).payload(value);
        match producer.send(record, Duration::from_secs(60)).await {
            Ok(d) => self.sent.lock().unwrap().push(Sent { seq, topic, partition: d.partition, offset: d.offset }),
            Err((e, _)) => self.failed.lock().unwrap().push((seq, format!("{name}: {e}"))),
        }
    }

    /// Waits until every record handed over before `mark` has its delivery
    /// report; returns those in `from..mark`.
    async fn settled(&self, from: u64, mark: u64, timeout: Duration) -> Result<Vec<Sent>, String> {
        let started = Instant::now();
        loop {
            let done = {
                let sent = self.sent.lock().unwrap();
                let failed = self.failed.lock().unwrap();
                sent.iter().filter(|s| s.seq < mark).count() + failed.iter().filter(|(s, _)| *s < mark).count()
            };
            if done as u64 >= mark {
                break;
            }
            if started.elapsed() > timeout {
                return Err(format!("{} records had no delivery report after {timeout:?}", mark - done as u64));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sent = self.sent.lock().unwrap();
        Ok(sent.iter().filter(|s| (from..mark).contains(&s.seq)).copied().collect())
    }

    fn failures(&self) -> Vec<(u64, String)> {
        self.failed.lock().unwrap().clone()
    }
}

/// The steady load: `rate` records/s round-robin over the first `topics`
/// topics of the ledger, each record in a batch of its own (tansu skips
/// records when a consumer resumes inside a multi-record batch, and the
/// siege makes consumers resume: an outage, a rebalance).
fn steady_load(
    ledger: Arc<Ledger>,
    kafka: Kafka,
    topics: usize,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let producer = kafka.unbatched_producer();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(4000));
        let start = tokio::time::Instant::now();
        let mut i: u64 = 0;
        let pad = "p".repeat(120);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep_until(start + Duration::from_micros(i * 1_000_000 / rate.max(1))).await;
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let value = format!(
                r#"{{"type": "order.status_updated", "correlation_id": "saga-{i}", "source": "order-service", "payload": {{"order_id": "o-{}", "customer_id": "c-{}", "status": "ACCEPTED", "note": "{pad}"}}}}"#,
                i % 50_000,
                i % 5_000
            );
            let (ledger, producer) = (ledger.clone(), producer.clone());
            let topic = (i % topics as u64) as u16;
            tokio::spawn(async move {
                ledger.send(&producer, topic, value.as_bytes()).await;
                drop(permit);
            });
            i += 1;
        }
        // Every send has its delivery report.
        let _ = in_flight.acquire_many(4000).await;
        i
    })
}

/// Peak memory of the host (and of another host, during the rebalance).
#[derive(Default)]
struct Peaks {
    pid: AtomicU32,
    host: AtomicU64,
    tree: AtomicU64,
    other_pid: AtomicU32,
    other: AtomicU64,
}

/// The children of `pid` (every thread's), recursively.
fn descendants(pid: u32, out: &mut Vec<u32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
        for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            out.push(child);
            descendants(child, out);
        }
    }
}

/// RSS of `pid` and of `pid` with its descendants, KiB.
fn tree_rss_kib(pid: u32) -> Option<(u64, u64)> {
    let own = rss_kib(pid)?;
    let mut children = Vec::new();
    descendants(pid, &mut children);
    Some((own, own + children.iter().filter_map(|c| rss_kib(*c)).sum::<u64>()))
}

/// CPU time of the machine and of the siege's own processes (the host and
/// its children, PostgreSQL, the broker, this program), in clock ticks: the
/// rest is other work on the machine, which the figures must be read with.
struct CpuMark {
    busy: u64,
    total: u64,
    ours: HashMap<u32, u64>,
}

/// (busy, total) ticks of all CPUs, and how many CPUs.
fn machine_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let values: Vec<u64> = lines.next()?.split_whitespace().skip(1).take(8).filter_map(|v| v.parse().ok()).collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    let cpus = lines.filter(|l| l.starts_with("cpu")).count() as u64;
    Some((total - idle, total, cpus.max(1)))
}

/// User and system ticks of a process and of its children it has waited for.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<u64> = rest.split_whitespace().skip(11).take(4).filter_map(|v| v.parse().ok()).collect();
    (fields.len() == 4).then(|| fields.iter().sum())
}

/// The process ids of the siege's own processes.
fn our_pids(roots: &[u32]) -> Vec<u32> {
    let mut out = vec![std::process::id()];
    for &root in roots.iter().filter(|r| **r != 0) {
        out.push(root);
        descendants(root, &mut out);
    }
    out
}

fn cpu_mark(roots: &[u32]) -> CpuMark {
    let (busy, total, _) = machine_ticks().unwrap_or_default();
    let ours = our_pids(roots).into_iter().filter_map(|p| Some((p, process_ticks(p)?))).collect();
    CpuMark { busy, total, ours }
}

/// Cores used since `mark` by the siege's processes and by everything else.
fn cpu_since(mark: &CpuMark, roots: &[u32]) -> Option<(f64, f64)> {
    let (busy, total, cpus) = machine_ticks()?;
    let per_cpu = (total.checked_sub(mark.total)? as f64 / cpus as f64).max(1.0);
    let ours: u64 = our_pids(roots)
        .into_iter()
        .filter_map(|p| Some(process_ticks(p)?.saturating_sub(mark.ours.get(&p).copied().unwrap_or(0))))
        .sum();
    let others = busy.checked_sub(mark.busy)?.saturating_sub(ours);
    Some((ours as f64 / per_cpu, others as f64 / per_cpu))
}

/// The broker's process, when it runs on this machine.
fn broker_pid(bootstrap: &str) -> Option<u32> {
    let url = format!("tcp://{bootstrap}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("--listener-url") && cmdline.contains(&url)).then_some(pid)
    })
}

fn sample_memory(peaks: Arc<Peaks>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some((own, tree)) = tree_rss_kib(peaks.pid.load(Ordering::Relaxed)) {
                peaks.host.fetch_max(own, Ordering::Relaxed);
                peaks.tree.fetch_max(tree, Ordering::Relaxed);
            }
            let other = peaks.other_pid.load(Ordering::Relaxed);
            if other != 0
                && let Some((_, tree)) = tree_rss_kib(other)
            {
                peaks.other.fetch_max(tree, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// One poll: (ready status, ingest status, ingest body when not 200).
type ReadinessPoll = (Option<u16>, Option<u16>, String);

/// What `/ready` and `/ready/ingest` answered, polled all along.
#[derive(Default)]
struct Readiness {
    seen: Mutex<Vec<ReadinessPoll>>,
}

fn watch_readiness(addr: SocketAddr, readiness: Arc<Readiness>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ready = client::request_bytes("GET", "/ready", &[], b"", true);
        let ingest = client::request_bytes("GET", "/ready/ingest", &[], b"", true);
        while !stop.load(Ordering::Relaxed) {
            let r = client::once(addr, &ready, Duration::from_secs(3)).await.ok().map(|a| a.status);
            let i = client::once(addr, &ingest, Duration::from_secs(3)).await.ok();
            let body = i.as_ref().filter(|a| a.status != 200).and_then(|a| a.text()).unwrap_or_default();
            readiness.seen.lock().unwrap().push((r, i.map(|a| a.status), body));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

/// Everything an attack can reach.
pub struct Ctx {
    pub size: Size,
    pub prefix: String,
    pub kafka: Kafka,
    pub pool: PgPool,
    pub db_url: String,
    pub postgres: Postgres,
    pub host: Host,
    pub options: HostOptions,
    pub wasm_dir: PathBuf,
    pub modules_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub admin_token: String,
    /// Steady topics first, then the hot order's, then the attacks' own.
    pub topics: Vec<String>,
    pub hot_order: String,
    /// The broker's process, when it runs here (its CPU is the siege's).
    broker_pid: Option<u32>,
    ledger: Arc<Ledger>,
    peaks: Arc<Peaks>,
    readiness: Arc<Readiness>,
}

impl Ctx {
    pub fn addr(&self) -> SocketAddr {
        self.host.http
    }

    pub fn steady_topics(&self) -> &[String] {
        &self.topics[..self.size.topics]
    }

    /// The topic of an attack (`sleepy`, `spin`, ...).
    pub fn attack_topic(&self, name: &str) -> String {
        format!("{}-a-{name}", self.prefix)
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn topic_index(&self, topic: &str) -> u16 {
        self.ledger.topic_index(topic)
    }

    /// A metric's sum over its label sets; an error when the host does not
    /// answer or does not have it.
    pub async fn metric(&self, name: &str) -> Result<f64, String> {
        let text = self.get_text("/metrics").await?;
        let mut found = false;
        let mut sum = 0.0;
        for l in text.lines() {
            if l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')) {
                found = true;
                sum +=
                    l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| format!("bad line {l}"))?;
            }
        }
        if found { Ok(sum) } else { Err(format!("/metrics has no {name}")) }
    }

    /// A GET's body, which must answer 200.
    pub async fn get_text(&self, path: &str) -> Result<String, String> {
        let request = client::request_bytes("GET", path, &[], b"", true);
        let mut conn = client::Conn::new(self.addr());
        let answer = conn
            .send_keeping(&request, Duration::from_secs(10), 64 << 20)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if answer.status != 200 {
            return Err(format!("GET {path} answered {}", answer.status));
        }
        answer.text().ok_or_else(|| format!("GET {path}: the answer ({} bytes) is too large", answer.body_len))
    }

    /// `/normalizers` as JSON.
    pub async fn normalizers(&self) -> Result<serde_json::Value, String> {
        let text = self.get_text("/normalizers").await?;
        serde_json::from_str(&text).map_err(|e| format!("/normalizers is not JSON: {e}"))
    }

    /// Writes a file the way deployment tools do: a temporary name, then a rename.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let tmp = self.modules_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.modules_dir.join(name)).unwrap();
    }

    pub fn fixture(&self, name: &str) -> Vec<u8> {
        let p = self.wasm_dir.join(format!("{name}.wasm"));
        std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/lib.sh build_normalizers builds it)", p.display()))
    }

    /// Sets the memory sampler on another process (0: none).
    fn watch_other(&self, pid: u32) {
        self.peaks.other_pid.store(pid, Ordering::Relaxed);
    }

    fn other_peak_kib(&self) -> u64 {
        self.peaks.other.load(Ordering::Relaxed)
    }

    /// The roots of the siege's own process trees.
    fn roots(&self) -> Vec<u32> {
        vec![
            self.host.child.id(),
            self.peaks.other_pid.load(Ordering::Relaxed),
            self.postgres.pid().unwrap_or(0),
            self.broker_pid.unwrap_or(0),
        ]
    }
}

fn say(line: &str) {
    println!("{line}");
}

/// Runs the siege and reports; the caller decides what a failure does.
pub async fn run(options: Options) -> Report {
    let size = options.size.clone();
    let mut report = Report::default();
    let started = Instant::now();
    say(&format!(
        "SIEGE setup: {} records/s over {} topics, attacks of {} s, {} readers, {} methods, PostgreSQL down {} s, host {}",
        size.rate,
        size.topics,
        size.attack.as_secs(),
        size.readers,
        size.methods,
        size.outage.as_secs(),
        options
            .host_bin
            .as_ref()
            .map_or_else(|| crate::host_binary().display().to_string(), |p| p.display().to_string())
    ));
    let mut ctx = setup(&options).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(ctx.peaks.clone(), stop.clone());
    let watcher = watch_readiness(ctx.addr(), ctx.readiness.clone(), stop.clone());
    let load_stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(ctx.ledger.clone(), ctx.kafka.clone(), size.topics, size.rate, load_stop.clone());
    let first_steady = ctx.ledger.mark();

    let wanted = |name: &str| options.only.is_empty() || options.only.iter().any(|o| name.contains(o.as_str()));
    let mut plan: Vec<(&str, bool)> = vec![
        ("steady load alone", false),
        ("sleeping, spinning and memory-hungry modules", false),
        ("slow and huge reads", false),
        ("retention behind a long read", false),
        ("made-up HTTP methods", false),
        ("bad cursors and bad requests", false),
        ("blocked notification queue", false),
        ("compile bomb push", false),
        ("corrupted compilation cache entry", false),
        ("pipeline stalled by a table lock", true),
        ("database outage with a rebalance", true),
    ];
    plan.retain(|(name, _)| *name == "steady load alone" || wanted(name));
    for (name, exempt) in plan {
        let r = attack(&mut ctx, name, exempt).await;
        say(&r.line());
        report.lines.push(r.line());
        report.failures.extend(r.failures.iter().map(|f| format!("{name}: {f}")));
        report.attacks.push(r);
    }

    // The end: every record produced is stored, once.
    load_stop.store(true, Ordering::Relaxed);
    let steady_sent = load.await.unwrap();
    let steady_secs = started.elapsed().as_secs_f64();
    let end = ctx.ledger.mark();
    let total = final_check(&ctx, end).await;
    match &total {
        Ok(line) => say(line),
        Err(why) => report.failures.push(why.clone()),
    }
    let failed = ctx.ledger.failures();
    if !failed.is_empty() {
        report.failures.push(format!(
            "the siege's producer failed {} times (first: {}); the run cannot judge those records",
            failed.len(),
            failed[0].1
        ));
    }
    let _ = first_steady;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    let _ = sampler.join();
    let peak = crate::rss_peak_kib(ctx.host.child.id()).unwrap_or_default();
    let summary = format!(
        "SIEGE total: {} records produced ({} by the steady load), {} attacks, host peak RSS (VmHWM) {} MiB, {} failures, {:.0} s",
        end,
        steady_sent,
        report.attacks.len() - 1,
        peak / 1024,
        report.failures.len(),
        steady_secs
    );
    say(&summary);
    report.lines.push(summary);
    for f in &report.failures {
        say(&format!("SIEGE FAILURE {f}"));
    }
    if !report.failures.is_empty() {
        say(&format!("SIEGE host log: {}", ctx.host.log.display()));
        // Keep the log for whoever reads the failure.
        let keep = std::env::temp_dir().join(format!("{}-host.log", ctx.prefix));
        let _ = std::fs::copy(&ctx.host.log, &keep);
        say(&format!("SIEGE host log kept at {}", keep.display()));
    }
    ctx.host.kill();
    report
}

/// A random token of 32 hex digits.
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

async fn setup(options: &Options) -> Ctx {
    let size = options.size.clone();
    let prefix = unique("siege");
    let kafka = Kafka::shared();
    // A PostgreSQL of the siege's own: the outage stops it.
    let postgres = Postgres::start_private();
    let admin = PgPoolOptions::new().max_connections(1).connect(&postgres.url()).await.unwrap();
    sqlx::query("CREATE DATABASE siege").execute(&admin).await.unwrap();
    admin.close().await;
    let db_url = format!("postgres://postgres@127.0.0.1:{}/siege", postgres.port);
    let host_bin = options.host_bin.clone().unwrap_or_else(crate::host_binary);
    let migrated = std::process::Command::new(&host_bin)
        .arg("migrate")
        .env("DATABASE_URL", &db_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "migrate: {}", String::from_utf8_lossy(&migrated.stderr));
    let pool = PgPoolOptions::new().max_connections(6).connect(&db_url).await.unwrap();
    // A notification queue the siege can block: `pg_notify` resolves to a
    // function of its own, which fails as a full queue does while the
    // switch is on (the host's sessions all start after this).
    for sql in [
        "CREATE SCHEMA blocker",
        "CREATE TABLE blocker.switch (blocked boolean NOT NULL)",
        "INSERT INTO blocker.switch VALUES (false)",
        "CREATE FUNCTION blocker.pg_notify(channel text, payload text) RETURNS void LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF (SELECT blocked FROM blocker.switch) THEN \
             RAISE EXCEPTION 'too many notifications in the NOTIFY queue' USING ERRCODE = '54000'; \
           END IF; \
           PERFORM pg_catalog.pg_notify(channel, payload); \
         END $$",
        "ALTER DATABASE siege SET search_path = public, blocker, pg_catalog",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let pool = PgPoolOptions::new().max_connections(6).connect(&db_url).await.unwrap();

    let mut topics: Vec<String> = (0..size.topics).map(|i| format!("{prefix}-s{i:02}")).collect();
    topics.push(format!("{prefix}-hot"));
    for a in ["sleepy", "spin", "hog", "memories"] {
        topics.push(format!("{prefix}-a-{a}"));
    }
    kafka.create_topics(&topics[..size.topics], size.partitions).await;
    kafka.create_topics(&topics[size.topics..], 1).await;

    // A modules directory with one healthy module on two steady topics:
    // the steady load runs through WebAssembly there, and its compiled
    // entry is what the cache attack corrupts.
    let modules_dir = std::env::temp_dir().join(format!("{prefix}-modules"));
    let cache_dir = std::env::temp_dir().join(format!("{prefix}-cache"));
    std::fs::create_dir_all(&modules_dir).unwrap();
    let admin_token = format!("siege-{}", random_hex());
    let mut host_options = HostOptions::new(&db_url, &prefix);
    host_options.binary = options.host_bin.clone();
    for (k, v) in [
        ("MEMORY_LIMIT", format!("{MEMORY_LIMIT_MIB}Mi")),
        ("NORMALIZERS_DIR", modules_dir.display().to_string()),
        ("MODULE_CACHE_DIR", cache_dir.display().to_string()),
        ("MODULE_CACHE_KEY", random_hex()),
        ("MODULE_COMPILE_MEMORY", size.compile_memory.to_string()),
        ("MODULE_COMPILE_TIMEOUT", format!("{}s", size.compile_timeout.as_secs())),
        ("ADMIN_TOKEN", admin_token.clone()),
        ("RETENTION_DAYS", "30".into()),
        ("MAINTENANCE_INTERVAL", "3s".into()),
        ("PIPELINE_STALL_AFTER", format!("{}s", STALL_AFTER.as_secs())),
        ("KAFKA_OPTIONS", "session.timeout.ms=6000;heartbeat.interval.ms=500".into()),
    ] {
        host_options.env.push((k.into(), v));
    }
    let ctx_wasm = options.wasm_dir.clone();
    let campus = std::fs::read(ctx_wasm.join("normalizer_campus_delivery.wasm"))
        .unwrap_or_else(|e| panic!("normalizer_campus_delivery.wasm in {}: {e}", ctx_wasm.display()));
    std::fs::write(modules_dir.join("campus-delivery.wasm"), campus).unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../normalizers/campus-delivery/samples.jsonl");
    std::fs::copy(&samples, modules_dir.join("campus-delivery.samples.jsonl")).unwrap();
    std::fs::write(modules_dir.join("campus-delivery.toml"), attacks::campus_manifest(&topics[..2])).unwrap();

    let host = Host::start(&host_options);
    host.wait_ready(Duration::from_secs(120));
    let peaks = Arc::new(Peaks::default());
    peaks.pid.store(host.child.id(), Ordering::Relaxed);
    let ledger = Arc::new(Ledger::new(topics.clone()));
    let ctx = Ctx {
        size: size.clone(),
        hot_order: format!("hot-{prefix}"),
        broker_pid: broker_pid(&kafka.bootstrap),
        prefix,
        kafka,
        pool,
        db_url,
        postgres,
        host,
        options: host_options,
        wasm_dir: ctx_wasm,
        modules_dir,
        cache_dir,
        admin_token,
        topics,
        ledger,
        peaks,
        readiness: Arc::new(Readiness::default()),
    };
    attacks::wait_for_modules(
        &ctx,
        |n| attacks::live_names(n).contains(&"campus-delivery".to_owned()),
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| panic!("campus-delivery never went live: {e}\n{}", ctx.host.log_text()));

    // The hot order: large values under one id, through the real path.
    let started = Instant::now();
    let producer = ctx.kafka.producer();
    let hot = ctx.topic_index(&format!("{}-hot", ctx.prefix));
    let mark = ctx.ledger.mark();
    for i in 0..size.hot_rows {
        let value = format!(
            r#"{{"type": "order.hot", "correlation_id": "hot-saga-{}", "payload": {{"order_id": "{}", "blob": "{}"}}}}"#,
            i % 3,
            ctx.hot_order,
            incompressible(size.hot_value_bytes, i as u64 + 1)
        );
        ctx.ledger.send(&producer, hot, value.as_bytes()).await;
    }
    let sent = ctx.ledger.settled(mark, ctx.ledger.mark(), Duration::from_secs(120)).await.unwrap();
    let missing = missing(&ctx, &sent, Duration::from_secs(180)).await;
    assert!(missing.is_empty(), "the hot order's records were not stored: {missing:?}\n{}", ctx.host.log_text());
    say(&format!(
        "SIEGE setup: hot order {} ({} records of {} KB) stored in {:.1} s",
        ctx.hot_order,
        size.hot_rows,
        size.hot_value_bytes / 1000,
        started.elapsed().as_secs_f64()
    ));

    // Rows for the unindexed filters to walk.
    let started = Instant::now();
    let mut done = 0u64;
    while done < size.preload_rows {
        let n = (size.preload_rows - done).min(100_000);
        sqlx::query(
            "INSERT INTO notifications (customer_id, order_id, correlation_id, event_type, source_service, source_topic, \
             created_at, kafka_partition, kafka_offset, raw_value, normalizer) \
             SELECT 'c-pre-' || (i % 20000), 'pre-' || (i % 100000), 'saga-pre-' || (i % 50000), \
               (ARRAY['order.created','order.paid','order.shipped','payment.authorized','user.signed_up'])[1 + i % 5], \
               (ARRAY['order-service','payment-service','user-service'])[1 + i % 3], 'preloaded', \
               now() - (i % 1728000) * interval '1 second', 0, i, \
               convert_to(repeat('{\"preloaded\": true} ', 12), 'UTF8'), 'preload' \
             FROM generate_series($1::bigint, $2::bigint) AS i",
        )
        .bind(done as i64 + 1)
        .bind((done + n) as i64)
        .execute(&ctx.pool)
        .await
        .unwrap();
        done += n;
    }
    sqlx::query("ANALYZE notifications").execute(&ctx.pool).await.unwrap();
    say(&format!("SIEGE setup: {} rows preloaded in {:.1} s", size.preload_rows, started.elapsed().as_secs_f64()));
    ctx
}

/// Runs one attack and measures what it did to the steady load.
async fn attack(ctx: &mut Ctx, name: &str, gap_exempt: bool) -> AttackReport {
    ctx.peaks.host.store(0, Ordering::Relaxed);
    ctx.peaks.tree.store(0, Ordering::Relaxed);
    ctx.readiness.seen.lock().unwrap().clear();
    let from = ctx.ledger.mark();
    let start_utc = Utc::now();
    let start = Instant::now();
    let cpu = cpu_mark(&ctx.roots());
    let outcome = match name {
        "steady load alone" => attacks::idle(ctx).await,
        "sleeping, spinning and memory-hungry modules" => attacks::modules(ctx).await,
        "slow and huge reads" => attacks::reads(ctx).await,
        "retention behind a long read" => attacks::retention(ctx).await,
        "made-up HTTP methods" => attacks::methods(ctx).await,
        "bad cursors and bad requests" => attacks::bad_requests(ctx).await,
        "blocked notification queue" => attacks::notify(ctx).await,
        "compile bomb push" => attacks::compile_bomb(ctx).await,
        "corrupted compilation cache entry" => attacks::cache(ctx).await,
        "pipeline stalled by a table lock" => attacks::stall(ctx).await,
        "database outage with a rebalance" => attacks::outage(ctx).await,
        other => panic!("no attack {other}"),
    };
    let mark = ctx.ledger.mark();
    let end_utc = Utc::now();
    let seconds = start.elapsed().as_secs_f64();
    let (cpu_siege, cpu_others) = cpu_since(&cpu, &ctx.roots()).unzip();
    let peak_rss_kib = ctx.peaks.host.load(Ordering::Relaxed);
    let peak_tree_kib = ctx.peaks.tree.load(Ordering::Relaxed);
    let readiness: Vec<_> = ctx.readiness.seen.lock().unwrap().drain(..).collect();
    let mut r = AttackReport {
        name: name.to_owned(),
        seconds,
        gap_exempt,
        peak_rss_kib,
        peak_tree_kib,
        cpu_siege,
        cpu_others,
        requests: outcome.tally.total(),
        answers_5xx: outcome.tally.fives(),
        notes: outcome.notes,
        failures: outcome.failures,
        ..AttackReport::default()
    };

    // Stored: every record produced while the attack ran.
    let settle = if gap_exempt { Duration::from_secs(240) } else { Duration::from_secs(90) };
    match ctx.ledger.settled(from, mark, Duration::from_secs(120)).await {
        Ok(sent) => {
            r.produced = sent.len();
            let missing = missing(ctx, &sent, settle).await;
            r.stored = sent.len() - missing.len();
            if !missing.is_empty() {
                r.failures.push(format!(
                    "{} of {} records produced during the attack were not stored {settle:?} after it (first: {:?})",
                    missing.len(),
                    sent.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
        }
        Err(why) => r.failures.push(why),
    }
    let settled_utc = Utc::now();

    match longest_gap(ctx, start_utc, settled_utc).await {
        Ok(Some(g)) => {
            r.longest_gap = Some(g);
            let max_gap = ctx.size.max_gap;
            if g > max_gap.as_secs_f64() && !gap_exempt {
                r.failures
                    .push(format!("the steady load's longest gap between stored rows was {g:.2} s (over {max_gap:?})"));
            }
        }
        Ok(None) => r.failures.push("no row of the steady load was stored during the attack".into()),
        Err(e) => r.failures.push(format!("measuring the gap: {e}")),
    }
    match latency(ctx, start_utc, end_utc).await {
        Ok((p99, max)) => {
            r.latency_p99 = p99;
            r.latency_max = max;
        }
        Err(e) => r.failures.push(format!("measuring the latency: {e}")),
    }

    let limit_kib = MEMORY_LIMIT_MIB * 1024;
    if peak_rss_kib == 0 {
        r.failures.push("the host's memory was never sampled (is it alive?)".into());
    }
    if peak_rss_kib > limit_kib {
        r.failures.push(format!(
            "the host's RSS reached {} MiB, over MEMORY_LIMIT={MEMORY_LIMIT_MIB}Mi",
            peak_rss_kib / 1024
        ));
    }
    if peak_tree_kib > limit_kib {
        r.notes.push(format!(
            "the host with its children reached {} MiB, over the {MEMORY_LIMIT_MIB} MiB a pod would have",
            peak_tree_kib / 1024
        ));
    }
    let bad_5xx: u64 =
        outcome.tally.by_status.range(500..600).filter(|(s, _)| !outcome.allowed_5xx.contains(s)).map(|(_, n)| n).sum();
    if bad_5xx > 0 {
        r.failures.push(format!(
            "{bad_5xx} answers were 5xx ({}): {}",
            outcome.tally.summary(),
            outcome.tally.examples.join(" | ")
        ));
    } else if r.answers_5xx > 0 {
        r.notes.push(format!("answers {}", outcome.tally.summary()));
    }
    if outcome.tally.no_answer > 0 && !outcome.no_answer_ok {
        r.failures.push(format!(
            "{} requests got no answer: {}",
            outcome.tally.no_answer,
            outcome.tally.examples.join(" | ")
        ));
    }
    // Readiness all along: the read side stays ready except while the
    // database is down; a stall names its culprit.
    let ready_down = readiness.iter().filter(|(r, _, _)| *r != Some(200)).count();
    if ready_down > 0 && name != "database outage with a rebalance" {
        r.failures.push(format!("/ready answered other than 200 {ready_down} times of {}", readiness.len()));
    }
    let stalls: Vec<&String> = readiness.iter().map(|(_, _, b)| b).filter(|b| b.contains("stalled")).collect();
    for body in &stalls {
        if !(body.contains("module ") || body.contains("writer ")) {
            r.failures.push(format!("/ready/ingest reported a stall without naming its culprit: {body}"));
            break;
        }
    }
    let ingest_down = readiness.iter().filter(|(_, i, _)| *i != Some(200)).count();
    if ingest_down > 0 {
        let first = readiness.iter().find(|(_, i, _)| *i != Some(200)).map(|(_, _, b)| b.clone()).unwrap_or_default();
        r.notes.push(format!(
            "/ready/ingest not ready {ingest_down} of {} polls (first: {})",
            readiness.len(),
            first.trim()
        ));
    }
    if !ctx.host.child.try_wait().map(|s| s.is_none()).unwrap_or(false) {
        r.failures.push(format!("the host exited; log:\n{}", tail(&ctx.host.log_text(), 40)));
    }
    r
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The records of `sent` not stored after waiting up to `timeout`.
async fn missing(ctx: &Ctx, sent: &[Sent], timeout: Duration) -> Vec<(String, i32, i64)> {
    // Per partition, the window's offsets and every offset the siege
    // produced between its first and last (all were produced by the siege).
    let mut window: HashMap<(u16, i32), Vec<i64>> = HashMap::new();
    for s in sent {
        window.entry((s.topic, s.partition)).or_default().push(s.offset);
    }
    let started = Instant::now();
    loop {
        let mut missing = Vec::new();
        for ((topic, partition), offsets) in &window {
            let (lo, hi) = (*offsets.iter().min().unwrap(), *offsets.iter().max().unwrap());
            let stored: Vec<i64> = sqlx::query_scalar(
                "SELECT kafka_offset FROM notifications WHERE source_topic = $1 AND kafka_partition = $2 \
                 AND kafka_offset BETWEEN $3 AND $4",
            )
            .bind(&ctx.topics[*topic as usize])
            .bind(partition)
            .bind(lo)
            .bind(hi)
            .fetch_all(&ctx.pool)
            .await
            // The database is not back yet: everything counts as missing.
            .unwrap_or_default();
            let stored: HashSet<i64> = stored.into_iter().collect();
            for o in offsets {
                if !stored.contains(o) {
                    missing.push((ctx.topics[*topic as usize].clone(), *partition, *o));
                }
            }
        }
        if missing.is_empty() || started.elapsed() > timeout {
            missing.sort();
            return missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The longest gap between consecutive stored rows of the steady load
/// from `from` to `to` (a gap that began before `from` counts), seconds.
async fn longest_gap(ctx: &Ctx, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM max(gap))::float8 FROM ( \
           SELECT stored_at, stored_at - lag(stored_at) OVER (ORDER BY stored_at) AS gap FROM notifications \
           WHERE source_topic = ANY($1) AND stored_at >= $2 - interval '60 seconds' AND stored_at <= $3) t \
         WHERE stored_at >= $2",
    )
    .bind(ctx.steady_topics().to_vec())
    .bind(from)
    .bind(to)
    .fetch_one(&ctx.pool)
    .await
}

/// p99 and max of produce → stored for the steady load's records produced
/// from `from` to `to`, seconds.
async fn latency(ctx: &Ctx, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(Option<f64>, Option<f64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY s), max(s) FROM ( \
           SELECT extract(epoch FROM stored_at - kafka_timestamp)::float8 AS s FROM notifications \
           WHERE source_topic = ANY($1) AND stored_at >= $2 AND kafka_timestamp BETWEEN $2 AND $3) t",
    )
    .bind(ctx.steady_topics().to_vec())
    .bind(from)
    .bind(to)
    .fetch_one(&ctx.pool)
    .await
}

/// Every record the siege produced is stored exactly once.
async fn final_check(ctx: &Ctx, end: u64) -> Result<String, String> {
    let sent = ctx.ledger.settled(0, end, Duration::from_secs(120)).await?;
    let missing = missing(ctx, &sent, Duration::from_secs(240)).await;
    if !missing.is_empty() {
        return Err(format!(
            "{} of {} records produced were never stored (first: {:?})",
            missing.len(),
            sent.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (source_topic, kafka_partition, kafka_offset)) FROM notifications \
         WHERE starts_with(source_topic, $1)",
    )
    .bind(&ctx.prefix)
    .fetch_one(&ctx.pool)
    .await
    .map_err(|e| format!("counting the rows: {e}"))?;
    if rows != distinct || rows as usize != sent.len() {
        return Err(format!("{rows} rows for {distinct} records, {} produced", sent.len()));
    }
    Ok(format!("SIEGE stored: all {} records produced are stored, each once", sent.len()))
}
