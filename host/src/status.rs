//! What `/ready` and `/ready/ingest` report. Serving reads needs only the
//! database; ingesting needs the database to take writes, the consumer to
//! hold its assignment and the pipeline to move. The two are apart so that
//! a broker outage (or a stalled module) never takes the read API's
//! endpoints away: a readiness probe on `/ready` of an `all` or `api`
//! replica asks only what reads need. Written by the pipeline, the Kafka
//! callbacks and the database watcher; read by the HTTP server.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Shared readiness state.
#[derive(Debug, Default)]
pub struct Status {
    db_up: AtomicBool,
    /// The consumer has joined the group and received an assignment (which
    /// may be empty when there are more replicas than partitions).
    assigned: AtomicBool,
    assigned_partitions: AtomicUsize,
    subscribed_topics: AtomicUsize,
    subscription_known: AtomicBool,
    /// An API-only replica (`ROLE=api`): no consumer, nothing to ingest.
    without_consumer: AtomicBool,
    /// Why writes are failing while the database answers, when they are: the
    /// database refuses even a last-resort row. Ingestion waits, so
    /// `/ready/ingest` must say it.
    write_blocked: Mutex<Option<String>>,
    /// Why the pipeline is stalled (nothing written for `PIPELINE_STALL_AFTER`
    /// while batches wait), naming what it is stuck on.
    stalled: Mutex<Option<String>>,
}

impl Status {
    pub fn set_db_up(&self, up: bool) {
        self.db_up.store(up, Ordering::Relaxed);
    }

    pub fn db_up(&self) -> bool {
        self.db_up.load(Ordering::Relaxed)
    }

    pub fn set_assigned(&self, partitions: usize) {
        self.assigned_partitions.store(partitions, Ordering::Relaxed);
        self.assigned.store(true, Ordering::Relaxed);
    }

    pub fn set_revoked(&self) {
        self.assigned_partitions.store(0, Ordering::Relaxed);
        self.assigned.store(false, Ordering::Relaxed);
    }

    pub fn set_subscribed(&self, topics: usize) {
        self.subscribed_topics.store(topics, Ordering::Relaxed);
        self.subscription_known.store(true, Ordering::Relaxed);
    }

    /// Marks an API-only replica, which ingests nothing.
    pub fn set_without_consumer(&self) {
        self.without_consumer.store(true, Ordering::Relaxed);
    }

    /// Whether this replica consumes.
    pub fn consumes(&self) -> bool {
        !self.without_consumer.load(Ordering::Relaxed)
    }

    /// Sets or clears why writes are failing although the database answers.
    pub fn set_write_blocked(&self, reason: Option<String>) {
        if let Ok(mut slot) = self.write_blocked.lock() {
            *slot = reason;
        }
    }

    /// Sets or clears why the pipeline is stalled.
    pub fn set_stalled(&self, reason: Option<String>) {
        if let Ok(mut slot) = self.stalled.lock() {
            *slot = reason;
        }
    }

    pub fn assigned_partitions(&self) -> usize {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// Whether reads can be served: `Ok`, or every reason not.
    pub fn api_readiness(&self) -> Result<(), Vec<String>> {
        if self.db_up() { Ok(()) } else { Err(vec!["the database does not answer".into()]) }
    }

    /// Whether records are being ingested: `Ok`, or every reason not.
    pub fn ingest_readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = Vec::new();
        if !self.consumes() {
            return Err(vec!["this replica does not consume (ROLE=api)".into()]);
        }
        if !self.db_up() {
            reasons.push("the database does not answer".into());
        }
        if let Some(why) = self.write_blocked.lock().ok().and_then(|w| w.clone()) {
            reasons.push(format!("writes are failing and ingestion waits: {why}"));
        }
        if let Some(why) = self.stalled.lock().ok().and_then(|w| w.clone()) {
            reasons.push(format!("the pipeline is stalled: {why}"));
        }
        if !self.subscription_known.load(Ordering::Relaxed) {
            reasons.push("the topic list has not been read from the broker yet".into());
        } else if self.subscribed_topics.load(Ordering::Relaxed) > 0 && !self.assigned.load(Ordering::Relaxed) {
            reasons.push(
                "the consumer holds no assignment (joining the group, rebalancing, or the broker is unreachable)"
                    .into(),
            );
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_need_the_database_and_nothing_of_the_ingest_side() {
        let s = Status::default();
        s.set_db_up(true);
        s.set_subscribed(3);
        s.set_revoked();
        s.set_stalled(Some("module x has been running for 40 s".into()));
        assert_eq!(s.api_readiness(), Ok(()), "a broker outage or a stall leaves reads ready");
        let reasons = s.ingest_readiness().unwrap_err();
        assert!(reasons.iter().any(|r| r.contains("stalled: module x")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("no assignment")), "{reasons:?}");
        s.set_db_up(false);
        assert!(s.api_readiness().is_err());
        let api = Status::default();
        api.set_without_consumer();
        api.set_db_up(true);
        assert_eq!(api.api_readiness(), Ok(()));
        assert!(api.ingest_readiness().is_err());
    }
}
