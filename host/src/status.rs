//! What `/ready` reports: whether the database answers and whether the
//! consumer holds its assignment. Written by the pipeline and the Kafka
//! callbacks, read by the HTTP server.

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
    /// An API-only replica (`ROLE=api`): no consumer, so no assignment to wait for.
    without_consumer: AtomicBool,
    /// Why writes are failing while the database answers, when they are: the
    /// database refuses even a last-resort row. Ingestion waits, so `/ready`
    /// must say it.
    write_blocked: Mutex<Option<String>>,
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

    /// Marks an API-only replica, whose readiness is the database alone.
    pub fn set_without_consumer(&self) {
        self.without_consumer.store(true, Ordering::Relaxed);
    }

    /// Sets or clears why writes are failing although the database answers.
    pub fn set_write_blocked(&self, reason: Option<String>) {
        if let Ok(mut slot) = self.write_blocked.lock() {
            *slot = reason;
        }
    }

    pub fn assigned_partitions(&self) -> usize {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = Vec::new();
        if !self.db_up() {
            reasons.push("the database does not answer".into());
        }
        if let Some(why) = self.write_blocked.lock().ok().and_then(|w| w.clone()) {
            reasons.push(format!("writes are failing and ingestion waits: {why}"));
        }
        if self.without_consumer.load(Ordering::Relaxed) {
            // No consumer: nothing to subscribe to or be assigned.
        } else if !self.subscription_known.load(Ordering::Relaxed) {
            reasons.push("the topic list has not been read from the broker yet".into());
        } else if self.subscribed_topics.load(Ordering::Relaxed) > 0 && !self.assigned.load(Ordering::Relaxed) {
            reasons.push("the consumer holds no assignment (joining the group or rebalancing)".into());
        }
        if reasons.is_empty() { Ok(()) } else { Err(reasons) }
    }
}
