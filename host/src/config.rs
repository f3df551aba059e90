//! The one configuration of the host, parsed once at start from flags and
//! environment variables. Nothing else reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use regex::Regex;

mod commands;
pub mod env;
mod parse;
mod role;
mod sagas;

use parse::{parse_anchored_regex, parse_duration, parse_kafka_option, parse_schema_name};

pub use commands::{
    CaptureArgs, CompareLegacyArgs, ImportLegacyArgs, Language, ModulesAction, ModulesCommand, NewArgs, NormalizeArgs,
    RenormalizeArgs,
};
pub use role::Role;
pub use sagas::SagaConfig;

/// Consumes every Kafka topic, normalizes each record, and keeps an audit
/// log in PostgreSQL with a REST API over it.
#[derive(Debug, Parser)]
#[command(name = "notification-host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The host's commands. Without one, the host serves.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume, normalize and store every record (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Normalize stored rows again with the normalizers configured now (the
    /// built-in default, NORMALIZERS_DIR and the module store's live
    /// versions), e.g. after a normalizer fix.
    Renormalize(Box<RenormalizeArgs>),
    /// Check the configuration, the database, the broker and the modules
    /// directory; print a report and exit non-zero when anything is wrong.
    Check,
    /// Run a normalizer over sample records (JSON lines) and print what it
    /// finds, one JSON line per input; checks `expected` fields when given.
    Normalize(NormalizeArgs),
    /// Create a normalizer project (Rust, Python or JavaScript) in a new
    /// folder, outside any checkout: contract, manifest, samples, build.
    New(NewArgs),
    /// Read records from a live topic and print them as sample lines for
    /// `normalize` (key, headers, exact value: text, or base64 when it is
    /// not UTF-8).
    Capture(CaptureArgs),
    /// The module store in PostgreSQL, which every replica follows: push,
    /// list, history, rollback, remove.
    Modules(Box<ModulesCommand>),
    /// Cut-over from the original service: copy its rows into the log with
    /// their original ids (idempotent, resumable), or with `--offsets`
    /// start the consumer group where it stopped reading.
    ImportLegacy(Box<ImportLegacyArgs>),
    /// Cut-over from the original service: compare what it answers for a
    /// sample of orders (computed from its rows) with what the host answers,
    /// and exit non-zero on differences beyond the documented ones.
    CompareLegacy(Box<CompareLegacyArgs>),
    /// Compile a component read from standard input for this host, within
    /// a memory budget (run by the host itself; see MODULE_COMPILE_MEMORY).
    #[command(hide = true)]
    CompileModule {
        /// Address space the compiler may use, in bytes.
        #[arg(long)]
        memory_bytes: u64,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` needs.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// What this replica does: `all` (consume and serve the API), `api`
    /// (serve the API only: no consumer, for scaling reads apart from
    /// writes), or `ingest` (consume and store; HTTP serves health,
    /// readiness, metrics, the normalizers, module pushes and the API
    /// reference, but neither the query API nor the console).
    #[arg(long, env = env::ROLE, value_enum, default_value_t = Role::All)]
    pub role: Role,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub pipeline: PipelineConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub modules: ModulesArgs,
    #[command(flatten)]
    pub sagas: SagaConfig,
    /// The memory the host may use, e.g. `512Mi`: batches in flight,
    /// librdkafka's prefetch and API answers are bounded to fit it (see the
    /// book's configuration page for the shares). Unset: the container's
    /// cgroup limit, if there is one.
    #[arg(long, env = env::MEMORY_LIMIT, value_parser = crate::budget::parse_bytes)]
    pub memory_limit: Option<u64>,
    /// Topics that get `topic` labels of their own in `/metrics`; the rest
    /// are counted under `(other)`, so that a cluster with many topics (or a
    /// producer creating them) cannot grow the metrics without bound.
    #[arg(long, env = env::METRICS_MAX_TOPICS, default_value_t = crate::metrics::DEFAULT_MAX_TOPICS)]
    pub metrics_max_topics: usize,
}

/// Normalizer modules and their sandbox.
#[derive(Debug, Clone, Args)]
pub struct ModulesArgs {
    /// Directory of normalizer modules (`*.toml` manifests beside their
    /// `.wasm` components); watched and hot-reloaded. Without it, every
    /// record goes to the built-in default.
    #[arg(long, env = env::NORMALIZERS_DIR)]
    pub normalizers_dir: Option<PathBuf>,

    /// How often the directory is also polled, for filesystems without change events.
    #[arg(long, env = env::NORMALIZERS_POLL_INTERVAL, default_value = "1s", value_parser = parse_duration)]
    pub normalizers_poll_interval: Duration,

    /// Linear memory one module instance may use, in bytes, unless its
    /// manifest sets its own (`[limits] memory_mib`).
    #[arg(long, env = env::MODULE_MEMORY_LIMIT, default_value_t = 64 << 20)]
    pub module_memory_limit: usize,

    /// The most memory a manifest may ask for, in bytes.
    #[arg(long, env = env::MODULE_MEMORY_MAX, default_value_t = 512 << 20)]
    pub module_memory_max: usize,

    /// Wall-clock time one call into a module may take (enforced by an epoch
    /// that advances every 5 ms, so time the process spends waiting
    /// for a CPU counts too; a starved host can fail a healthy module, which
    /// the quarantine's trial batches then bring back).
    #[arg(long, env = env::MODULE_DEADLINE, default_value = "50ms", value_parser = parse_duration)]
    pub module_deadline: Duration,

    /// The longest deadline a manifest may ask for (`[limits] deadline_ms`).
    #[arg(long, env = env::MODULE_DEADLINE_MAX, default_value = "1s", value_parser = parse_duration)]
    pub module_deadline_max: Duration,

    /// Total bytes of the strings a module may answer for one record (a
    /// manifest may only lower it, with `[limits] max_output_bytes`).
    #[arg(long, env = env::MODULE_MAX_OUTPUT, default_value_t = 64 << 10)]
    pub module_max_output: usize,

    /// Where compiled modules are cached, so that a restart or another
    /// replica loads a module without compiling it again (seconds for a
    /// Python or JavaScript module); `off` disables the cache. Default:
    /// `$XDG_CACHE_HOME/notification-host/modules` (or `$HOME/.cache/...`).
    /// Each entry is sealed with an HMAC and loaded only when it verifies;
    /// keep the directory writable by the host alone.
    #[arg(long, env = env::MODULE_CACHE_DIR)]
    pub module_cache_dir: Option<PathBuf>,

    /// Secret the module cache's entries are sealed with: an entry written
    /// by anyone without it is compiled again, never loaded. Unset, entries
    /// are sealed with a key everyone knows, which catches corrupted and
    /// truncated entries but not forged ones.
    #[arg(long, env = env::MODULE_CACHE_KEY, hide_env_values = true)]
    pub module_cache_key: Option<String>,

    /// Address space the process that compiles a module may use, in bytes:
    /// a component that needs more is refused (the replica goes on). A
    /// Python module needs a few hundred MiB.
    #[arg(long, env = env::MODULE_COMPILE_MEMORY, default_value_t = 2 << 30)]
    pub module_compile_memory: u64,

    /// Longest a module may take to compile before it is refused.
    #[arg(long, env = env::MODULE_COMPILE_TIMEOUT, default_value = "120s", value_parser = parse_duration)]
    pub module_compile_timeout: Duration,

    /// The executable that compiles modules (`<it> compile-module`); this
    /// one by default.
    #[arg(long, hide = true)]
    pub module_compiler: Option<PathBuf>,

    /// How often the module store is also polled, besides its notifications.
    #[arg(long, env = env::MODULE_STORE_POLL_INTERVAL, default_value = "5s", value_parser = parse_duration)]
    pub module_store_poll_interval: Duration,

    /// Failures in a row after which a module is quarantined: its records
    /// get the built-in default's fields until it passes a trial batch.
    #[arg(long, env = env::MODULE_QUARANTINE_AFTER, default_value_t = 10)]
    pub module_quarantine_after: u64,

    /// How long a quarantined module waits before its next trial batch.
    #[arg(long, env = env::MODULE_QUARANTINE_COOLDOWN, default_value = "30s", value_parser = parse_duration)]
    pub module_quarantine_cooldown: Duration,
}

/// Where and how to consume.
#[derive(Debug, Clone, Args)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = env::KAFKA_BOOTSTRAP_SERVERS, default_value = "localhost:9092")]
    pub bootstrap_servers: String,

    /// Consumer group. Every replica of the host joins it and they share the
    /// topics' partitions.
    #[arg(long, env = env::KAFKA_GROUP_ID, default_value = "notification-service-group")]
    pub group_id: String,

    /// Extra librdkafka settings as `key=value`, for TLS or SASL clusters
    /// (for example `security.protocol=SASL_SSL`). Repeat the flag, or give
    /// several separated by newlines or `;` in the environment variable.
    #[arg(long = "kafka-option", env = env::KAFKA_OPTIONS, value_delimiter = ';', value_parser = parse_kafka_option)]
    pub options: Vec<(String, String)>,

    /// Topics to consume: a regular expression matched against the whole
    /// name. Internal topics (names starting with `__`) are never consumed.
    #[arg(long, env = env::TOPIC_INCLUDE, default_value = ".*", value_parser = parse_anchored_regex)]
    pub topic_include: Regex,

    /// Topics to skip even when they match the include pattern.
    #[arg(long, env = env::TOPIC_EXCLUDE, value_parser = parse_anchored_regex)]
    pub topic_exclude: Option<Regex>,

    /// Also consume the well-known infrastructure topics (Schema Registry's
    /// `_schemas`, Confluent's `_confluent*`, Kafka Connect's
    /// `connect-configs`, `connect-offsets` and `connect-status`), which hold
    /// configuration, not business events, and are skipped by default.
    #[arg(long, env = env::CONSUME_INFRASTRUCTURE_TOPICS, default_value_t = false, action = clap::ArgAction::Set)]
    pub consume_infrastructure_topics: bool,

    /// How often the broker is asked for new topics; a topic created while
    /// the host runs is consumed within this time.
    #[arg(long, env = env::TOPIC_REFRESH_INTERVAL, default_value = "10s", value_parser = parse_duration)]
    pub topic_refresh_interval: Duration,
}

impl KafkaConfig {
    /// Whether a topic is consumed.
    pub fn wants_topic(&self, topic: &str) -> bool {
        !topic.starts_with("__")
            && (self.consume_infrastructure_topics || !is_infrastructure_topic(topic))
            && self.topic_include.is_match(topic)
            && !self.topic_exclude.as_ref().is_some_and(|re| re.is_match(topic))
    }
}

/// Whether a topic is one of the well-known infrastructure topics: Schema
/// Registry (`_schemas`), Confluent Platform (`_confluent-metrics`,
/// `_confluent-command`, ksqlDB's `_confluent-ksql-*`, ...) and Kafka
/// Connect's default storage topics.
pub fn is_infrastructure_topic(topic: &str) -> bool {
    topic == "_schemas"
        || topic.starts_with("_confluent")
        || ["connect-configs", "connect-offsets", "connect-status"].contains(&topic)
}

/// The database.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL connection URL, for example
    /// `postgres://user:password@host:5432/notifications`.
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: Option<String>,

    /// The schema the host keeps its tables in, created if missing. Unset:
    /// `notification_host` when that already holds the host's tables or
    /// when the database's `notifications` table is another application's
    /// (the original service's, at a cut-over: its tables stay untouched),
    /// otherwise the session's own search path (`public`).
    #[arg(long = "database-schema", value_name = "DATABASE_SCHEMA", env = env::DATABASE_SCHEMA, value_parser = parse_schema_name)]
    pub schema: Option<String>,

    /// Connections that serve reads (the query API and the console). The
    /// writers have their own (`DATABASE_WRITERS`), and so does the host's
    /// own work (5: maintenance, the module store, the saga learner, two
    /// listeners): no number of readers can make ingestion wait. Also how
    /// many API reads are answered at once.
    #[arg(long, env = env::DATABASE_MAX_CONNECTIONS, default_value_t = 10)]
    pub max_connections: u32,

    /// How long one read statement may run before PostgreSQL cancels it
    /// (its request answers 503); `0s` sets no limit.
    #[arg(long, env = env::READ_TIMEOUT, default_value = "5s", value_parser = parse_duration)]
    pub read_timeout: Duration,

    /// Keep this many days of records: whole monthly partitions that end
    /// before the cutoff are dropped. Unset keeps everything.
    #[arg(long, env = env::RETENTION_DAYS)]
    pub retention_days: Option<u32>,

    /// Monthly partitions created ahead of the current month.
    #[arg(long, env = env::PARTITIONS_AHEAD, default_value_t = 3)]
    pub partitions_ahead: u32,

    /// How far back (months) the write path creates the month partition a
    /// record needs before writing it: a new deployment that consumes a
    /// topic's history from the earliest offset gets its past months as
    /// partitions, not one ever-growing default partition. Records older than
    /// this (or than the retention cutoff), or dated beyond the partitions
    /// ahead, go to the default partition.
    #[arg(long, env = env::PARTITION_HISTORY_MONTHS, default_value_t = 120)]
    pub partition_history_months: u32,

    /// How often partitions are created ahead and expired ones dropped.
    #[arg(long, env = env::MAINTENANCE_INTERVAL, default_value = "1h", value_parser = parse_duration)]
    pub maintenance_interval: Duration,
}

impl DbConfig {
    /// The database URL, or a clear error when it is missing.
    pub fn url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("{} is not set (or pass --database-url)", env::DATABASE_URL))
    }
}

/// Batching and shutdown.
#[derive(Debug, Clone, Args)]
pub struct PipelineConfig {
    /// Most records written in one database transaction.
    #[arg(long, env = env::BATCH_SIZE, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Most bytes of record data (values, keys and headers) in one batch. A
    /// batch is one statement, and PostgreSQL refuses a statement or an array
    /// over 1 GiB: a thousand records of a megabyte each would never be
    /// written. Unset: derived from the memory limit (see `MEMORY_LIMIT`),
    /// 64 MiB without one.
    #[arg(long, env = env::BATCH_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..=(256 << 20)))]
    pub batch_max_bytes: Option<u64>,

    /// Longest a record waits for its batch to fill while every writer is
    /// busy. While one is free, what has gathered is written within 2 ms.
    #[arg(long, env = env::BATCH_LINGER, default_value = "100ms", value_parser = parse_duration)]
    pub batch_linger: Duration,

    /// On SIGTERM or Ctrl-C, how long the host may take to write the batch in
    /// hand and commit its offsets before it exits anyway.
    #[arg(long, env = env::SHUTDOWN_TIMEOUT, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How far ahead of the time it is stored a record's own time may be.
    /// A record dated later (a clock in 2099, microseconds written as
    /// milliseconds) is ordered and partitioned by when it was stored, its
    /// claimed time kept and noted; records dated in the past keep their
    /// time however old.
    #[arg(long, env = env::RECORD_TIME_TOLERANCE, default_value = "10m", value_parser = parse_duration)]
    pub record_time_tolerance: Duration,

    /// When no batch has been written for this long while batches wait,
    /// `/ready/ingest` says the pipeline is stalled and names what it is
    /// stuck on (a module, a write); a database outage also shows there.
    #[arg(long, env = env::PIPELINE_STALL_AFTER, default_value = "30s", value_parser = parse_duration)]
    pub stall_after: Duration,

    /// Database connections that write batches at once. A partition whose
    /// rows one writer still holds goes to that writer again, so a
    /// partition's records are written, and their offsets committed, in
    /// order; any other goes to the least-loaded writer. PostgreSQL runs
    /// each connection's writes on a core of its own.
    #[arg(long, env = env::DATABASE_WRITERS, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub writers: u32,

    /// How values are stored: `zstd` compresses each value that shrinks by
    /// an eighth or more (read back exactly by the API, the console and
    /// renormalize); `off` keeps every value as it is, readable from SQL
    /// (`raw_value`), at about twice the disk.
    #[arg(long, env = env::VALUE_COMPRESSION, value_enum, default_value_t = ValueCompression::Zstd)]
    pub value_compression: ValueCompression,

    /// How batches are written: `copy` sends each batch as one binary
    /// `COPY` and writes a batch that `COPY` cannot (one holding a record
    /// already stored, after a redelivery, or a value PostgreSQL refuses)
    /// with `insert`; `insert` always uses one `INSERT .. ON CONFLICT DO
    /// NOTHING` per batch, which costs PostgreSQL more per row.
    #[arg(long, env = env::WRITE_METHOD, value_enum, default_value_t = WriteMethod::Copy)]
    pub write_method: WriteMethod,
}

/// How the write path sends batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteMethod {
    Copy,
    Insert,
}

/// How the write path stores values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueCompression {
    Zstd,
    Off,
}

/// The HTTP server.
#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address the REST API, health and metrics listen on.
    #[arg(long, env = env::HTTP_ADDR, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// When set, POST endpoints require `Authorization: Bearer <token>`.
    #[arg(long, env = env::API_TOKEN, hide_env_values = true)]
    pub api_token: Option<String>,

    /// When set, reads need it: the query API and `GET /normalizers` as
    /// `Authorization: Bearer <token>`, and the console at /ui, which asks
    /// for it once and keeps it in a cookie. Health, readiness, metrics
    /// and the API reference stay open.
    #[arg(long, env = env::READ_TOKEN, hide_env_values = true)]
    pub read_token: Option<String>,

    /// Most bytes of one API answer: a longer answer stops at the last whole
    /// row that fits and gives the cursor of the rest (`Link`,
    /// `X-Next-Cursor`, `next_cursor`). Unset: derived from the memory limit
    /// (see `MEMORY_LIMIT`), 16 MiB without one.
    #[arg(long, env = env::ANSWER_MAX_BYTES, value_parser = crate::budget::parse_bytes)]
    pub answer_max_bytes: Option<u64>,

    /// Largest request body accepted (bytes); larger ones get 413.
    #[arg(long, env = env::MAX_BODY_BYTES, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Bearer token for `POST /admin/modules` (pushing a module to the
    /// store over HTTP); without it that endpoint refuses every request.
    #[arg(long, env = env::ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest `POST /admin/modules` body, in bytes (a Python module's
    /// component is about 18 MB, 25 MB in base64).
    #[arg(long, env = env::ADMIN_MAX_BODY_BYTES, default_value_t = 64 << 20)]
    pub admin_max_body_bytes: usize,

    /// Origins a browser may call the API from (CORS), comma-separated, e.g.
    /// `http://localhost:5173` (the original service's web front end); `*`
    /// allows any origin. Unset sends no CORS headers.
    #[arg(long, env = env::CORS_ALLOWED_ORIGINS, value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// `original` answers notifications in the original service's exact
    /// shape: `notificationId` as a string, `createdAt` as a naive UTC time
    /// with microseconds, and for Kafka records `event` as the original's
    /// wrapper (`topic`, `event_type`, `correlation_id`, `source_service`,
    /// `timestamp`, `payload`). `current` (the default) answers the stored
    /// document and a time with its offset.
    #[arg(long, env = env::API_COMPAT, value_enum, default_value_t = ApiCompat::Current)]
    pub api_compat: ApiCompat,
}

/// The shape of a notification in API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ApiCompat {
    #[default]
    Current,
    Original,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("notification-host").chain(args.iter().copied()))
    }

    #[test]
    fn infrastructure_topics_are_skipped_unless_asked_for() {
        let infra = [
            "_schemas",
            "_confluent-metrics",
            "_confluent-ksql-default__command_topic",
            "connect-configs",
            "connect-offsets",
            "connect-status",
        ];
        let k = parse(&[]).unwrap().serve.kafka;
        for t in infra {
            assert!(!k.wants_topic(t), "{t} is infrastructure");
        }
        for t in ["order_events", "connect-events", "schemas", "confluent"] {
            assert!(k.wants_topic(t), "{t} is a business topic");
        }
        let k = parse(&["--consume-infrastructure-topics", "true"]).unwrap().serve.kafka;
        assert!(infra.iter().all(|t| k.wants_topic(t)));
        assert!(!k.wants_topic("__consumer_offsets"), "internal topics never");
    }

    #[test]
    fn roles() {
        assert_eq!(parse(&[]).unwrap().serve.role, Role::All);
        let api = parse(&["--role", "api"]).unwrap().serve.role;
        assert!(api.serves_api() && !api.consumes());
        let ingest = parse(&["--role", "ingest"]).unwrap().serve.role;
        assert!(!ingest.serves_api() && ingest.consumes());
        assert!(parse(&["--role", "reader"]).is_err());
    }

    #[test]
    fn topic_filters() {
        let cli = parse(&["--topic-exclude", "audit-.*|tmp"]).unwrap();
        let k = &cli.serve.kafka;
        assert!(k.wants_topic("order_events"));
        assert!(k.wants_topic("order-events"));
        assert!(!k.wants_topic("__consumer_offsets"));
        assert!(!k.wants_topic("audit-log"));
        assert!(!k.wants_topic("tmp"));
        assert!(k.wants_topic("tmp2"));
        let cli = parse(&["--topic-include", "order.*"]).unwrap();
        assert!(cli.serve.kafka.wants_topic("order_events"));
        assert!(!cli.serve.kafka.wants_topic("payment_events"));
    }

    #[test]
    fn kafka_options_and_durations() {
        let cli =
            parse(&["--kafka-option", "security.protocol=SASL_SSL;sasl.mechanism=PLAIN", "--batch-linger", "250ms"])
                .unwrap();
        assert_eq!(
            cli.serve.kafka.options,
            vec![("security.protocol".into(), "SASL_SSL".into()), ("sasl.mechanism".into(), "PLAIN".into())]
        );
        assert_eq!(cli.serve.pipeline.batch_linger, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let e = parse(&["--batch-linger", "soon"]).unwrap_err().to_string();
        assert!(e.contains("batch-linger"), "{e}");
        let e = parse(&["--topic-include", "("]).unwrap_err().to_string();
        assert!(e.contains("topic-include"), "{e}");
        let e = parse(&["--kafka-option", "novalue"]).unwrap_err().to_string();
        assert!(e.contains("key=value"), "{e}");
        assert!(parse(&["--batch-size", "0"]).is_err());
    }

    #[test]
    fn every_variable_is_listed_and_every_listed_one_is_read() {
        use clap::CommandFactory;
        let mut read: Vec<String> = Vec::new();
        let mut collect = |cmd: &clap::Command| {
            for arg in cmd.get_arguments() {
                if let Some(name) = arg.get_env() {
                    read.push(name.to_string_lossy().into_owned());
                }
            }
        };
        let cli = Cli::command();
        collect(&cli);
        for sub in cli.get_subcommands() {
            collect(sub);
        }
        for name in &read {
            assert!(env::ALL.contains(&name.as_str()), "{name} is read but not in env::ALL");
        }
        for name in env::ALL.iter().filter(|n| **n != env::RUST_LOG) {
            assert!(read.iter().any(|r| r == name), "{name} is listed but no flag reads it");
        }
    }

    #[test]
    fn normalize_subcommand() {
        let cli = parse(&["normalize", "--module", "m.wasm", "samples.jsonl"]).unwrap();
        match cli.command {
            Some(Command::Normalize(args)) => {
                assert_eq!(args.module.as_deref(), Some(std::path::Path::new("m.wasm")));
                assert_eq!(args.input.as_deref(), Some(std::path::Path::new("samples.jsonl")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
