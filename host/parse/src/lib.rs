//! The host's domain types and the parsers of what people hand it besides
//! Kafka records: the sample-line format of `notification-host normalize`
//! and the REST API's paths, query strings and bodies.
//!
//! Everything here is pure (no I/O, no async), so that it can be fuzzed on
//! its own: `scripts/fuzz` runs the targets in `host/parse/fuzz`.

pub mod record;
pub mod request;
pub mod samples;
