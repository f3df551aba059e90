//! Kafka, through rdkafka: the consumer group, the subscription to every
//! wanted topic, and offsets. Nothing here knows about WASM or SQL.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`) and only
//! for records whose rows have committed; librdkafka's auto-commit then sends
//! the stored offsets to the group coordinator in the background and on every
//! partition revocation.
//!
//! Topics are discovered by listing the cluster's topics every
//! `topic_refresh_interval` and subscribing to the exact list of wanted ones
//! (internal `__` topics and the exclude pattern filtered out). Filtering
//! here rather than through a librdkafka regex subscription lets the exclude
//! pattern use the full Rust regex syntax, and bounds the discovery delay by
//! our own interval.

mod group_offsets;

pub use group_offsets::{Committed, GroupPosition, SeedError, Seeded, Skipped, commit_positions, group_offsets};

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::statistics::Statistics;

use crate::config::KafkaConfig;
use crate::metrics::{Metrics, PartitionLabels};
use crate::record::{Header, Record};
use crate::status::Status;

/// The consumer, shared by the poll loop and the writer (which stores offsets).
pub type HostConsumer = StreamConsumer<HostContext>;

/// Callbacks from librdkafka: rebalances, logs and client errors.
pub struct HostContext {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    /// Whether consumption is paused (the writers are stalled): partitions
    /// assigned meanwhile are paused as they arrive, so that a rebalance
    /// during an outage cannot let records pile up in memory.
    paused: std::sync::atomic::AtomicBool,
    /// The last error reported and when, so that an outage that librdkafka
    /// reports many times a second is logged once per interval.
    last_error: Mutex<Option<(String, Instant)>>,
}

/// How long an identical client error stays quiet after it was logged.
const REPEAT_QUIET: Duration = Duration::from_secs(30);

impl ClientContext for HostContext {
    /// librdkafka's periodic statistics carry each assigned partition's lag.
    fn stats(&self, statistics: Statistics) {
        self.metrics.consumer_lag.clear();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.desired && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabels { topic: topic.clone(), partition: *partition })
                        .set(p.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            // Connection failures arrive here and again through `error` below,
            // which rate-limits them; keep this copy out of the default log.
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning if matches!(fac, "FAIL" | "ERROR") => {
                tracing::debug!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility = fac, "{log_message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let message = format!("{error}: {reason}");
        let Ok(mut last) = self.last_error.lock() else { return };
        let repeated = last.as_ref().is_some_and(|(m, at)| *m == message && at.elapsed() < REPEAT_QUIET);
        if !repeated {
            tracing::warn!(%error, reason, "Kafka client error.");
            *last = Some((message, Instant::now()));
        }
    }
}

impl ConsumerContext for HostContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "Partitions assigned.");
                self.status.set_assigned(tpl.count());
                if self.paused.load(std::sync::atomic::Ordering::Acquire) {
                    // The whole assignment: librdkafka resumes a partition
                    // that was reassigned.
                    match consumer.assignment().and_then(|all| consumer.pause(&all)) {
                        Ok(()) => tracing::info!("Paused the new assignment: writes are still stalled."),
                        Err(error) => tracing::warn!(%error, "Could not pause the new assignment."),
                    }
                }
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "Partitions revoked.");
                self.status.set_revoked();
            }
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance failed."),
        }
    }
}

/// Creates the consumer and joins no topic yet (see [`refresh_subscription`]).
pub fn create_consumer(
    config: &KafkaConfig,
    queue_bytes: u64,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<HostConsumer> {
    // librdkafka's prefetch stays within the memory budget: what it queues,
    // and what one fetch may bring.
    let queue_kbytes = (queue_bytes / 1024).max(1024).to_string();
    let fetch_bytes = queue_bytes.clamp(1 << 20, 50 << 20).to_string();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", "notification-host")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Bounds what librdkafka prefetches while the writer is behind.
        .set("queued.max.messages.kbytes", &queue_kbytes)
        .set("fetch.max.bytes", &fetch_bytes)
        // A fetch returns after at most this long even when little arrived:
        // the bound on how long a quiet topic's record waits in the broker.
        // Brokers that do not answer a fetch as soon as data arrives (tansu
        // holds every fetch this long) hold every record up to twice this;
        // 10 ms halved the p99 from acknowledgement to queryable at 5,000
        // records/s against 25 ms (docs/src/benchmarks/ingest.md). On
        // Apache Kafka it only sets how often an idle consumer asks.
        .set("fetch.wait.max.ms", "10")
        .set("statistics.interval.ms", "10000");
    for (key, value) in &config.options {
        client.set(key, value);
    }
    client
        .create_with_context(HostContext {
            status,
            metrics,
            paused: std::sync::atomic::AtomicBool::new(false),
            last_error: Mutex::new(None),
        })
        .context("failed to create the Kafka consumer (check KAFKA_BOOTSTRAP_SERVERS and KAFKA_OPTIONS)")
}

/// Asks the broker for its topics with the consumer's settings (`check`):
/// how many there are and how many the host would consume. Blocking.
pub fn probe(config: &KafkaConfig) -> anyhow::Result<(usize, usize)> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers).set("group.id", &config.group_id);
    for (k, v) in &config.options {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client.create().context("failed to create a Kafka client")?;
    let metadata =
        consumer.fetch_metadata(None, Duration::from_secs(10)).context("failed to list the cluster's topics")?;
    let wanted = metadata.topics().iter().filter(|t| config.wants_topic(t.name())).count();
    Ok((metadata.topics().len(), wanted))
}

/// Lists the cluster's topics and subscribes to the wanted ones when that set
/// changed. Blocking (a metadata request): call it off the async workers.
/// Returns the wanted topics.
pub fn refresh_subscription(
    consumer: &HostConsumer,
    config: &KafkaConfig,
    current: &BTreeSet<String>,
) -> anyhow::Result<BTreeSet<String>> {
    let metadata =
        consumer.fetch_metadata(None, Duration::from_secs(10)).context("failed to list the cluster's topics")?;
    let wanted: BTreeSet<String> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| t.name().to_owned())
        .filter(|name| config.wants_topic(name))
        .collect();
    if &wanted != current {
        if wanted.is_empty() {
            consumer.unsubscribe();
        } else {
            let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
            consumer.subscribe(&names).context("failed to subscribe")?;
        }
        let added: Vec<&String> = wanted.difference(current).collect();
        let removed: Vec<&String> = current.difference(&wanted).collect();
        tracing::info!(topics = wanted.len(), ?added, ?removed, "Subscription changed.");
    }
    Ok(wanted)
}

/// Copies a consumed message into an owned [`Record`].
pub fn to_record(message: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        headers: headers(message),
        value: message.payload().map(<[u8]>::to_vec),
    }
}

/// The message's headers, in order, every name and value byte kept (through
/// `notification-kafka-raw`: rdkafka's safe API panics on a name that is not
/// UTF-8).
fn headers(message: &BorrowedMessage<'_>) -> Vec<Header> {
    notification_kafka_raw::headers(message).into_iter().map(|(name, value)| Header::from_bytes(name, value)).collect()
}

/// Stores the offsets after the given last stored offsets per partition.
/// Partitions no longer assigned are skipped: their new owner resumes from
/// the committed offset and the unique key drops what it redelivers.
pub fn store_offsets(consumer: &HostConsumer, last: &HashMap<(String, i32), i64>) {
    let mut tpl = TopicPartitionList::with_capacity(last.len());
    for ((topic, partition), offset) in last {
        if let Err(error) = tpl.add_partition_offset(topic, *partition, Offset::Offset(offset + 1)) {
            tracing::warn!(%error, topic, partition, "Could not prepare an offset to store.");
        }
    }
    if let Err(error) = consumer.store_offsets(&tpl) {
        tracing::debug!(%error, "Some offsets were not stored (partitions revoked meanwhile).");
    }
}

/// Pauses (or resumes) every assigned partition. While paused, messages
/// already fetched are discarded by librdkafka and fetched again on resume.
pub fn set_paused(consumer: &HostConsumer, paused: bool) {
    consumer.context().paused.store(paused, std::sync::atomic::Ordering::Release);
    let what = if paused { "pause" } else { "resume" };
    let result =
        consumer.assignment().and_then(|tpl| if paused { consumer.pause(&tpl) } else { consumer.resume(&tpl) });
    if let Err(error) = result {
        tracing::warn!(%error, "Could not {what} consumption.");
    }
}

/// Gives a record back while consumption is paused: its partition is
/// paused and will be read again from this record on resume (librdkafka
/// drops what it fetched for a paused partition).
pub fn give_back(consumer: &HostConsumer, message: &BorrowedMessage<'_>) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(message.topic(), message.partition());
    if let Err(error) = consumer.pause(&tpl) {
        tracing::warn!(%error, "Could not pause a partition.");
    }
    if let Err(error) =
        consumer.seek(message.topic(), message.partition(), Offset::Offset(message.offset()), Duration::from_secs(1))
    {
        tracing::warn!(%error, topic = message.topic(), partition = message.partition(), "Could not rewind a partition.");
    }
}

/// Commits the stored offsets synchronously (on shutdown). Blocking.
pub fn commit(consumer: &HostConsumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("Offsets committed."),
        Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => {
            tracing::warn!(%error, "Final offset commit failed; uncommitted records will be redelivered and skipped.")
        }
    }
}

/// What `capture` reads: up to `count` records of `topic` (with `key`, if
/// given) that were in the topic when it started.
pub struct CaptureRequest<'a> {
    pub topic: &'a str,
    pub count: usize,
    pub key: Option<&'a [u8]>,
    /// From each partition's first record, rather than its last `count`.
    pub from_beginning: bool,
    pub timeout: Duration,
}

/// Reads records for `capture` without joining any group (partitions are
/// assigned by hand and no offset is committed), so it never disturbs the
/// host's consumer group. Blocking: call it off the async workers.
pub fn capture(config: &KafkaConfig, request: &CaptureRequest<'_>) -> anyhow::Result<Vec<Record>> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", "notification-host-capture")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in &config.options {
        client.set(k, v);
    }
    let consumer: BaseConsumer = client.create().context("failed to create a Kafka client")?;
    let metadata = consumer
        .fetch_metadata(Some(request.topic), Duration::from_secs(10))
        .context("failed to read the topic's metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == request.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "the broker has no topic {:?}", request.topic);

    let filtered = request.key.is_some();
    let mut assignment = TopicPartitionList::new();
    // Per partition: the offset it has to reach (its end when we started).
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(request.topic, p, Duration::from_secs(10))
            .with_context(|| format!("failed to read the offsets of {}[{p}]", request.topic))?;
        if high <= low {
            continue;
        }
        let back = i64::try_from(request.count).unwrap_or(i64::MAX);
        let start = if request.from_beginning || filtered { low } else { (high - back).max(low) };
        assignment.add_partition_offset(request.topic, p, Offset::Offset(start))?;
        ends.insert(p, high);
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment).context("failed to assign the topic's partitions")?;
    let deadline = Instant::now() + request.timeout;
    while !ends.is_empty() && records.len() < request.count {
        let left = deadline.saturating_duration_since(Instant::now());
        anyhow::ensure!(
            !left.is_zero(),
            "timed out after {:?} with {} of up to {} records; the broker stopped answering",
            request.timeout,
            records.len(),
            request.count
        );
        let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else { continue };
        let message = message.context("failed to read from the topic")?;
        let partition = message.partition();
        if message.offset() + 1 >= ends.get(&partition).copied().unwrap_or(i64::MIN) {
            ends.remove(&partition);
        }
        if request.key.is_none_or(|k| message.key() == Some(k)) {
            records.push(to_record(&message));
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}
