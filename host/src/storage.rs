//! PostgreSQL: the pool, the migrations and every query. Nothing else in the
//! host speaks SQL.
//!
//! # Exactly one row per record
//!
//! Every Kafka record has a natural key, (topic, partition, offset), and the
//! table has a unique constraint on it. A batch is written with one binary
//! `COPY`, which fails as a whole on a record already stored, and is then
//! written again with `INSERT .. ON CONFLICT DO NOTHING`, so writing a
//! record twice is harmless,
//! and the consumer stores a batch's offsets only after its transaction has
//! committed. A crash, a restart or a rebalance can therefore make Kafka
//! redeliver records (at-least-once delivery), but never produce a second
//! row, and no offset is ever committed for a record that is not stored.
//!
//! The alternative, keeping consumer offsets in PostgreSQL in the same
//! transaction, would also be exact but takes offset management away from the
//! consumer group (lag monitoring, `kafka-consumer-groups` resets, seeking on
//! every assignment) for no gain: the unique key already has to exist for the
//! audit log to be trustworthy.
//!
//! # Layout
//!
//! - `rows`: a record and its normalizer's answer turned into a row, and
//!   the last-resort row for a record PostgreSQL refuses.
//! - `write`: the write path (batches, refused rows, the API's insert).
//! - `copy`: the fast write path, a batch of new records as one binary
//!   `COPY`, falling back to `write`'s insert.
//! - `reads`: the API's queries.
//! - `partitions`: monthly partitions, created ahead and on demand, and
//!   retention.
//! - `renormalize`: reading stored records back and rewriting their fields.
//! - `console`: the console's reads (events without their values, recent
//!   orders, what kind of id a search term is).
//! - `sagas`: the saga tables: the learner's transaction (one replica at
//!   a time), stuck sagas, learned shapes, and a trace's rows.
//! - `live`: the notification every write sends, and listening for it.
//! - `value`: how a record's value is kept (once; zstd when that pays).
//! - `schema`: which schema the host's tables are in (its own, beside the
//!   original service's tables), set on every connection.
//! - `legacy`: the original service's database, read (never written) for
//!   the cut-over: its rows imported with their ids, its offsets, its
//!   answers for `compare-legacy`.

mod adjusted;
mod console;
mod copy;
mod error;
mod guard;
pub mod legacy;
mod live;
pub mod module_store;
mod partitions;
mod producers;
mod reads;
mod renormalize;
mod rows;
mod sagas;
mod schema;
mod timeline;
mod value;
mod write;

pub use console::{EventSummary, IdKind, RecentOrder};
pub use error::DbError;
pub use live::{Heard, Listener, STORED_CHANNEL, StoredBatch, StoredListener};
pub use partitions::{
    KnownPartitions, LOCK_TIMEOUT, Partitioner, Retention, maintain_partitions, maintenance, partition_window,
};
pub use reads::{
    IdColumn, ListAfter, ListFilter, ListOrder, NewApiNotification, Notification, Position, QuerySample,
    StoredPosition, full_scans_of_rows,
};
pub use renormalize::StoredRecord;
pub use rows::{MAX_NOTE_BYTES, StoredRow, TimeRule, document_text};
pub use sagas::{LearnerRow, Learning, StepRow, StuckQuery, StuckRow, TransitionRow};
pub use schema::{HOST_SCHEMA, Schema, SchemaReason};
pub use timeline::{MAX_SAGAS, PER_SAGA, SAGA_CONTEXT, Timed, TimelinePage};
pub use value::{CorruptValue, stored_value};
/// How values are compressed (for the benchmark's level sweep).
pub mod value_compression {
    pub use super::value::{LEVEL, pays, worth_compressing};
}
pub use write::{API_EVENT_TYPE, API_SOURCE_SERVICE, API_STATUS, API_TOPIC, Reduced, WriteError, Written};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// How many connections each of the host's pools may open, and how long a
/// read may run.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Connections that serve reads (the API and the console).
    pub reads: u32,
    /// Connections the writers use, one each: reserved, so that no number
    /// of readers can make ingestion wait for a connection.
    pub writers: u32,
    /// How long one read statement may run before PostgreSQL cancels it.
    pub read_timeout: Duration,
}

impl Connections {
    /// What a command (not `serve`) needs: a couple of connections, reads
    /// without a time limit.
    pub fn for_command() -> Connections {
        Connections { reads: 2, writers: 2, read_timeout: Duration::ZERO }
    }
}

/// The host's own connections: migrations, partition maintenance, the
/// module store, the saga learner, and the two listeners (the console's
/// live tail and the module store's changes), which each hold one for as
/// long as they live.
const ADMIN_CONNECTIONS: u32 = 5;

/// The database handle: three pools, so that no kind of work can take
/// another's connections. Readers (`reads`, every statement under a time
/// limit) cannot starve the writers (`writes`, one connection each), and
/// neither can starve the host's own work (`admin`).
#[derive(Clone, Debug)]
pub struct Db {
    reads: PgPool,
    writes: PgPool,
    admin: PgPool,
    /// The schema of the host's tables, which every connection of the
    /// three pools is set to before it is used.
    schema: Arc<schema::SchemaCell>,
}

impl Db {
    /// [`Db::connect_lazy`] with the database settings (`DATABASE_URL`,
    /// `DATABASE_SCHEMA`).
    pub fn connect(config: &crate::config::DbConfig, connections: Connections) -> anyhow::Result<Db> {
        Db::connect_lazy_in(config.url()?, connections, config.schema.clone())
    }

    /// Creates the pools without connecting, so that the host can start (and
    /// report itself not ready) while the database is still unreachable. A
    /// malformed URL is an error at once. The schema is chosen by the rules
    /// of [`schema`](Schema) on the first connection.
    pub fn connect_lazy(url: &str, connections: Connections) -> anyhow::Result<Db> {
        Db::connect_lazy_in(url, connections, None)
    }

    /// [`Db::connect_lazy`], the host's tables in `schema` when given.
    pub fn connect_lazy_in(url: &str, connections: Connections, schema: Option<String>) -> anyhow::Result<Db> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!("DATABASE_URL is not a valid PostgreSQL connection URL: it must start with postgres://");
        }
        let options: PgConnectOptions = url.parse().context("DATABASE_URL is not a valid PostgreSQL connection URL")?;
        // JIT off for the host's sessions: the planner prices a query over
        // every month partition (the timeline's saga lookups, one index
        // probe per partition) above `jit_above_cost`, and PostgreSQL then
        // compiles it on every execution, 300 ms for a query that runs in
        // 2 ms.
        let options = options.application_name("notification-host").options([("jit", "off")]);
        let schema = schema::SchemaCell::managed(schema);
        let pool = |options: PgConnectOptions, max: u32| {
            let schema = schema.clone();
            PgPoolOptions::new()
                .max_connections(max.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _| {
                    let schema = schema.clone();
                    Box::pin(async move { schema.prepare(conn).await })
                })
                .connect_lazy_with(options)
        };
        let read_options = if connections.read_timeout.is_zero() {
            options.clone()
        } else {
            // Every read statement ends within the limit, and a session that
            // idles inside a transaction is closed.
            let ms = connections.read_timeout.as_millis().to_string();
            options
                .clone()
                .options([("statement_timeout", ms.as_str()), ("idle_in_transaction_session_timeout", ms.as_str())])
        };
        // Each pool names itself in `pg_stat_activity` (the runbook's
        // queries find a stalled writer by it).
        Ok(Db {
            reads: pool(read_options.application_name("notification-host reads"), connections.reads),
            writes: pool(options.clone().application_name("notification-host writes"), connections.writers),
            admin: pool(options.application_name("notification-host admin"), ADMIN_CONNECTIONS),
            schema,
        })
    }

    /// Wraps an existing pool for every kind of work (tests).
    pub fn from_pool(pool: PgPool) -> Db {
        Db { reads: pool.clone(), writes: pool.clone(), admin: pool, schema: schema::SchemaCell::unmanaged() }
    }

    /// Applies the migrations in `migrations/`, in the host's own schema
    /// (created first) when that is the chosen one.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.create_own_schema().await.context("failed to create the host's schema")?;
        MIGRATOR.run(&self.admin).await.context("failed to apply the database migrations")
    }

    /// A session setting as each pool's connections see it (`SHOW name`):
    /// the reads', the writes' and the host's own.
    pub async fn session_setting(&self, name: &str) -> Result<[(&'static str, String); 3], DbError> {
        // A setting's name is an identifier; it is checked, not quoted.
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(DbError::Refused(sqlx::Error::InvalidArgument(format!("{name:?} is not a setting's name"))));
        }
        let show = format!("SHOW {name}");
        let mut out = [("reads", String::new()), ("writes", String::new()), ("admin", String::new())];
        for (slot, pool) in out.iter_mut().zip([&self.reads, &self.writes, &self.admin]) {
            slot.1 = sqlx::query_scalar(sqlx::AssertSqlSafe(show.clone())).fetch_one(pool).await?;
        }
        Ok(out)
    }

    /// Whether the database answers (on the host's own connections, which
    /// readers cannot exhaust).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.admin).await.is_ok()
    }
}
