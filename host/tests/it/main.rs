//! The host's integration tests, one binary: each module is a part of the
//! host tested against real parts (PostgreSQL, compiled components, the
//! router without a socket). See `tests/README.md` for where a new test goes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

mod api;
mod authoring;
mod breaker;
mod console;
mod deploy;
mod docs;
mod golden;
mod hostile_records;
mod house;
mod legacy;
mod renormalize;
mod retention;
mod routing;
mod sagas;
mod sandbox;
mod silent;
mod write_path;
