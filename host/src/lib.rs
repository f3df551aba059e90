//! The notification host: an event log for every Kafka topic.
//!
//! # Layout
//!
//! - [`config`]: the one `Config`, parsed once from flags and environment.
//! - [`record`]: the domain types shared by every part (a Kafka record, the
//!   fields a normalizer found).
//! - [`runtime`]: wasmtime only. Loads normalizer components, runs them in a
//!   sandbox with memory and CPU limits.
//! - [`normalize`]: picks the built-in default or a module for a batch and
//!   turns module failures into stored, explained rows.
//! - [`samples`]: the sample-record format of `notification-host normalize`.
//! - [`cmd`]: the one-shot commands.

pub mod cmd;
pub mod config;
pub mod normalize;
pub mod record;
pub mod runtime;
pub mod samples;
