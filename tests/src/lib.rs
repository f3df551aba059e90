//! Helpers for the end-to-end tests: they drive the real `notification-host`
//! binary against the broker and PostgreSQL named by `KAFKA_BOOTSTRAP_SERVERS`
//! and `DATABASE_URL` (scripts/test starts throwaway ones and exports both).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod browser;
pub mod fixtures;
pub mod history;
pub mod legacy;
pub mod saga;
pub mod siege;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

pub fn bootstrap_servers() -> String {
    std::env::var("KAFKA_BOOTSTRAP_SERVERS")
        .expect("KAFKA_BOOTSTRAP_SERVERS is not set: run the tests with scripts/test")
}

pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL").expect("DATABASE_URL is not set: run the tests with scripts/test")
}

/// A name unique to this test run, for topics, groups and databases.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

/// A fresh, empty database; returns its URL and a pool on it.
pub async fn fresh_database(prefix: &str) -> (String, PgPool) {
    let admin_url = admin_database_url();
    let name = unique(prefix).to_lowercase();
    let admin = PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&admin).await.unwrap();
    admin.close().await;
    let url = with_database(&admin_url, &name);
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    (url, pool)
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/').unwrap();
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let base = if slash >= authority_end { &base[..slash] } else { base };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// A Kafka-protocol broker the tests talk to: the shared one
/// (`KAFKA_BOOTSTRAP_SERVERS`, see [`Kafka::shared`]) or a test's own
/// ([`Broker::kafka`]). Topics, producers and steady load go through it, so
/// the same helpers serve every broker.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub bootstrap: String,
}

impl Kafka {
    /// The broker scripts/test starts (or the one it was given).
    pub fn shared() -> Kafka {
        Kafka { bootstrap: bootstrap_servers() }
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topics(&[name.to_owned()], partitions).await;
    }

    /// Creates every topic in one request.
    pub async fn create_topics(&self, names: &[String], partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let topics: Vec<NewTopic<'_>> =
            names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
        let results = admin.create_topics(&topics, &AdminOptions::new()).await.unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    pub fn producer(&self) -> FutureProducer {
        self.producer_config().set("linger.ms", "5").create().unwrap()
    }

    /// A producer that sends every record in its own record batch.
    ///
    /// The fault tests make consumers resume mid-stream (restarts, rebalances,
    /// pause/resume). tansu 0.6.0 answers a fetch at an offset that is the last
    /// record of a multi-record batch starting from the *next* batch, so that one
    /// record is never delivered to any consumer (seen here: a fetch at 528
    /// returned 529, 530, ... while a fetch at 527 returned 527, 528, ...). One
    /// record per batch keeps that broker defect out of what these tests measure;
    /// against Apache Kafka either producer works.
    pub fn unbatched_producer(&self) -> FutureProducer {
        self.producer_config().set("linger.ms", "0").set("batch.num.messages", "1").create().unwrap()
    }

    fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("message.max.bytes", "4000000")
            .set("message.timeout.ms", "60000");
        config
    }

    /// Produces `count` records spread over `topics` at about `per_second`
    /// (one record per batch), returning their coordinates.
    pub async fn produce_steadily(self, topics: Vec<String>, count: usize, per_second: u64) -> Vec<Coordinates> {
        let producer = self.unbatched_producer();
        let mut produced = Vec::with_capacity(count);
        let mut pending = Vec::new();
        let start = Instant::now();
        for i in 0..count {
            let topic = topics[i % topics.len()].clone();
            let value = format!(
                r#"{{"type": "order.status_updated", "correlation_id": "saga-{i}", "source": "order-service", "payload": {{"order_id": {i}, "status": "ACCEPTED"}}}}"#
            );
            let p = producer.clone();
            pending.push(tokio::spawn(async move { produce(&p, &Out::new(&topic, value)).await }));
            if pending.len() >= 50 {
                for h in pending.drain(..) {
                    produced.push(h.await.unwrap());
                }
            }
            let due = start + Duration::from_micros(1_000_000 * (i as u64 + 1) / per_second.max(1));
            tokio::time::sleep_until(due.into()).await;
        }
        for h in pending {
            produced.push(h.await.unwrap());
        }
        produced
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default)]
pub struct Out {
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Names and values as bytes: a name need not be UTF-8.
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timestamp: Option<i64>,
}

impl Out {
    pub fn new(topic: &str, value: impl Into<Vec<u8>>) -> Out {
        Out { topic: topic.into(), value: Some(value.into()), ..Out::default() }
    }
}

/// The largest value a record can carry on an Apache Kafka broker with its
/// default `message.max.bytes` (1,048,588 bytes per record batch), less the
/// batch and record overhead of this test's records.
pub const AT_THE_SIZE_LIMIT: usize = 1_048_588 - 200;

/// Records whose values a hostile or careless producer sends: not JSON,
/// not UTF-8, empty, a tombstone, a megabyte of JSON, a value at the size
/// limit, `\u0000`, an unpaired surrogate, 10,000-level nesting, gzip,
/// Avro, a byte order mark, binary keys and header names, a timestamp in
/// the year 3000. With each, whether its value is stored as a JSON
/// document (None: it may or may not be, as PostgreSQL decides).
pub fn hostile_values(topic: &str) -> Vec<(Out, Option<bool>)> {
    let big_json =
        format!(r#"{{"type": "big", "payload": {{"order_id": "o-big", "blob": "{}"}}}}"#, "x".repeat(1_000_000));
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let gzip =
        vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let avro = vec![0x00, 0x00, 0x00, 0x00, 0x01, 0x06, b'a', b'b', b'c', 0x02];
    let mut with_meta = Out::new(topic, r#"{"order_id": "meta"}"#);
    with_meta.key = Some(vec![0xff, 0x00, b'k']);
    with_meta.headers = vec![
        ("producer".into(), Some(b"payment-service".to_vec())),
        ("producer".into(), None),
        ("bin".into(), Some(vec![0xde, 0xad, 0x00])),
        // A name that is not UTF-8: kept byte for byte, as is every other header.
        (vec![0xff, b'n', 0xfe], Some(b"after".to_vec())),
        ("last".into(), None),
    ];
    with_meta.timestamp = Some(1_743_760_800_123);
    let mut far_future = Out::new(topic, r#"{"order_id": "future"}"#);
    far_future.timestamp = Some(32_503_680_000_000); // year 3000
    vec![
        (Out::new(topic, "not json at all"), Some(false)),
        (Out::new(topic, b"\xff\xfe{\"order_id\": 1}".to_vec()), Some(false)),
        (Out::new(topic, Vec::new()), Some(false)),
        (Out { topic: topic.into(), value: None, ..Out::default() }, None),
        (Out::new(topic, big_json), Some(true)),
        (Out::new(topic, "x".repeat(AT_THE_SIZE_LIMIT)), Some(false)),
        // JSON that PostgreSQL's JSONB refuses is JSON all the same; an
        // unpaired surrogate, which strict parsers refuse, is answered as text.
        (Out::new(topic, r#"{"order_id": "nul\u0000inside"}"#), Some(true)),
        (Out::new(topic, r#"{"order_id": "lone \ud800 surrogate"}"#), Some(false)),
        (Out::new(topic, nested), None),
        (Out::new(topic, gzip), Some(false)),
        (Out::new(topic, avro), Some(false)),
        (Out::new(topic, b"\xef\xbb\xbf{\"order_id\": \"bom\"}".to_vec()), Some(true)),
        (with_meta, Some(true)),
        (far_future, Some(true)),
    ]
}

/// A produced record's coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

pub async fn produce(producer: &FutureProducer, out: &Out) -> Coordinates {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&out.topic);
    if let Some(p) = out.partition {
        record = record.partition(p);
    }
    if let Some(k) = &out.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &out.value {
        record = record.payload(v.as_slice());
    }
    if let Some(ts) = out.timestamp {
        record = record.timestamp(ts);
    }
    if !out.headers.is_empty() {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &out.headers {
            headers = match std::str::from_utf8(key) {
                Ok(key) => headers.insert(Header { key, value: value.as_deref() }),
                Err(_) => notification_kafka_raw::add_header(headers, key, value.as_deref()).unwrap(),
            };
        }
        record = record.headers(headers);
    }
    let delivery = producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    Coordinates { topic: out.topic.clone(), partition: delivery.partition, offset: delivery.offset }
}

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The `notification-host` binary built beside this test (by `cargo test
/// --workspace`), or NOTIFICATION_HOST_BIN.
pub fn host_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NOTIFICATION_HOST_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join("notification-host");
    assert!(bin.is_file(), "{} is missing: build it with `cargo test --workspace` (scripts/test)", bin.display());
    bin
}

/// A running host process, killed when dropped.
pub struct Host {
    pub child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
}

/// How to start a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub database_url: String,
    pub group_id: String,
    pub topic_include: String,
    pub env: Vec<(String, String)>,
    /// The binary to run; [`host_binary`] when None (a benchmark names its
    /// release build).
    pub binary: Option<PathBuf>,
}

impl HostOptions {
    pub fn new(database_url: &str, topic_prefix: &str) -> HostOptions {
        HostOptions {
            database_url: database_url.into(),
            group_id: unique("group"),
            topic_include: format!("{topic_prefix}.*"),
            env: vec![],
            binary: None,
        }
    }
}

impl Host {
    pub fn start(options: &HostOptions) -> Host {
        let http = free_addr();
        let log = std::env::temp_dir().join(format!("{}.log", unique("host")));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(options.binary.clone().unwrap_or_else(host_binary));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("E2E_HOST_LOG").unwrap_or_else(|_| "info".into()))
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap_servers())
            .env("SHUTDOWN_TIMEOUT", "10s")
            .env("KAFKA_GROUP_ID", &options.group_id)
            .env("DATABASE_URL", &options.database_url)
            .env("TOPIC_INCLUDE", &options.topic_include)
            .env("TOPIC_REFRESH_INTERVAL", "1s")
            .env("BATCH_LINGER", "50ms")
            .env("HTTP_ADDR", http.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        Host { child: cmd.spawn().unwrap(), http, log }
    }

    /// Waits until `/ready` answers 200.
    /// Waits until the host serves reads and, when it consumes, ingests
    /// (`/ready` and `/ready/ingest`).
    pub fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let ingesting = match http_get(self.http, "/ready/ingest") {
                Some((200, _)) => true,
                Some((_, body)) => body.contains("does not consume"),
                None => false,
            };
            if ingesting && let Some((200, _)) = http_get(self.http, "/ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("host not ready after {timeout:?}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of a metric's samples on `/metrics` (every label set), or
    /// None when the host does not answer.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (status, body) = http_get(self.http, "/metrics")?;
        (status == 200).then(|| {
            body.lines()
                .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
    }

    /// Records this host received again that were already stored.
    pub fn redelivered(&self) -> u64 {
        self.metric("notification_records_redelivered_total").expect("the host answers /metrics") as u64
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "host exited with {status}; log:\n{}", self.log_text());
                return start.elapsed();
            }
            assert!(start.elapsed() < timeout, "host still running {timeout:?} after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET: (status, body), or None when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Rows stored for topics starting with `prefix`, as coordinates.
pub async fn stored(pool: &PgPool, prefix: &str) -> Vec<Coordinates> {
    let rows = sqlx::query(
        "SELECT source_topic, kafka_partition, kafka_offset FROM notifications \
         WHERE starts_with(source_topic, $1) ORDER BY 1, 2, 3",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    rows.iter().map(|r| Coordinates { topic: r.get(0), partition: r.get(1), offset: r.get(2) }).collect()
}

/// Waits until `count` rows are stored for topics starting with `prefix`.
pub async fn wait_for_rows(pool: &PgPool, prefix: &str, count: usize, timeout: Duration) -> Vec<Coordinates> {
    let start = Instant::now();
    loop {
        let rows = stored(pool, prefix).await;
        if rows.len() >= count || start.elapsed() > timeout {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A PostgreSQL cluster of the test's own, in a temporary directory on a free
/// port, which the test may stop and start: the outage test needs one it is
/// allowed to take down, whatever `DATABASE_URL` points at. Stopped and
/// removed when dropped.
pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl Postgres {
    /// Creates and starts the cluster. Fails the test when PostgreSQL's server
    /// programs are missing (scripts/test installs them).
    pub fn start_private() -> Postgres {
        let bin = pg_bin_dir().expect(
            "PostgreSQL's server programs (initdb, pg_ctl) are not installed: scripts/test installs them; \
             this test cannot run without them",
        );
        let dir = std::env::temp_dir().join(unique("pg"));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(&dir).status().unwrap().success());
        }
        let port = free_addr().port();
        let data = dir.join("data");
        let initdb = bin.join("initdb");
        let status = as_postgres(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb failed");
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).unwrap();
        writeln!(
            conf,
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 100",
            dir.display()
        )
        .unwrap();
        let pg = Postgres { port, dir, bin };
        pg.start();
        pg
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) {
        assert!(self.pg_ctl(&["-w", "-t", "60", "start"]).success(), "pg_ctl start failed");
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops it the way an operator or a failover would (fast: connections
    /// are cut).
    pub fn stop(&self) {
        assert!(self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"]).success(), "pg_ctl stop failed");
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::ExitStatus {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().ok().is_some_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A command run as the `postgres` user when this process is root (initdb
/// refuses root).
fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// PG_BIN_DIR, or the newest /usr/lib/postgresql/*/bin with initdb.
fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return Some(dir.into());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A memory figure of a process from /proc, in KiB (`VmRSS`, `VmHWM`, ...).
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(key).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS")
}

/// Peak resident memory of a process in KiB.
pub fn rss_peak_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM")
}

/// A cheap pseudo-random number for spreading fault timings.
pub fn jitter(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    u64::from(nanos) % max.max(1)
}

/// A fault-suite size from the environment (scripts/faults sets the full
/// sizes; scripts/test runs the defaults).
pub fn fault_param(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A tansu broker of the test's own that keeps its data in SQLite, so that it
/// can be killed and restarted with its topics, records and committed offsets
/// intact. Needs TANSU_BIN (scripts/test exports it when it starts tansu).
pub struct Broker {
    child: Option<Child>,
    pub bootstrap: String,
    dir: PathBuf,
    bin: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// Fails the test when TANSU_BIN is not set (scripts/test always sets
    /// it, also when the other tests use an external broker).
    pub fn start_persistent() -> Broker {
        let bin = PathBuf::from(std::env::var_os("TANSU_BIN").expect(
            "TANSU_BIN is not set: this test runs a tansu broker of its own (scripts/test installs tansu and sets it)",
        ));
        let dir = std::env::temp_dir().join(unique("tansu"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_addr().port();
        let log = dir.join("broker.log");
        let mut broker = Broker { child: None, bootstrap: format!("127.0.0.1:{port}"), dir, bin, log };
        broker.start();
        broker
    }

    /// Starts the broker (again) on the same port and data.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://{}", self.bootstrap);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(&self.bootstrap).is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "broker did not listen; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Topics, producers and load on this broker.
    pub fn kafka(&self) -> Kafka {
        Kafka { bootstrap: self.bootstrap.clone() }
    }

    /// SIGKILLs the broker.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next offset of every partition of `topics`: what the broker holds.
    pub fn high_watermarks(&self, topics: &[String]) -> Vec<(String, i32, i64)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().unwrap();
        let mut out = Vec::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
            for p in metadata.topics()[0].partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
                out.push((topic.clone(), p.id(), high));
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `len` hex digits of xorshift noise from `seed`: text PostgreSQL's
/// compression cannot shrink under an index entry's limit, like a token or a
/// stack trace pasted into an id field.
pub fn incompressible(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}
