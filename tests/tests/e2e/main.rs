//! The end-to-end tests, one binary: the real `notification-host` binary
//! against a real broker and PostgreSQL (scripts/test starts throwaway
//! ones), driven through `notification_e2e`'s harness. See
//! `tests/README.md` for where a new test goes.

mod answers;
mod authoring;
mod broker_restart;
mod console;
mod crash;
mod http_wire;
mod ingest;
mod legacy;
mod many_topics;
mod module_store;
mod modules;
mod outage;
mod rebalance;
mod siege;
