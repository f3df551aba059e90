//! Starting a consumer group at given positions: at a cut-over, where the
//! original service stopped reading, so that the host neither reads again
//! what the original stored nor skips what it had not read yet.
//!
//! The offsets are committed for the group without joining it (as
//! `kafka-consumer-groups --reset-offsets` does); the broker accepts that
//! only while the group has no members, so a running host is never moved
//! under its feet. A group that already committed offsets has consumed:
//! its positions are its own, and they are replaced only when asked.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// How long one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A partition and the next offset to read in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl std::fmt::Display for GroupPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}", self.topic, self.partition, self.offset)
    }
}

/// A position that was committed, with what the partition held then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub position: GroupPosition,
    /// The partition's first and next offsets when it was committed.
    pub low: i64,
    pub high: i64,
}

impl Committed {
    /// Records the original had not read that the broker no longer holds
    /// (deleted by retention before the switch): the host starts at the
    /// earliest it still has.
    pub fn lost(&self) -> i64 {
        (self.low - self.position.offset).max(0)
    }
}

/// Why a position was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// The broker has no such topic (deleted since, or never created here).
    NoTopic,
    /// The topic has no such partition.
    NoPartition,
    /// The host does not consume the topic (internal, infrastructure,
    /// `TOPIC_INCLUDE` / `TOPIC_EXCLUDE`).
    NotConsumed,
    /// The position lies beyond the partition's end: the topic was emptied
    /// or made again since the original read it. Committed, it would make
    /// the group start over from the earliest offset; decide by hand.
    BeyondEnd { high: i64 },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::NoTopic => write!(f, "the broker has no such topic"),
            Skipped::NoPartition => write!(f, "the topic has no such partition"),
            Skipped::NotConsumed => write!(f, "the host does not consume this topic"),
            Skipped::BeyondEnd { high } => write!(
                f,
                "beyond the partition's end ({high}): was the topic made again? Committed, the group would read \
                 it from the start; set this one by hand"
            ),
        }
    }
}

/// What committing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeded {
    pub committed: Vec<Committed>,
    pub skipped: Vec<(GroupPosition, Skipped)>,
    /// Offsets the group had committed before, which `force` replaced.
    pub replaced: Vec<GroupPosition>,
}

/// Why nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The group already has committed offsets: it has consumed.
    #[error(
        "the consumer group {group:?} already has committed offsets ({}): it has consumed already, so starting it at \
         the original's positions could read records twice or skip some. Use a group that never consumed \
         (KAFKA_GROUP_ID), or pass --force to replace its offsets",
        list(.existing)
    )]
    AlreadyCommitted { group: String, existing: Vec<GroupPosition> },
    /// The broker refused or did not answer.
    #[error("{0:#}")]
    Kafka(anyhow::Error),
}

fn list(positions: &[GroupPosition]) -> String {
    let shown: Vec<String> = positions.iter().take(5).map(ToString::to_string).collect();
    let more = positions.len().saturating_sub(shown.len());
    if more > 0 { format!("{} and {more} more", shown.join(", ")) } else { shown.join(", ") }
}

/// The group's (`config.group_id`) committed offsets for every partition of
/// the topics the host consumes. Blocking.
pub fn group_offsets(config: &KafkaConfig) -> anyhow::Result<Vec<GroupPosition>> {
    let consumer = client(config)?;
    let metadata = consumer.fetch_metadata(None, TIMEOUT).map_err(anyhow::Error::from)?;
    let mut tpl = TopicPartitionList::new();
    for topic in metadata.topics().iter().filter(|t| t.error().is_none() && config.wants_topic(t.name())) {
        for p in topic.partitions() {
            tpl.add_partition(topic.name(), p.id());
        }
    }
    committed(&consumer, tpl)
}

/// Commits `positions` as the group's offsets. Positions the host could not
/// use are skipped, each with its reason. Refuses when the group already
/// has committed offsets on any topic the host consumes, unless `force`.
/// Blocking: call it off the async workers.
pub fn commit_positions(config: &KafkaConfig, positions: &[GroupPosition], force: bool) -> Result<Seeded, SeedError> {
    let kafka = |e: anyhow::Error| SeedError::Kafka(e);
    let consumer = client(config).map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(None, TIMEOUT)
        .map_err(|e| kafka(anyhow::Error::from(e).context("failed to list the cluster's topics")))?;
    let mut seeded = Seeded::default();
    let mut tpl = TopicPartitionList::new();
    for position in positions {
        let topic = metadata.topics().iter().find(|t| t.name() == position.topic && t.error().is_none());
        let skipped = match topic {
            None => Some(Skipped::NoTopic),
            Some(_) if !config.wants_topic(&position.topic) => Some(Skipped::NotConsumed),
            Some(t) if !t.partitions().iter().any(|p| p.id() == position.partition) => Some(Skipped::NoPartition),
            Some(_) => None,
        };
        if let Some(why) = skipped {
            seeded.skipped.push((position.clone(), why));
            continue;
        }
        let (low, high) = consumer
            .fetch_watermarks(&position.topic, position.partition, TIMEOUT)
            .map_err(|e| kafka(anyhow::Error::from(e).context(format!("failed to read the offsets of {position}"))))?;
        if position.offset > high {
            seeded.skipped.push((position.clone(), Skipped::BeyondEnd { high }));
            continue;
        }
        tpl.add_partition_offset(&position.topic, position.partition, Offset::Offset(position.offset))
            .map_err(|e| kafka(e.into()))?;
        seeded.committed.push(Committed { position: position.clone(), low, high });
    }

    let existing = group_offsets(config).map_err(kafka)?;
    if !existing.is_empty() {
        if !force {
            return Err(SeedError::AlreadyCommitted { group: config.group_id.clone(), existing });
        }
        seeded.replaced = existing;
    }
    if tpl.count() > 0 {
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            kafka(anyhow::Error::from(e).context(format!(
                "the broker refused the offsets of group {:?} (a group with running members, such as a host \
                 consuming, cannot be moved: stop them first)",
                config.group_id
            )))
        })?;
    }
    Ok(seeded)
}

/// A client of the group that never joins it and commits only by hand.
fn client(config: &KafkaConfig) -> anyhow::Result<BaseConsumer> {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", &config.group_id)
        .set("client.id", "notification-host-offsets")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (k, v) in &config.options {
        client.set(k, v);
    }
    use anyhow::Context as _;
    client.create().context("failed to create a Kafka client (check KAFKA_BOOTSTRAP_SERVERS and KAFKA_OPTIONS)")
}

/// The committed offsets among `tpl`'s partitions.
fn committed(consumer: &BaseConsumer, tpl: TopicPartitionList) -> anyhow::Result<Vec<GroupPosition>> {
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    use anyhow::Context as _;
    let answered = consumer.committed_offsets(tpl, TIMEOUT).context("failed to read the group's committed offsets")?;
    let mut found: Vec<GroupPosition> = answered
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => {
                Some(GroupPosition { topic: e.topic().to_owned(), partition: e.partition(), offset })
            }
            _ => None,
        })
        .collect();
    found.sort();
    Ok(found)
}
