//! One memory budget for everything the host holds on behalf of others:
//! records in flight between Kafka and PostgreSQL, librdkafka's prefetch
//! queue, and the answers it builds for readers. Each bound is derived from
//! the memory the host may use (`MEMORY_LIMIT`, else the container's cgroup
//! limit), so that a pod's limit is a promise the host keeps however large
//! the records and however many the readers: 1 MB records or a hundred
//! concurrent reads of a hot order cannot push it past its limit.
//!
//! Of the limit, [`RESERVED_BYTES`] is left for the process itself (code,
//! compiled modules, buffers of its libraries); of the rest, half is for
//! records in flight, a fifth for librdkafka's prefetch and the remaining
//! three tenths for answers. Records in flight are held in at most
//! `5 + 3 × DATABASE_WRITERS` batch buffers at once (the batch being filled
//! and the next one, the one in the channel, the one being normalized with
//! its rows, and per writer the part queued, the part in hand and its
//! `COPY` encoding), so a batch may carry the ingest share divided by that.
//! Each read connection may build one answer at a time, so an answer may
//! carry the read share divided by `DATABASE_MAX_CONNECTIONS`. A setting
//! given explicitly (`BATCH_MAX_BYTES`, `ANSWER_MAX_BYTES`) wins; with no
//! limit known, the host uses its fixed defaults.

/// Memory kept for the process itself.
pub const RESERVED_BYTES: u64 = 160 << 20;

/// The least a share may be, however small the limit.
const FLOOR_BYTES: u64 = 1 << 20;

/// The defaults when no memory limit is known.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 64 << 20;
pub const DEFAULT_ANSWER_MAX_BYTES: u64 = 16 << 20;
pub const DEFAULT_KAFKA_QUEUE_BYTES: u64 = 32 << 20;

/// The bounds the host runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The limit they were derived from, if any.
    pub limit: Option<u64>,
    /// Most record bytes in one batch.
    pub batch_max_bytes: u64,
    /// What librdkafka may prefetch (`queued.max.messages.kbytes`), bytes.
    pub kafka_queue_bytes: u64,
    /// Most bytes of one API answer (a row more, when one row is larger).
    pub answer_max_bytes: u64,
}

/// What the budget is derived from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs {
    /// `MEMORY_LIMIT`, if set.
    pub memory_limit: Option<u64>,
    /// The cgroup's limit, if any (read by [`cgroup_limit`]).
    pub cgroup_limit: Option<u64>,
    /// `BATCH_MAX_BYTES`, if set.
    pub batch_max_bytes: Option<u64>,
    /// `ANSWER_MAX_BYTES`, if set.
    pub answer_max_bytes: Option<u64>,
    /// `DATABASE_WRITERS`.
    pub writers: u32,
    /// `DATABASE_MAX_CONNECTIONS` (the read connections).
    pub read_connections: u32,
}

impl Budget {
    /// The budget `serve` runs with: its settings, and the cgroup's limit.
    pub fn of(args: &crate::config::ServeArgs) -> Budget {
        Budget::derive(Inputs {
            memory_limit: args.memory_limit,
            cgroup_limit: cgroup_limit(),
            batch_max_bytes: args.pipeline.batch_max_bytes,
            answer_max_bytes: args.http.answer_max_bytes,
            writers: args.pipeline.writers,
            read_connections: args.db.max_connections,
        })
    }

    pub fn derive(i: Inputs) -> Budget {
        let limit = i.memory_limit.or(i.cgroup_limit);
        let (batch, queue, answer) = match limit {
            None => (DEFAULT_BATCH_MAX_BYTES, DEFAULT_KAFKA_QUEUE_BYTES, DEFAULT_ANSWER_MAX_BYTES),
            Some(limit) => {
                let usable = limit.saturating_sub(RESERVED_BYTES).max(4 * FLOOR_BYTES);
                let buffers = 5 + 3 * u64::from(i.writers.max(1));
                (
                    (usable / 2 / buffers).clamp(FLOOR_BYTES, DEFAULT_BATCH_MAX_BYTES),
                    (usable / 5).clamp(FLOOR_BYTES, DEFAULT_KAFKA_QUEUE_BYTES),
                    (usable * 3 / 10 / u64::from(i.read_connections.max(1)))
                        .clamp(FLOOR_BYTES, DEFAULT_ANSWER_MAX_BYTES),
                )
            }
        };
        Budget {
            limit,
            batch_max_bytes: i.batch_max_bytes.unwrap_or(batch),
            kafka_queue_bytes: queue,
            answer_max_bytes: i.answer_max_bytes.unwrap_or(answer),
        }
    }
}

/// The memory limit of the cgroup this process runs in (v2, else v1), or
/// None when there is none (an unlimited cgroup reports a huge number).
pub fn cgroup_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u64>().ok());
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|limit| *limit < (1 << 60))
}

/// Parses a size in bytes: a number, optionally with `Ki`, `Mi`, `Gi` (or
/// `K`, `M`, `G`, powers of 1024 too).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{s:?} is not a size (examples: 536870912, 512Mi, 2Gi)"))?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "Ki" | "KiB" => 10,
        "M" | "Mi" | "MiB" => 20,
        "G" | "Gi" | "GiB" => 30,
        other => return Err(format!("unknown size unit {other:?} (use Ki, Mi or Gi)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_limit_bounds_every_share() {
        let b = Budget::derive(Inputs {
            memory_limit: Some(512 << 20),
            writers: 2,
            read_connections: 10,
            ..Inputs::default()
        });
        let usable = (512 << 20) - RESERVED_BYTES;
        // Eleven batch buffers, the prefetch and ten answers fit the usable memory.
        assert!(11 * b.batch_max_bytes + b.kafka_queue_bytes + 10 * b.answer_max_bytes <= usable, "{b:?}");
        assert!(b.batch_max_bytes >= 8 << 20, "{b:?}");
        let cgroup = Budget::derive(Inputs {
            cgroup_limit: Some(512 << 20),
            writers: 2,
            read_connections: 10,
            ..Inputs::default()
        });
        assert_eq!(cgroup, b, "the cgroup limit stands in for MEMORY_LIMIT");
        let unlimited = Budget::derive(Inputs { writers: 2, read_connections: 10, ..Inputs::default() });
        assert_eq!(unlimited.batch_max_bytes, DEFAULT_BATCH_MAX_BYTES);
        let explicit = Budget::derive(Inputs {
            memory_limit: Some(512 << 20),
            batch_max_bytes: Some(3 << 20),
            answer_max_bytes: Some(5 << 20),
            writers: 2,
            read_connections: 10,
            ..Inputs::default()
        });
        assert_eq!((explicit.batch_max_bytes, explicit.answer_max_bytes), (3 << 20, 5 << 20));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("2Gi"), Ok(2 << 30));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert!(parse_bytes("12 parsecs").is_err());
    }
}
