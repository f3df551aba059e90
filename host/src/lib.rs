//! The notification host: an event log for every Kafka topic. This file is
//! the map; it holds no logic.
//!
//! # Layout, top to bottom (no module imports from one above it)
//!
//! - [`cmd`]: one file per command: `serve` (the default: wires everything
//!   below together and runs until SIGTERM), `migrate`, `check`,
//!   `renormalize`, the module author's tools: `new` (a project from
//!   the templates in `host/templates/`), `normalize` (the tester, which
//!   loads modules through [`modules`] exactly as `serve` does) and
//!   `capture`, and `modules` (push, rollback, shadow and promote in the
//!   module store).
//! - [`http`]: axum only. Health, readiness, metrics and the REST API, with
//!   its OpenAPI document and the `/apidocs/` reference.
//! - [`pipeline`]: the only module that uses Kafka, the normalizers and
//!   storage together: message → normalizer → row → stored offset, in named
//!   parts (the batcher, the dispatcher, the writers).
//! - [`learner`]: the saga learner job: rows stored since its last run,
//!   in stored order, through the saga model into the saga tables (one
//!   replica at a time, on the host's own connections).
//! - [`modules`]: normalizer modules from a directory and from the module
//!   store (which every replica follows), a file per job: manifests,
//!   routing by topic, header, key and content, the load gate, quarantine,
//!   the registry and hot reload, shadow versions, and the choice between
//!   the built-in default and a module, whose failures become explained
//!   rows. A record goes modules → runtime and back, once.
//! - [`storage`]: PostgreSQL only. The pools, the migrations, every query
//!   by purpose (rows from records, the write path, the API's reads,
//!   partitions, renormalize, the module store), listening, and
//!   [`storage::DbError`], the one place a SQLSTATE is read.
//! - [`kafka`]: rdkafka only. The consumer group, topic discovery, offsets.
//! - [`runtime`]: wasmtime only. Loads normalizer components of every
//!   contract version the host runs, offers them the host's functions
//!   (the built-in answer), and runs them in a sandbox with memory and time
//!   limits, capturing what they print.
//! - [`budget`]: the memory budget every bound on data in flight is derived
//!   from (batches, librdkafka's prefetch, answers), over [`config`].
//! - [`metrics`], [`status`], [`shutdown`] and [`config`]: leaves. What the
//!   layers above report to `/metrics` and `/ready`, the signal that stops
//!   them, and the one `Cli`/`ServeArgs` parsed once from flags and the
//!   environment.
//! - [`sagas`]: the learned saga model (steps, transitions, latencies,
//!   flags): pure, below `storage`, which saves and reads it.
//! - [`record`] and [`samples`]: the domain types every part shares (a Kafka
//!   record, the fields a normalizer found) and the sample-line format, from
//!   the `notification-parse` crate, which also parses the API's requests so
//!   that all of it can be fuzzed without the runtime, Kafka or the database.
//!
//! # Words
//!
//! A *normalizer* answers for a record with the ids it finds: the *built-in
//! default* (native rules) or a *module* ([`modules::Module`]: a
//! [`runtime::Component`] with its `name@version` and manifest settings).
//! [`modules::Modules`] is the set of modules with their routes, the one
//! thing the pipeline asks; a record no module takes gets the built-in
//! default, and a record its module fails on gets
//! [`modules::fallback`].

pub mod budget;
pub mod cmd;
pub mod config;
pub mod http;
pub mod kafka;
pub mod learner;
pub mod metrics;
pub mod modules;

pub mod pipeline;
pub mod runtime;
pub mod sagas;
pub mod shutdown;
pub mod status;
pub mod storage;

pub use notification_parse::{record, samples};
